"""Stage B: the noise-level-conditional score network and the perturbation embedding (§4–5).

For a standardized state z ∈ R^d, noise level index i (0 = largest σ) with value σ_i, and the
embedding e(S) ∈ R^E of the target set S:

    u  = z / √(1 + σ²)
    h0 = W_0 u + b_0 + temb(i) + P_0 e + c_0,       a0 = tanh(h0)
    hl = W_l a_{l−1} + b_l + P_l e + c_l,           al = tanh(hl)      (l = 1 … L−1)
    g  = W_out a_{L−1} + b_out
    D  = u − σ g                                    (Song-style output)
    score = (D − z) / σ²

temb(i) = Dense_H(tanh(Dense_H(τ(i)))) with τ the sinusoidal embedding of the integer index
(max position = number of levels). e(S) = Σ_{j∈S} Emb'_j where Emb' replaces the rows of genes
never perturbed in training by the mean of the trained rows (zeros if none). The perturbation path
(e, P_l e + c_l) and the time path do not depend on z, so they are computed once per condition and
once per level (``condition_injections`` and ``level_embeddings``) and passed to
:func:`score_from_parts`.

Score heads
-----------
``head="paper"`` is the formula above. Its network term σ·g lies in the H-dimensional span of
``W_out``: with fewer hidden units than genes, the score in every other direction is the skip
term (u − z)/σ², the same for every condition (≈ −z/2 at small σ, a N(0, 2) law).

``head="gaussian"`` (an lcdiff option, not in the paper) replaces the fixed skip term by the
exact smoothed score of a per-gene Gaussian whose mean and log-variance are linear in the
perturbation embedding:

    f(S) = Σ_{j∈S} F'_j,    m(S) = f(S) V_m,    log v(S) = ℓ + f(S) V_v,
    score = −(z − m(S)) / (v(S) + σ²) − g / σ,

with its own gene table F ∈ R^{d×E} (N(0, 1) at initialization, unseen genes replaced by the
mean of the seen rows like ``Emb``), ``V_m``, ``V_v`` ∈ R^{E×d} (zero at initialization) and
ℓ ∈ R^d. The head's table is separate from ``Emb`` (N(0, 0.01²)) so that its gradient is of
order one from the first step. The head is full rank in gene space at a cost of O(E·d)
parameters and O(d) work per state, independent of H; the network g (same layers as above)
models what a per-gene Gaussian with additive mean shifts cannot. At initialization the score
is that of N(0, I) smoothed by σ, i.e. the standardized control.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lcdiff.model.config import SCORE_HEADS


def noise_levels(sigma_min: float, sigma_max: float, n_levels: int) -> np.ndarray:
    """σ values in descending order (index 0 = ``sigma_max``); float32 ``[n_levels]``."""
    return np.geomspace(sigma_max, sigma_min, n_levels).astype(np.float32)


def sinusoidal_embedding(index: jax.Array, dim: int, max_positions: int) -> jax.Array:
    """τ(i) = [sin(i·f), cos(i·f)], f_k = exp(−k·ln(max_positions)/(half − 1)); ``[..., dim]``."""
    half = dim // 2
    denom = max(half - 1, 1)
    freqs = jnp.exp(-jnp.arange(half, dtype=jnp.float32) * (jnp.log(max_positions) / denom))
    angles = jnp.asarray(index, jnp.float32)[..., None] * freqs
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros((*emb.shape[:-1], 1), emb.dtype)], axis=-1)
    return emb


def _dense(key, n_in, n_out):
    w = jax.nn.initializers.lecun_normal()(key, (n_in, n_out), jnp.float32)
    return {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}


def init_score_params(
    key: jax.Array, d: int, hidden: int, embed_dim: int, layers: int, head: str = "paper"
) -> dict:
    """Score-network parameters (LeCun-normal kernels, zero biases, embedding table N(0, 0.01²)).

    ``head="gaussian"`` adds the per-gene Gaussian head (module docstring): ``"gauss"`` =
    {``"table"`` [d, E] N(0, 1), ``"mean"`` [E, d], ``"log_var"`` [E, d], ``"log_var0"`` [d],
    the last three zero}.
    """
    keys = jax.random.split(key, 5 + 2 * layers)
    params = {
        "embedding": 0.01 * jax.random.normal(keys[0], (d, embed_dim), jnp.float32),
        "time1": _dense(keys[1], hidden, hidden),
        "time2": _dense(keys[2], hidden, hidden),
        "layers": [_dense(keys[4 + l], d if l == 0 else hidden, hidden) for l in range(layers)],
        "inject": [_dense(keys[4 + layers + l], embed_dim, hidden) for l in range(layers)],
        "out": _dense(keys[3], hidden, d),
    }
    if head == "gaussian":
        params["gauss"] = {
            "table": jax.random.normal(keys[4 + 2 * layers], (d, embed_dim), jnp.float32),
            "mean": jnp.zeros((embed_dim, d), jnp.float32),
            "log_var": jnp.zeros((embed_dim, d), jnp.float32),
            "log_var0": jnp.zeros((d,), jnp.float32),
        }
    elif head != "paper":
        raise ValueError(f"head must be one of {SCORE_HEADS}, got {head!r}")
    return params


def effective_embedding_table(table: jax.Array, seen: jax.Array) -> jax.Array:
    """Embedding rows with never-perturbed genes replaced by the mean of the seen rows.

    Parameters
    ----------
    table
        ``[d, E]`` learned table (one row per gene).
    seen
        ``[d]`` bool, genes perturbed in training (alone or in a combination).
    """
    seen_f = seen.astype(table.dtype)[:, None]
    n_seen = seen_f.sum()
    mean_seen = (table * seen_f).sum(0) / jnp.maximum(n_seen, 1.0)
    return jnp.where(seen[:, None], table, mean_seen[None, :])


def perturbation_embedding(table: jax.Array, seen: jax.Array, targets: jax.Array) -> jax.Array:
    """e(S) = Σ_j q_j Emb'_j for multi-hot target masks ``targets`` ``[..., d]`` → ``[..., E]``."""
    return targets.astype(table.dtype) @ effective_embedding_table(table, seen)


def condition_injections(params: dict, seen: jax.Array, targets: jax.Array) -> dict:
    """Everything the score needs from conditions ``targets`` [..., d], computed once per condition.

    Returns
    -------
    ``{"hidden": [..., L, H]}`` (the per-layer inputs P_l e + c_l), plus, with the Gaussian
    head, ``"mean"`` [..., d] (m(S)) and ``"var"`` [..., d] (v(S)). Add a chains axis with
    ``jax.tree.map(lambda a: a[:, None], inject)``.
    """
    e = perturbation_embedding(params["embedding"], seen, targets)
    out = {"hidden": jnp.stack([e @ p["w"] + p["b"] for p in params["inject"]], axis=-2)}
    if "gauss" in params:
        gauss = params["gauss"]
        f = perturbation_embedding(gauss["table"], seen, targets)
        out["mean"] = f @ gauss["mean"]
        out["var"] = jnp.exp(gauss["log_var0"] + f @ gauss["log_var"])
    return out


def level_embeddings(params: dict, n_levels: int) -> jax.Array:
    """temb(i) for every level index i = 0 … n_levels−1; ``[n_levels, H]``."""
    hidden = params["time1"]["w"].shape[0]
    tau = sinusoidal_embedding(jnp.arange(n_levels), hidden, n_levels)
    h = jnp.tanh(tau @ params["time1"]["w"] + params["time1"]["b"])
    return h @ params["time2"]["w"] + params["time2"]["b"]


def score_from_parts(
    params: dict, z: jax.Array, sigma: jax.Array, temb: jax.Array, inject: dict
) -> jax.Array:
    """Score s_θ(z, σ, i; S) with precomputed level and condition inputs.

    Parameters
    ----------
    z
        ``[..., d]`` standardized states.
    sigma
        σ, broadcastable to ``z[..., :1]`` (a scalar or ``[..., 1]``).
    temb
        temb(i), broadcastable to ``[..., H]``.
    inject
        :func:`condition_injections` of the condition (its arrays broadcastable against
        ``z``'s leading axes).

    Returns
    -------
    ``[..., d]`` score (the drift of the Langevin SDE at that level).
    """
    u = z / jnp.sqrt(1.0 + sigma**2)
    a = u
    for l, layer in enumerate(params["layers"]):
        h = a @ layer["w"] + layer["b"] + inject["hidden"][..., l, :]
        if l == 0:
            h = h + temb
        a = jnp.tanh(h)
    g = a @ params["out"]["w"] + params["out"]["b"]
    if "gauss" in params:
        return -(z - inject["mean"]) / (inject["var"] + sigma**2) - g / sigma
    denoised = u - sigma * g
    return (denoised - z) / sigma**2


def score(
    params: dict, z: jax.Array, level: int, sigmas: jax.Array, seen: jax.Array, targets: jax.Array
) -> jax.Array:
    """Score of one condition (``targets`` [d]) at level index ``level``; ``z`` [..., d]."""
    temb = level_embeddings(params, sigmas.shape[0])[level]
    inject = condition_injections(params, seen, targets)
    return score_from_parts(params, z, sigmas[level], temb, inject)
