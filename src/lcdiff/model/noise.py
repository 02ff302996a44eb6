"""Stage A: the measurement-noise model (reference ``lcd-model.md`` §2 and §11).

Counts of a cell in condition e are modelled as zero-inflated Poisson (ZIP) draws around a latent
state s = G_e(ε), ε ~ N(0, I_h), produced by a per-condition residual MLP generator G_e:

    λ_g = u_g · softplus(s_g),     x_g ~ ZIP(λ_g, π_g),     π_g = sigmoid(logit_π_g) (shared).

The loss is the tempered Monte-Carlo log-marginal likelihood: with ℓ_ik = log p(x_i | s^(k))
over M prior samples s^(k),

    L_T = −mean_i T·(logsumexp_k(ℓ_ik / T) − log M),     loss = mean over the temperatures T.

The [B, M] matrix ℓ is computed as one [B, 3d]·[3d, M] matrix product (§11): with z = 1[x = 0],

    ℓ_ik = Σ_g x_ig log λ_kg − (1 − z_ig) λ_kg + z_ig log(π_g + (1 − π_g) e^{−λ_kg})
           + Σ_g (1 − z_ig)(log(1 − π_g) − lgamma(x_ig + 1)),

so no B×M×d tensor is ever formed. :func:`zip_log_likelihood_direct` keeps the elementwise form
for tests and the benchmark.

Opt-in departure from the paper (``noise_model="zinb"``, preset ``"fast-zinb"``): the Poisson is
replaced by a negative binomial with mean λ and a learned per-gene dispersion θ shared by all
conditions (variance λ + λ²/θ). The matrix form keeps its shape, with log λ → log λ − log(θ + λ)
and −λ → θ·log(θ/(θ + λ)) and the state-free term gaining lgamma(x + θ) − lgamma(θ). Why: the
generator's states come from an h-dimensional noise (h = ``generator_hidden`` < d on the fast
preset), so independent per-gene overdispersion cannot be carried by the states, and the
Monte-Carlo objective with prior samples favours too-concentrated states; with Poisson counts the
decoded cells are then too narrow (README "Fitting LCD").

Optimisation (our choice, exact): each step touches one condition's generator. Instead of an
Adam pass over every condition's parameters (the reference stacks them and updates all), we keep
the stacked second moments and the step at which each condition was last visited, and apply the
missed decay b2^Δ on the next visit. With b1 = 0 (the reference's setting) the first moment is the
current gradient, so unvisited parameters receive exactly zero update and this "lazy" Adam equals
the dense one (tested against optax).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import gammaln

LOG_EPS = 1e-20  # added to λ before the log, as in the reference
ADAM_EPS = 1e-8


# --------------------------------------------------------------------------------------------
# unit scaling
# --------------------------------------------------------------------------------------------
def unit_scaling(control_counts: np.ndarray, min_scale: float = 1.0) -> np.ndarray:
    """Per-gene rate unit from control counts: the ZIP method-of-moments rate, floored.

    With per-gene mean m and sample variance v (ddof = 1), λ̂ = (v + m²)/m − 1 (0 where m ≈ 0),
    and u = max(λ̂, ``min_scale``).

    Parameters
    ----------
    control_counts
        ``[n_cells, d]`` raw counts of the control condition (n_cells >= 2).
    min_scale
        Floor of the scale (1.0 in the reference).

    Returns
    -------
    ``[d]`` float32 unit scales.
    """
    x = np.asarray(control_counts, dtype=np.float64)
    mean = x.mean(axis=0)
    var = x.var(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros_like(mean)
    safe_mean = np.where(mean > 1e-12, mean, 1.0)
    rate = np.where(mean > 1e-12, (var + mean**2) / safe_mean - 1.0, 0.0)
    return np.maximum(rate, min_scale).astype(np.float32)


# --------------------------------------------------------------------------------------------
# ZIP log-likelihood
# --------------------------------------------------------------------------------------------
def state_floor(unit_scale: np.ndarray, min_rate: float) -> np.ndarray:
    """Per-gene state below which the rate u·softplus(s) is under ``min_rate``; ``[d]``.

    s_floor = softplus⁻¹(min_rate / u) = log(expm1(min_rate / u)). Clipping states at the floor
    changes every rate, and so every expected count, by less than ``min_rate``.
    """
    u = np.asarray(unit_scale, np.float64)
    return np.log(np.expm1(min_rate / u)).astype(np.float32)


def rates(states: jax.Array, unit_scale: jax.Array, min_rate: float | None = None) -> jax.Array:
    """Poisson rates λ = u · softplus(s), same shape as ``states`` ([..., d]).

    ``min_rate`` (the ``state_floor`` option; ``None`` in the paper): λ = max(λ, λ_min). Below
    λ_min the likelihood then has no slope, so training gives a generator no reason to push a
    state ever lower. Without it the slope towards −∞ for genes with no counts is tiny but
    always of one sign, which Adam turns into full-size steps: generators drift to states of
    −hundreds, far below anything decoding can tell apart.
    """
    lam = unit_scale * jax.nn.softplus(states)
    return lam if min_rate is None else jnp.maximum(lam, min_rate)


def _count_terms(lam: jax.Array, log_theta: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The two state-dependent terms of log p(x > 0 | λ) = x·a + b + (state-free part).

    Poisson (``log_theta`` None): a = log λ, b = −λ. Negative binomial with dispersion
    θ = exp(``log_theta``) (mean λ, variance λ + λ²/θ): a = log λ − log(θ + λ),
    b = θ·log(θ / (θ + λ)) = log P_NB(0 | λ).
    """
    if log_theta is None:
        return jnp.log(lam + LOG_EPS), -lam
    theta = jnp.exp(log_theta)
    # log1p keeps b accurate when θ ≫ λ (θ·(log θ − log(θ + λ)) would cancel in float32)
    log1p_ratio = jnp.log1p(lam / theta)
    return jnp.log(lam + LOG_EPS) - log_theta - log1p_ratio, -theta * log1p_ratio


def _log_zero_prob(
    lam: jax.Array, logit_pi: jax.Array, log_theta: jax.Array | None = None
) -> jax.Array:
    """log P(x = 0) = log(π + (1 − π) P_count(0 | λ)), computed stably from the logit of π.

    P_count(0 | λ) is e^{−λ} (Poisson) or (θ / (θ + λ))^θ (negative binomial, ``log_theta``).
    """
    log_p0 = _count_terms(lam, log_theta)[1]
    return jnp.logaddexp(jax.nn.log_sigmoid(logit_pi), jax.nn.log_sigmoid(-logit_pi) + log_p0)


def _count_const(counts: jax.Array, log_theta: jax.Array | None) -> jax.Array:
    """State-free part of log p(x > 0 | λ) without the zero-inflation: −lgamma(x + 1) (+ NB)."""
    const = -gammaln(counts + 1.0)
    if log_theta is not None:
        theta = jnp.exp(log_theta)
        const = const + gammaln(counts + theta) - gammaln(theta)
    return const


def zip_log_likelihood_direct(
    counts: jax.Array,
    states: jax.Array,
    unit_scale: jax.Array,
    logit_pi: jax.Array,
    log_theta: jax.Array | None = None,
    min_rate: float | None = None,
) -> jax.Array:
    """ZIP log-likelihood of every cell under every state, elementwise (B×M×d memory).

    Parameters
    ----------
    counts
        ``[B, d]`` observed counts.
    states
        ``[M, d]`` latent states.
    unit_scale, logit_pi
        ``[d]`` each.
    log_theta
        ``[d]`` log NB dispersion for the opt-in zero-inflated negative binomial
        (``noise_model="zinb"``); ``None`` (default, the paper's model) = Poisson.
    min_rate
        Optional floor on the rates (:func:`rates`).

    Returns
    -------
    ``[B, M]`` summed over genes.
    """
    x = counts[:, None, :]
    lam = rates(states, unit_scale, min_rate)[None, :, :]
    a, b = _count_terms(lam, log_theta)
    log_pos = jax.nn.log_sigmoid(-logit_pi) + x * a + b + _count_const(x, log_theta)
    per_gene = jnp.where(x == 0, _log_zero_prob(lam, logit_pi, log_theta), log_pos)
    return per_gene.sum(axis=-1)


def cell_features(
    counts: jax.Array, logit_pi: jax.Array, log_theta: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Cell side of the matrix form: ``[B, 3d]`` features and the ``[B]`` state-free term."""
    is_zero = (counts == 0).astype(counts.dtype)
    features = jnp.concatenate([counts, 1.0 - is_zero, is_zero], axis=-1)
    per_gene = jax.nn.log_sigmoid(-logit_pi) + _count_const(counts, log_theta)
    const = ((1.0 - is_zero) * per_gene).sum(-1)
    return features, const


def state_features(
    states: jax.Array,
    unit_scale: jax.Array,
    logit_pi: jax.Array,
    log_theta: jax.Array | None = None,
    min_rate: float | None = None,
) -> jax.Array:
    """State side of the matrix form: ``[M, 3d]`` = [a(λ), b(λ), log P(0 | λ)].

    Poisson: a = log λ, b = −λ; negative binomial: see :func:`_count_terms`.
    """
    lam = rates(states, unit_scale, min_rate)
    a, b = _count_terms(lam, log_theta)
    return jnp.concatenate([a, b, _log_zero_prob(lam, logit_pi, log_theta)], axis=-1)


def zip_log_likelihood_matrix(
    counts: jax.Array,
    states: jax.Array,
    unit_scale: jax.Array,
    logit_pi: jax.Array,
    log_theta: jax.Array | None = None,
    min_rate: float | None = None,
) -> jax.Array:
    """ZIP log-likelihood ``[B, M]`` as one [B, 3d]·[3d, M] product (no B×M×d tensor).

    Same arguments and result as :func:`zip_log_likelihood_direct`.
    """
    cell_feat, const = cell_features(counts, logit_pi, log_theta)
    features = state_features(states, unit_scale, logit_pi, log_theta, min_rate)
    return cell_feat @ features.T + const[:, None]


def tempered_loss(loglik: jax.Array, temperatures: tuple[float, ...]) -> jax.Array:
    """Mean over temperatures T of −mean_i T·(logsumexp_k(ℓ_ik/T) − log M); ``loglik`` [B, M]."""
    log_m = jnp.log(loglik.shape[1])
    terms = [-jnp.mean(t * (jax.nn.logsumexp(loglik / t, axis=1) - log_m)) for t in temperatures]
    return sum(terms) / len(terms)


# --------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------
def _dense(key, n_in, n_out, stack=()):
    init = jax.nn.initializers.lecun_normal()
    keys = jax.random.split(key, int(np.prod(stack)) if stack else 1)
    w = jnp.stack([init(k, (n_in, n_out), jnp.float32) for k in keys])
    w = w.reshape(*stack, n_in, n_out) if stack else w[0]
    return w, jnp.zeros((*stack, n_out), jnp.float32)


def init_generator(
    key: jax.Array, d: int, hidden: int, layers: int, wide_layers: int, wide_hidden: int
) -> dict:
    """Parameters of one residual MLP generator (LeCun-normal kernels, zero biases).

    Architecture (§2.3): Dense(h) → ``layers`` × [s + Dense(h)(silu(Dense(h)(s)))] → Dense(d)
    → ``wide_layers`` × [s + Dense(d)(silu(Dense(wide_hidden)(s)))].
    """
    k = jax.random.split(key, 6)
    params = {}
    params["inp_w"], params["inp_b"] = _dense(k[0], hidden, hidden)
    params["res_w1"], params["res_b1"] = _dense(k[1], hidden, hidden, (layers,))
    params["res_w2"], params["res_b2"] = _dense(k[2], hidden, hidden, (layers,))
    params["proj_w"], params["proj_b"] = _dense(k[3], hidden, d)
    if wide_layers:
        params["wide_w1"], params["wide_b1"] = _dense(k[4], d, wide_hidden, (wide_layers,))
        params["wide_w2"], params["wide_b2"] = _dense(k[5], wide_hidden, d, (wide_layers,))
    else:
        params["wide_w1"] = jnp.zeros((0, d, wide_hidden), jnp.float32)
        params["wide_b1"] = jnp.zeros((0, wide_hidden), jnp.float32)
        params["wide_w2"] = jnp.zeros((0, wide_hidden, d), jnp.float32)
        params["wide_b2"] = jnp.zeros((0, d), jnp.float32)
    return params


def generator_apply(params: dict, noise: jax.Array) -> jax.Array:
    """Latent states ``[M, d]`` from standard-normal ``noise`` ``[M, hidden]``."""
    s = noise @ params["inp_w"] + params["inp_b"]
    for i in range(params["res_w1"].shape[0]):
        inner = jax.nn.silu(s @ params["res_w1"][i] + params["res_b1"][i])
        s = s + inner @ params["res_w2"][i] + params["res_b2"][i]
    s = s @ params["proj_w"] + params["proj_b"]
    for i in range(params["wide_w1"].shape[0]):
        inner = jax.nn.silu(s @ params["wide_w1"][i] + params["wide_b1"][i])
        s = s + inner @ params["wide_w2"][i] + params["wide_b2"][i]
    return s


#: Generators initialized per compiled call by :func:`_stacked_generators`.
INIT_BLOCK = 256


@functools.partial(jax.jit, static_argnums=(3,), donate_argnums=(0,))
def _init_block(stacked: dict, keys: jax.Array, start: jax.Array, dims: tuple) -> dict:
    """``stacked`` with the generators of ``keys`` written at rows ``start:start + len(keys)``."""
    block = jax.vmap(lambda k: init_generator(k, *dims))(keys)
    return jax.tree.map(
        lambda full, part: jax.lax.dynamic_update_slice_in_dim(full, part, start, 0),
        stacked,
        block,
    )


def _stacked_generators(keys: jax.Array, dims: tuple) -> dict:
    """Generators of every key stacked on a leading axis (``init_generator(key, *dims)`` each).

    The stacked arrays are allocated once and filled ``INIT_BLOCK`` conditions per (donated,
    in-place) call, so the temporaries of the random initialization are those of one block:
    one ``jax.vmap`` over all keys held about 1.5 extra copies of all generators at its peak,
    and a Python loop + stack about 0.3 MB per condition (benchmarks/memory_conditions.py).
    Each generator depends only on its key, so the parameters are the same bit for bit (tested).
    """
    m = keys.shape[0]
    one = jax.eval_shape(lambda k: init_generator(k, *dims), keys[0])
    stacked = jax.tree.map(lambda s: jnp.zeros((m, *s.shape), s.dtype), one)
    for start in range(0, m, INIT_BLOCK):
        stacked = _init_block(stacked, keys[start : start + INIT_BLOCK], start, dims)
    return stacked


#: Initial NB dispersion θ of the opt-in ``noise_model="zinb"`` (variance λ + λ²/θ).
INITIAL_DISPERSION = 10.0


def init_noise_state(key: jax.Array, n_conditions: int, d: int, config) -> dict:
    """Training state of stage A: stacked generators, shared logit π and lazy-Adam moments.

    With ``config.noise_model == "zinb"`` the state also holds the shared per-gene log NB
    dispersion ``log_theta`` (initialized at log :data:`INITIAL_DISPERSION`) and its moment.
    """
    k_gen, k_pi = jax.random.split(key)
    keys = jax.random.split(k_gen, n_conditions)
    dims = (
        d,
        config.generator_hidden,
        config.generator_layers,
        config.generator_wide_layers,
        config.generator_wide_hidden,
    )
    stacked = _stacked_generators(keys, dims)
    state = {
        "gen": stacked,
        "logit_pi": jax.random.normal(k_pi, (d,), jnp.float32),
        "nu_gen": jax.tree.map(jnp.zeros_like, stacked),
        "nu_pi": jnp.zeros((d,), jnp.float32),
        "last_visit": jnp.zeros((n_conditions,), jnp.int32),
        "step": jnp.zeros((), jnp.int32),
    }
    if getattr(config, "noise_model", "zip") == "zinb":
        state["log_theta"] = jnp.full((d,), np.log(INITIAL_DISPERSION), jnp.float32)
        state["nu_theta"] = jnp.zeros((d,), jnp.float32)
    return state


def noise_lr_schedule(config) -> optax.Schedule:
    """Linear warm-up 0 → ``noise_lr`` over ``noise_warmup`` steps, cosine to 0 at the end."""
    steps = config.noise_steps
    warmup = min(config.noise_warmup, max(steps - 1, 0))
    if warmup == 0:
        return optax.cosine_decay_schedule(config.noise_lr, max(steps, 1))
    return optax.warmup_cosine_decay_schedule(0.0, config.noise_lr, warmup, steps, 0.0)


LIKELIHOODS = {"matrix": zip_log_likelihood_matrix, "direct": zip_log_likelihood_direct}


@functools.lru_cache(maxsize=8)
def make_noise_step(config, likelihood: str = "matrix", mesh=None):
    """A jitted stage-A step ``(state, data, key) -> (state, loss)`` (cached per configuration).

    ``likelihood`` picks the ZIP log-likelihood: ``"matrix"`` (the [B, 3d]·[3d, M] form, always
    used for training) or ``"direct"`` (the B×M×d form, kept for the benchmark).

    ``mesh`` (optional, :func:`lcdiff.model.sharding.device_mesh`): the M prior samples are split
    over the mesh axis, so each device runs the generator on M/n samples and computes its
    [B, M/n] block of log-likelihoods; XLA reduces the logsumexp over M and the gradients across
    the devices. State and data stay replicated (``mc_samples`` must be a multiple of the device
    count). The draws come from the same keys, so the result equals the one-device step up to
    the order of floating-point sums.

    ``data`` = (cells ``[N, d]`` counts of all conditions back to back, ``offsets`` ``[m]``,
    ``sizes`` ``[m]``, ``unit_scale`` ``[d]``). The step draws a condition uniformly, a batch of
    its cells uniformly with replacement, and M prior samples, all from ``fold_in(key, step)``,
    so a resumed run replays exactly the same batches.
    """
    schedule = noise_lr_schedule(config)
    loglik_fn = LIKELIHOODS[likelihood]
    temperatures = config.lse_temperatures
    b2 = config.noise_b2
    batch, n_mc, hidden, clip = (
        config.noise_batch_size,
        config.mc_samples,
        config.generator_hidden,
        config.noise_grad_clip,
    )

    negative_binomial = getattr(config, "noise_model", "zip") == "zinb"
    min_rate = getattr(config, "state_floor", None)
    if mesh is not None:
        from lcdiff.model.sharding import check_divisible, replicated, split_leading

        check_divisible(n_mc, mesh, "mc_samples")
        split_mc, out_shardings = split_leading(mesh), replicated(mesh)
    else:
        split_mc, out_shardings = None, None

    def loss_fn(gen, shared, x, noise, unit_scale):
        states = generator_apply(gen, noise)
        loglik = loglik_fn(
            x, states, unit_scale, shared["logit_pi"], shared.get("log_theta"), min_rate
        )
        return tempered_loss(loglik, temperatures)

    def step(state, data, key):
        cells, offsets, sizes, unit_scale = data
        t = state["step"] + 1
        k_env, k_cells, k_mc = jax.random.split(jax.random.fold_in(key, t), 3)
        env = jax.random.randint(k_env, (), 0, offsets.shape[0])
        size = sizes[env]
        pick = jnp.floor(jax.random.uniform(k_cells, (batch,)) * size).astype(jnp.int32)
        x = cells[offsets[env] + jnp.minimum(pick, size - 1)]
        noise = jax.random.normal(k_mc, (n_mc, hidden), jnp.float32)
        if split_mc is not None:
            noise = jax.lax.with_sharding_constraint(noise, split_mc)
        gen = jax.tree.map(lambda p: p[env], state["gen"])
        shared = {"logit_pi": state["logit_pi"]}
        if negative_binomial:
            shared["log_theta"] = state["log_theta"]
        loss, (g_gen, g_shared) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
            gen, shared, x, noise, unit_scale
        )
        if clip > 0:
            norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves((g_gen, g_shared))))
            factor = jnp.where(norm < clip, 1.0, clip / norm)
            g_gen, g_shared = jax.tree.map(lambda g: g * factor, (g_gen, g_shared))
        lr = schedule(t - 1)
        tf = t.astype(jnp.float32)
        correction = 1.0 - b2**tf
        decay = b2 ** (t - state["last_visit"][env]).astype(jnp.float32)

        def moment(nu_old, g, decay):
            return decay * nu_old + (1.0 - b2) * g * g

        def apply(p, nu, g):
            return p - lr * g / (jnp.sqrt(nu / correction) + ADAM_EPS)

        def adam(p, nu_old, g, decay):
            nu = moment(nu_old, g, decay)
            return apply(p, nu, g), nu

        # The drawn condition's moments are written into the stacked (donated) array first and
        # its parameter update reads them back from the written array. Computing the update from
        # the old stacked moments instead makes XLA copy all conditions' moments every step (the
        # in-place write cannot be ordered after that read): a temporary as large as the stacked
        # moments (benchmarks/memory_conditions.py). The values are the same.
        nu_gen = jax.tree.map(
            lambda full, g: full.at[env].set(moment(full[env], g, decay)), state["nu_gen"], g_gen
        )
        new_gen = jax.tree.map(lambda p, full, g: apply(p, full[env], g), gen, nu_gen, g_gen)
        logit_pi, nu_pi = adam(state["logit_pi"], state["nu_pi"], g_shared["logit_pi"], b2)
        new_state = {
            "gen": jax.tree.map(lambda full, part: full.at[env].set(part), state["gen"], new_gen),
            "logit_pi": logit_pi,
            "nu_gen": nu_gen,
            "nu_pi": nu_pi,
            "last_visit": state["last_visit"].at[env].set(t),
            "step": t,
        }
        if negative_binomial:
            new_state["log_theta"], new_state["nu_theta"] = adam(
                state["log_theta"], state["nu_theta"], g_shared["log_theta"], b2
            )
        return new_state, loss

    if out_shardings is None:
        return jax.jit(step, donate_argnums=(0,))
    return jax.jit(step, donate_argnums=(0,), out_shardings=out_shardings)


# --------------------------------------------------------------------------------------------
# sampling, decoding, likelihood
# --------------------------------------------------------------------------------------------
@jax.jit
def _sample_chunk(gen: dict, noise: jax.Array) -> jax.Array:
    return generator_apply(gen, noise)


def sample_condition_states(
    gen: dict, key: jax.Array, n: int, hidden: int, chunk: int = 4096
) -> np.ndarray:
    """``[n, d]`` latent states of one condition's generator (parameters without stack axis)."""
    out = []
    for start in range(0, n, chunk):
        k = jax.random.fold_in(key, start)
        size = min(chunk, n - start)
        out.append(np.asarray(_sample_chunk(gen, jax.random.normal(k, (size, hidden)))))
    return np.concatenate(out, axis=0)


def sample_all_states(stacked_gen: dict, key: jax.Array, n: int, hidden: int) -> np.ndarray:
    """``[m, n, d]`` latent states of every condition; condition e uses ``fold_in(key, e)``."""
    m = jax.tree.leaves(stacked_gen)[0].shape[0]
    return np.stack(
        [
            sample_condition_states(
                jax.tree.map(lambda p, e=e: p[e], stacked_gen),
                jax.random.fold_in(key, e),
                n,
                hidden,
            )
            for e in range(m)
        ]
    )


def decode(
    states: np.ndarray,
    unit_scale: np.ndarray,
    logit_pi: np.ndarray,
    rng: np.random.Generator,
    log_theta: np.ndarray | None = None,
) -> np.ndarray:
    """Counts from latent states: x ~ Poisson(u·softplus(s)), then zeroed with probability π.

    With ``log_theta`` (opt-in ``noise_model="zinb"``) the Poisson rate is first drawn from
    Gamma(θ, λ/θ), so x is negative binomial with mean λ and variance λ + λ²/θ.

    Parameters
    ----------
    states
        ``[..., d]`` latent states (unstandardized). Non-finite states give NaN counts.
    unit_scale, logit_pi
        ``[d]`` each.
    rng
        numpy random generator.
    log_theta
        ``[d]`` log NB dispersion, or ``None`` (Poisson, the paper's model).

    Returns
    -------
    ``[..., d]`` float32 counts.
    """
    s = np.asarray(states, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        lam = np.asarray(unit_scale, np.float64) * np.logaddexp(0.0, s)
    finite = np.isfinite(lam)
    lam = np.where(finite, lam, 0.0)
    if log_theta is not None:
        theta = np.broadcast_to(np.exp(np.asarray(log_theta, np.float64)), lam.shape)
        lam = rng.gamma(theta, lam / theta)
    counts = rng.poisson(lam).astype(np.float32)
    pi = 1.0 / (1.0 + np.exp(-np.asarray(logit_pi, np.float64)))
    dropped = rng.random(counts.shape) < pi
    counts[dropped] = 0.0
    counts[~finite] = np.nan
    return counts


@jax.jit
def _mc_log_marginal(gen, logit_pi, unit_scale, x, noise, log_theta=None):
    states = generator_apply(gen, noise)
    loglik = zip_log_likelihood_matrix(x, states, unit_scale, logit_pi, log_theta)
    return jax.nn.logsumexp(loglik, axis=1) - jnp.log(noise.shape[0])


def mc_log_marginal(
    gen: dict,
    logit_pi,
    unit_scale,
    counts: np.ndarray,
    key: jax.Array,
    n_samples: int,
    hidden: int,
    chunk: int = 256,
    log_theta=None,
) -> np.ndarray:
    """Per-cell Monte-Carlo log p(x) = logmeanexp_k ℓ(x | s^(k)) under one generator; ``[n]``.

    ``log_theta``: log NB dispersion of a ``noise_model="zinb"`` model (``None`` = Poisson).
    """
    counts = np.asarray(counts, np.float32)
    noise = jax.random.normal(key, (n_samples, hidden), jnp.float32)
    out = [
        np.asarray(
            _mc_log_marginal(gen, logit_pi, unit_scale, counts[i : i + chunk], noise, log_theta)
        )
        for i in range(0, counts.shape[0], chunk)
    ]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
