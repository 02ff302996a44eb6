"""Stage B objective: σ^λ-weighted denoising score matching (reference §6).

For a batch of standardized states z of ONE condition (targets q), each example draws a level
i ~ U{0..n−1}, noise ε ~ N(0, I) and z̃ = z + σ_i ε; the per-example loss is

    σ_i^λ · (1/d) Σ_g ½ (ŝ_g + ε_g / σ_i)²,     ŝ = s_θ(z̃, σ_i, i; q),

(λ = 2 gives ½ (1/d)‖σŝ + ε‖²), averaged over the batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from lcdiff.model.score import condition_injections, level_embeddings, score_from_parts


def dsm_loss(
    params: dict,
    z: jax.Array,
    targets: jax.Array,
    seen: jax.Array,
    sigmas: jax.Array,
    key: jax.Array,
    loss_weighting: float = 2.0,
) -> jax.Array:
    """DSM loss of a one-condition batch.

    Parameters
    ----------
    params
        Score-network parameters.
    z
        ``[B, d]`` standardized states of one condition.
    targets
        ``[d]`` multi-hot target mask of that condition.
    seen
        ``[d]`` bool, genes perturbed in training.
    sigmas
        ``[n_levels]`` descending noise levels.
    key
        PRNG key for levels and noise.

    Returns
    -------
    Scalar loss.
    """
    k_level, k_noise = jax.random.split(key)
    level = jax.random.randint(k_level, (z.shape[0],), 0, sigmas.shape[0])
    sigma = sigmas[level][:, None]
    eps = jax.random.normal(k_noise, z.shape, z.dtype)
    noisy = z + sigma * eps
    temb = level_embeddings(params, sigmas.shape[0])[level]
    inject = condition_injections(params, seen, targets)
    predicted = score_from_parts(params, noisy, sigma, temb, inject)
    per_example = 0.5 * jnp.mean((predicted + eps / sigma) ** 2, axis=-1)
    return jnp.mean(sigma[:, 0] ** loss_weighting * per_example)


def score_optimizer(config) -> optax.GradientTransformation:
    """AdamW (b1 0.9, b2 0.999) with cosine decay from ``score_lr`` to 0 over ``score_steps``;
    global-norm clipping first when ``score_grad_clip`` > 0 (the paper uses none)."""
    schedule = optax.cosine_decay_schedule(config.score_lr, config.score_steps)
    adamw = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.weight_decay)
    if config.score_grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(config.score_grad_clip), adamw)
    return adamw


@functools.lru_cache(maxsize=8)
def make_score_step(config):
    """A jitted stage-B step ``(state, data, key) -> (state, loss)`` (cached per configuration).

    The optimizer is :func:`score_optimizer` ``(config)``; initialize ``state["opt"]`` with it.

    ``state`` = {"params", "opt", "step"}; ``data`` = (states ``[m, n_max, d]`` standardized and
    zero-padded, sizes ``[m]`` (valid rows per condition), targets ``[m, d]``, seen ``[d]``,
    sigmas). Each step draws one condition uniformly and a batch of its states uniformly with
    replacement, from ``fold_in(key, step)``.
    """
    batch, weighting = config.score_batch_size, config.loss_weighting
    optimizer = score_optimizer(config)

    def step(state, data, key):
        states, sizes, targets, seen, sigmas = data
        t = state["step"] + 1
        k_env, k_pick, k_loss = jax.random.split(jax.random.fold_in(key, t), 3)
        env = jax.random.randint(k_env, (), 0, states.shape[0])
        size = sizes[env]
        pick = jnp.floor(jax.random.uniform(k_pick, (batch,)) * size).astype(jnp.int32)
        pick = jnp.minimum(pick, size - 1)
        z = states[env, pick]
        loss, grads = jax.value_and_grad(dsm_loss)(
            state["params"], z, targets[env], seen, sigmas, k_loss, weighting
        )
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt": opt, "step": t}, loss

    return jax.jit(step, donate_argnums=(0,))
