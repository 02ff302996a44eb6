"""Stage A: ZIP likelihood (matrix = direct = scipy), unit scaling, lazy Adam, decoding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from lcdiff.model.config import make_config
from lcdiff.model.noise import (
    decode,
    generator_apply,
    init_generator,
    init_noise_state,
    make_noise_step,
    noise_lr_schedule,
    tempered_loss,
    unit_scaling,
    zip_log_likelihood_direct,
    zip_log_likelihood_matrix,
)


def _zip_scipy(x, states, unit_scale, logit_pi):
    """Reference ZIP log-likelihood [B, M] in float64 with scipy's Poisson."""
    lam = unit_scale * np.logaddexp(0.0, states.astype(np.float64))  # [M, d]
    pi = 1.0 / (1.0 + np.exp(-logit_pi.astype(np.float64)))
    out = np.zeros((x.shape[0], states.shape[0]))
    for i in range(x.shape[0]):
        pmf = stats.poisson.pmf(x[i][None, :], lam)  # [M, d]
        p = np.where(x[i][None, :] == 0, pi + (1 - pi) * pmf, (1 - pi) * pmf)
        out[i] = np.log(p).sum(axis=1)
    return out


@pytest.fixture
def zip_inputs():
    rng = np.random.default_rng(0)
    d, b, m = 7, 5, 6
    x = rng.poisson(2.0, size=(b, d)).astype(np.float32)
    x[0, :3] = 0.0
    x[1, 3] = 25.0
    states = rng.normal(0.0, 1.5, size=(m, d)).astype(np.float32)
    unit_scale = rng.uniform(1.0, 4.0, size=d).astype(np.float32)
    logit_pi = rng.normal(0.0, 1.0, size=d).astype(np.float32)
    return x, states, unit_scale, logit_pi


def test_zip_matrix_equals_direct_equals_scipy(zip_inputs):
    x, states, unit_scale, logit_pi = zip_inputs
    ref = _zip_scipy(x, states, unit_scale, logit_pi)
    direct = np.asarray(zip_log_likelihood_direct(x, states, unit_scale, logit_pi))
    matrix = np.asarray(zip_log_likelihood_matrix(x, states, unit_scale, logit_pi))
    assert matrix.shape == (x.shape[0], states.shape[0])
    np.testing.assert_allclose(direct, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(matrix, ref, rtol=1e-5, atol=1e-4)


def test_zip_matrix_gradients_equal_direct(zip_inputs):
    x, states, unit_scale, logit_pi = zip_inputs

    def total(fn, s, lp):
        return fn(x, s, unit_scale, lp).sum()

    g_direct = jax.grad(lambda s, lp: total(zip_log_likelihood_direct, s, lp), (0, 1))(
        states, logit_pi
    )
    g_matrix = jax.grad(lambda s, lp: total(zip_log_likelihood_matrix, s, lp), (0, 1))(
        states, logit_pi
    )
    for a, b in zip(g_direct, g_matrix, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_unit_scaling_closed_form():
    counts = np.array([[0, 1, 0], [2, 1, 0], [4, 1, 0], [10, 1, 0]], dtype=np.float32)
    u = unit_scaling(counts)
    m, v = 4.0, np.var([0, 2, 4, 10], ddof=1)
    # gene 0: (v + m^2)/m - 1; gene 1: constant 1 → (0 + 1)/1 - 1 = 0 → floored at 1; gene 2: m = 0
    np.testing.assert_allclose(u, [(v + m**2) / m - 1.0, 1.0, 1.0], rtol=1e-6)
    assert unit_scaling(counts, min_scale=5.0)[1] == 5.0


def test_tempered_loss_limits():
    rng = np.random.default_rng(1)
    ll = jnp.asarray(rng.normal(-10, 3, size=(4, 50)), jnp.float32)
    t1 = float(tempered_loss(ll, (1.0,)))
    expected = -np.mean(jax.nn.logsumexp(ll, axis=1) - np.log(50))
    np.testing.assert_allclose(t1, expected, rtol=1e-6)
    # very large T → minus the prior average of ℓ; the loss averages the listed temperatures
    t_big = float(tempered_loss(ll, (1e3,)))
    np.testing.assert_allclose(t_big, -float(ll.mean()), rtol=2e-3)
    both = float(tempered_loss(ll, (1.0, 1e3)))
    np.testing.assert_allclose(both, 0.5 * (t1 + t_big), rtol=1e-5)


def test_generator_shapes_and_residual_structure():
    params = init_generator(
        jax.random.PRNGKey(0), d=11, hidden=6, layers=2, wide_layers=1, wide_hidden=5
    )
    out = generator_apply(params, jnp.ones((3, 6)))
    assert out.shape == (3, 11)
    # zeroing the residual branches leaves the plain projection
    zeroed = {
        k: (jnp.zeros_like(v) if k.startswith(("res_w2", "wide_w2")) else v)
        for k, v in params.items()
    }
    plain = (jnp.ones((3, 6)) @ params["inp_w"]) @ params["proj_w"]
    np.testing.assert_allclose(
        np.asarray(generator_apply(zeroed, jnp.ones((3, 6)))),
        np.asarray(plain),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(("wide_layers", "block"), [(0, None), (1, None), (1, 3)])
def test_stacked_generator_init_is_bit_identical_to_per_condition_init(
    wide_layers, block, monkeypatch
):
    """The blocked stacked init equals initializing each condition's generator with its key."""
    if block is not None:  # several in-place blocks, the last one partial (7 = 3 + 3 + 1)
        import lcdiff.model.noise as noise_module

        monkeypatch.setattr(noise_module, "INIT_BLOCK", block)
    config = make_config("tiny", generator_wide_layers=wide_layers, generator_wide_hidden=7)
    m, d = 7, 9
    key = jax.random.PRNGKey(5)
    stacked = init_noise_state(key, m, d, config)["gen"]
    # the same key derivation as init_noise_state: first split → generators, second → logit π
    per_condition_keys = jax.random.split(jax.random.split(key)[0], m)
    for e, k in enumerate(per_condition_keys):
        one = init_generator(
            k,
            d,
            config.generator_hidden,
            config.generator_layers,
            config.generator_wide_layers,
            config.generator_wide_hidden,
        )
        assert set(one) == set(stacked)
        for name, value in one.items():
            got = np.asarray(stacked[name][e])
            assert got.shape == value.shape and got.dtype == value.dtype, name
            np.testing.assert_array_equal(got, np.asarray(value), err_msg=name)
    # different conditions get different draws (the keys really are per condition)
    assert not np.array_equal(np.asarray(stacked["inp_w"][0]), np.asarray(stacked["inp_w"][1]))


def test_lazy_adam_equals_dense_optax_adam():
    """Touching one condition per step with b2^Δ catch-up equals a full optax Adam pass."""
    config = make_config(
        "tiny",
        noise_steps=12,
        noise_warmup=3,
        mc_samples=16,
        noise_batch_size=4,
        noise_grad_clip=0.05,
    )
    m, d = 3, 5
    rng = np.random.default_rng(0)
    sizes = np.array([6, 4, 5], np.int32)
    cells = rng.poisson(2.0, size=(sizes.sum(), d)).astype(np.float32)
    offsets = np.array([0, 6, 10], np.int32)
    unit_scale = np.ones(d, np.float32) * 2.0
    data = (jnp.asarray(cells), jnp.asarray(offsets), jnp.asarray(sizes), jnp.asarray(unit_scale))
    key = jax.random.PRNGKey(3)
    state = init_noise_state(jax.random.PRNGKey(1), m, d, config)
    params = {"gen": state["gen"], "logit_pi": state["logit_pi"]}
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.noise_grad_clip),
        optax.adam(noise_lr_schedule(config), b1=0.0, b2=config.noise_b2, eps=1e-8),
    )
    opt_state = optimizer.init(params)
    step = make_noise_step(config)

    def loss(p, env, x, noise):
        gen = jax.tree.map(lambda a: a[env], p["gen"])
        ll = zip_log_likelihood_matrix(x, generator_apply(gen, noise), unit_scale, p["logit_pi"])
        return tempered_loss(ll, config.lse_temperatures)

    @jax.jit
    def dense_step(params, opt_state, env, x, noise):
        grads = jax.grad(loss)(params, env, x, noise)  # zero for every other condition
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    envs = []
    for t in range(1, config.noise_steps + 1):
        # replay the lazy step's random choices to build the dense reference step
        k_env, k_cells, k_mc = jax.random.split(jax.random.fold_in(key, t), 3)
        env = int(jax.random.randint(k_env, (), 0, m))
        envs.append(env)
        pick = np.floor(np.asarray(jax.random.uniform(k_cells, (4,))) * sizes[env]).astype(int)
        x = cells[offsets[env] + np.minimum(pick, sizes[env] - 1)]
        noise = jax.random.normal(k_mc, (16, config.generator_hidden), jnp.float32)
        params, opt_state = dense_step(params, opt_state, env, x, noise)
        state, _ = step(state, data, key)
    assert len(set(envs)) == m  # every condition visited, some revisited after gaps
    for a, b in zip(jax.tree.leaves(params["gen"]), jax.tree.leaves(state["gen"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(
        np.asarray(params["logit_pi"]), np.asarray(state["logit_pi"]), rtol=2e-4, atol=2e-6
    )


def test_noise_step_updates_stacked_state_in_place():
    """The compiled stage-A step needs no temporary of the size of all conditions' state.

    It donates the stacked generators and moments and updates one condition's row in place; an
    update that read the old stacked moments made XLA copy all of them every step (issue 8).
    """
    config = make_config("tiny")
    m, d = 512, 16
    state = init_noise_state(jax.random.PRNGKey(0), m, d, config)
    data = (
        jnp.ones((2 * m, d)),
        jnp.arange(0, 2 * m, 2, dtype=jnp.int32),
        jnp.full((m,), 2, jnp.int32),
        jnp.ones((d,)),
    )
    stacked_bytes = sum(x.nbytes for x in jax.tree.leaves((state["gen"], state["nu_gen"])))
    analysis = make_noise_step(config).lower(state, data, jax.random.PRNGKey(1)).compile()
    analysis = analysis.memory_analysis()
    # the stacked arrays are aliased to the outputs (donated) and never copied
    assert analysis.alias_size_in_bytes >= stacked_bytes
    assert analysis.temp_size_in_bytes < stacked_bytes / 20, analysis.temp_size_in_bytes


def test_decode_moments_zero_inflation_and_nan():
    rng = np.random.default_rng(0)
    states = np.full((20000, 3), 2.0, np.float32)
    unit_scale = np.array([1.0, 3.0, 3.0], np.float32)
    logit_pi = np.array([-30.0, -30.0, np.log(0.5 / 0.5)], np.float32)  # π ≈ 0, 0, 0.5
    counts = decode(states, unit_scale, logit_pi, rng)
    lam = np.log1p(np.exp(2.0)) * unit_scale
    np.testing.assert_allclose(counts.mean(0), [lam[0], lam[1], 0.5 * lam[2]], rtol=0.03)
    np.testing.assert_allclose((counts[:, 2] == 0).mean(), 0.5 + 0.5 * np.exp(-lam[2]), atol=0.02)
    bad = decode(np.array([[np.nan, 0.0]]), np.ones(2), np.zeros(2), rng)
    assert np.isnan(bad[0, 0]) and np.isfinite(bad[0, 1])


# --------------------------------------------------------------------------------------------
# opt-in zero-inflated negative binomial (noise_model="zinb")
# --------------------------------------------------------------------------------------------
def _zinb_scipy(x, states, unit_scale, logit_pi, log_theta):
    """Reference ZINB log-likelihood [B, M] in float64 with scipy's nbinom (mean λ, size θ)."""
    lam = unit_scale * np.logaddexp(0.0, states.astype(np.float64))  # [M, d]
    pi = 1.0 / (1.0 + np.exp(-logit_pi.astype(np.float64)))
    theta = np.exp(log_theta.astype(np.float64))
    out = np.zeros((x.shape[0], states.shape[0]))
    for i in range(x.shape[0]):
        pmf = stats.nbinom.pmf(x[i][None, :], theta, theta / (theta + lam))  # [M, d]
        p = np.where(x[i][None, :] == 0, pi + (1 - pi) * pmf, (1 - pi) * pmf)
        out[i] = np.log(p).sum(axis=1)
    return out


def test_zinb_matrix_equals_direct_equals_scipy(zip_inputs):
    x, states, unit_scale, logit_pi = zip_inputs
    log_theta = np.linspace(-1.0, 3.0, x.shape[1]).astype(np.float32)  # θ from 0.37 to 20
    ref = _zinb_scipy(x, states, unit_scale, logit_pi, log_theta)
    direct = np.asarray(zip_log_likelihood_direct(x, states, unit_scale, logit_pi, log_theta))
    matrix = np.asarray(zip_log_likelihood_matrix(x, states, unit_scale, logit_pi, log_theta))
    np.testing.assert_allclose(direct, ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(matrix, ref, rtol=1e-5, atol=1e-3)

    # gradients of the matrix form w.r.t. the dispersion equal the direct form's
    def total(fn, lt):
        return fn(x, jnp.asarray(states), unit_scale, logit_pi, lt).sum()

    g_direct = jax.grad(lambda lt: total(zip_log_likelihood_direct, lt))(jnp.asarray(log_theta))
    g_matrix = jax.grad(lambda lt: total(zip_log_likelihood_matrix, lt))(jnp.asarray(log_theta))
    np.testing.assert_allclose(np.asarray(g_matrix), np.asarray(g_direct), rtol=1e-3, atol=1e-3)


def test_zinb_decode_moments():
    rng = np.random.default_rng(1)
    states = np.full((40000, 2), 3.0, np.float32)
    unit_scale = np.array([4.0, 4.0], np.float32)
    logit_pi = np.array([-30.0, -30.0], np.float32)
    log_theta = np.log(np.array([2.0, 50.0], np.float32))
    counts = decode(states, unit_scale, logit_pi, rng, log_theta=log_theta)
    lam = 4.0 * np.log1p(np.exp(3.0))
    np.testing.assert_allclose(counts.mean(0), [lam, lam], rtol=0.03)
    # NB variance λ + λ²/θ (Poisson would give λ)
    np.testing.assert_allclose(counts.var(0), lam + lam**2 / np.array([2.0, 50.0]), rtol=0.06)


def test_zinb_step_learns_dispersion_and_zip_state_unchanged():
    """The zinb state carries a shared dispersion that training moves towards overdispersion;
    the default zip state has no dispersion at all (the paper's model, unchanged)."""
    zip_state = init_noise_state(jax.random.PRNGKey(0), 2, 4, make_config("tiny"))
    assert "log_theta" not in zip_state and "nu_theta" not in zip_state
    config = make_config(
        "tiny",
        noise_model="zinb",
        noise_steps=150,
        noise_warmup=5,
        noise_lr=3e-2,
        generator_hidden=2,
        mc_samples=32,
    )
    rng = np.random.default_rng(0)
    d = 4
    # strongly overdispersed counts (θ = 1) that a 2-dim latent cannot absorb gene by gene
    cells = rng.poisson(rng.gamma(1.0, 20.0, size=(200, d))).astype(np.float32)
    data = (
        jnp.asarray(cells),
        jnp.asarray([0], jnp.int32),
        jnp.asarray([200], jnp.int32),
        jnp.asarray(unit_scaling(cells)),
    )
    state = init_noise_state(jax.random.PRNGKey(1), 1, d, config)
    theta0 = np.exp(np.asarray(state["log_theta"]))
    step = make_noise_step(config)
    for _ in range(config.noise_steps):
        state, loss = step(state, data, jax.random.PRNGKey(2))
    assert np.isfinite(float(loss))
    theta = np.exp(np.asarray(state["log_theta"]))
    assert np.all(theta < 0.5 * theta0), theta  # moved towards the true θ = 1


def test_zinb_is_opt_in_only():
    """The paper presets and ``fast`` keep the paper's ZIP; ``fast-zinb`` differs only there."""
    for preset in ("paper", "paper-norman", "paper-wessels", "paper-replogle", "fast", "tiny"):
        assert make_config(preset).noise_model == "zip"
    fast, zinb = make_config("fast").to_dict(), make_config("fast-zinb").to_dict()
    assert zinb.pop("noise_model") == "zinb" and fast.pop("noise_model") == "zip"
    assert zinb.pop("preset") == "fast-zinb" and fast.pop("preset") == "fast"
    assert fast == zinb
