"""Annealed Langevin dynamics through the noise levels (reference §7).

For each level i = 0 … n−1 (σ descending), ``steps_per_level`` Euler–Maruyama steps

    z ← z + η_i · s_θ(z, σ_i, i; S) + √(2 η_i) ξ,     η_i = anneal_dt · (σ_i / σ_min)²,

starting from z ~ N(0, I); the samples are the chain endpoints. ``probability_flow=True`` drops
the noise term (a deterministic run, used for fixed points). Conditions are processed in chunks of
fixed size (the last chunk padded), so device memory is bounded by chunk × chains × max(d, H) and
one compiled program serves every chunk. Every condition's chain uses only its own key, so a
condition's samples do not depend on which other conditions are sampled alongside it.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lcdiff.model.score import condition_injections, level_embeddings, score_from_parts
from lcdiff.model.sharding import mesh_size, put_replicated, put_split, to_host

INIT_FOLD = 0x7FFFFFFF  # fold-in value of the initial-state key (levels use 0 … n−1)


def step_sizes(sigmas: np.ndarray, anneal_dt: float) -> np.ndarray:
    """η_i = anneal_dt · (σ_i / σ_min)² for descending ``sigmas``; float32 ``[n_levels]``."""
    sigmas = np.asarray(sigmas, np.float64)
    return (anneal_dt * (sigmas / sigmas.min()) ** 2).astype(np.float32)


@partial(jax.jit, static_argnames=("steps_per_level", "probability_flow"))
def _run_chunk(params, seen, targets, sigmas, etas, z0, keys, steps_per_level, probability_flow):
    """Annealed Langevin for a chunk: targets [c, d], z0 [c, n, d], keys [c] → z [c, n, d]."""
    inject = jax.tree.map(lambda a: a[:, None], condition_injections(params, seen, targets))
    tembs = level_embeddings(params, sigmas.shape[0])

    def level_body(z, level_inputs):
        level, sigma, eta, temb = level_inputs

        def step_body(z, step):
            drift = score_from_parts(params, z, sigma, temb, inject)
            z = z + eta * drift
            if not probability_flow:
                noise = jax.vmap(
                    lambda k: jax.random.normal(
                        jax.random.fold_in(jax.random.fold_in(k, level), step), z.shape[1:]
                    )
                )(keys)
                z = z + jnp.sqrt(2.0 * eta) * noise
            return z, None

        z, _ = jax.lax.scan(step_body, z, jnp.arange(steps_per_level))
        return z, None

    levels = jnp.arange(sigmas.shape[0])
    z, _ = jax.lax.scan(level_body, z0, (levels, sigmas, etas, tembs))
    return z


def _chunk_length(k: int, chunk_size: int) -> int:
    """Conditions per compiled call: balanced chunks, rounded up to a power of two below 4 and to
    a multiple of 4 above, so few distinct shapes are compiled and little padding is wasted."""
    n_chunks = -(-k // chunk_size)
    chunk = -(-k // n_chunks)
    chunk = 1 << (chunk - 1).bit_length() if chunk <= 4 else -(-chunk // 4) * 4
    return min(chunk, max(chunk_size, 1))


def annealed_langevin(
    params: dict,
    seen: np.ndarray,
    targets: np.ndarray,
    sigmas: np.ndarray,
    anneal_dt: float,
    steps_per_level: int,
    keys: jax.Array,
    n_chains: int,
    z0: np.ndarray | None = None,
    probability_flow: bool = False,
    chunk_size: int = 32,
    mesh=None,
) -> np.ndarray:
    """Run annealed Langevin for several conditions.

    Parameters
    ----------
    params
        Score-network parameters.
    seen
        ``[d]`` bool, genes perturbed in training.
    targets
        ``[k, d]`` multi-hot target masks of the conditions to sample.
    sigmas
        ``[n_levels]`` descending noise levels.
    anneal_dt, steps_per_level
        Step-size constant and Euler–Maruyama steps per level.
    keys
        ``[k]`` PRNG keys, one per condition (initial state and noise).
    n_chains
        Chains per condition.
    z0
        Optional ``[k, n_chains, d]`` (or ``[n_chains, d]`` for all) initial states; default
        N(0, I) drawn from each condition's key.
    probability_flow
        Drop the noise term (deterministic dynamics).
    chunk_size
        Conditions per compiled call.
    mesh
        Optional :func:`lcdiff.model.sharding.device_mesh`: each chunk's conditions are split
        over its devices (the chunk is rounded up to a multiple of the device count).

    Returns
    -------
    ``[k, n_chains, d]`` float32 chain endpoints (standardized space).
    """
    targets = np.asarray(targets, np.float32)
    k, d = targets.shape
    if k == 0:
        return np.zeros((0, n_chains, d), np.float32)
    if z0 is None:
        z0 = np.asarray(
            jax.vmap(
                lambda key: jax.random.normal(jax.random.fold_in(key, INIT_FOLD), (n_chains, d))
            )(keys)
        )
    else:
        z0 = np.broadcast_to(np.asarray(z0, np.float32), (k, n_chains, d))
    etas = jnp.asarray(step_sizes(sigmas, anneal_dt))
    sigmas = jnp.asarray(sigmas, jnp.float32)
    seen = jnp.asarray(seen, bool)
    chunk = _chunk_length(k, chunk_size)
    if mesh is None:
        place, fetch = jnp.asarray, np.asarray
    else:  # conditions split over the devices; everything else on every device
        n_dev = mesh_size(mesh)
        chunk = -(-chunk // n_dev) * n_dev
        params, seen, sigmas, etas = put_replicated((params, seen, sigmas, etas), mesh)
        place, fetch = (lambda x: put_split(x, mesh)), to_host
        keys = np.asarray(keys)  # raw uint32 keys [k, 2], split like the other inputs
    out = []
    for start in range(0, k, chunk):
        idx = np.arange(start, start + chunk)
        idx = np.where(idx < k, idx, start)  # pad the last chunk with a repeat of its first
        z = _run_chunk(
            params,
            seen,
            place(targets[idx]),
            sigmas,
            etas,
            place(np.asarray(z0[idx], np.float32)),
            place(keys[idx]),
            steps_per_level=steps_per_level,
            probability_flow=probability_flow,
        )
        out.append(fetch(z)[: min(chunk, k - start)])
    return np.concatenate(out, axis=0)
