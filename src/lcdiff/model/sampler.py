"""Annealed Langevin dynamics through the noise levels (reference §7).

For each level i = 0 … n−1 (σ descending), ``steps_per_level`` Euler–Maruyama steps

    z ← z + η_i · s_θ(z, σ_i, i; S) + √(2 η_i) ξ,     η_i = anneal_dt · (σ_i / σ_min)²,

starting from z ~ N(0, I); the samples are the chain endpoints. ``probability_flow=True`` drops
the noise term (a deterministic run, used for fixed points).

Reproducibility. Every random number of a chain is drawn from that chain's own key,
``fold_in(condition key, cell index)`` (:func:`cell_keys`): its initial state from
``fold_in(cell key, INIT_FOLD)``, the noise of step j of level i from
``fold_in(fold_in(cell key, i), j)``. Conditions run through one single-device program that maps
over a chunk's conditions one at a time (``lax.map``), so every condition is computed with the same
array shapes and the same compiled code whatever the chunk size; with several devices, whole
chunks go to different devices (dispatched asynchronously, so they run side by side) instead of
one program split over the devices, whose different compilation would change the rounding.
A sampled cell is therefore a function of (condition key, cell index) only: the same seed gives
bit-identical states on 1 or 4 devices and for any ``chunk_size`` (tested on CPU). Device memory
is bounded by one chunk's chains per device (chunk × chains × max(d, H)); chunks have few distinct
sizes (the last one padded), so few programs are compiled.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lcdiff.model.score import condition_injections, level_embeddings, score_from_parts

INIT_FOLD = 0x7FFFFFFF  # fold-in value of the initial-state key (levels use 0 … n−1)


def step_sizes(sigmas: np.ndarray, anneal_dt: float) -> np.ndarray:
    """η_i = anneal_dt · (σ_i / σ_min)² for descending ``sigmas``; float32 ``[n_levels]``."""
    sigmas = np.asarray(sigmas, np.float64)
    return (anneal_dt * (sigmas / sigmas.min()) ** 2).astype(np.float32)


def cell_keys(keys: jax.Array, n_chains: int) -> jax.Array:
    """Per-chain keys ``fold_in(key, cell)``: ``[k]`` condition keys → ``[k, n_chains]`` keys."""
    cells = jnp.arange(n_chains, dtype=jnp.uint32)
    return jax.vmap(lambda key: jax.vmap(lambda c: jax.random.fold_in(key, c))(cells))(keys)


def initial_states(keys: jax.Array, n_chains: int, d: int) -> np.ndarray:
    """N(0, I) starts of every chain, ``[k, n_chains, d]``; chain c of a condition uses only
    ``fold_in(fold_in(key, c), INIT_FOLD)``."""
    draw = lambda key: jax.random.normal(jax.random.fold_in(key, INIT_FOLD), (d,))  # noqa: E731
    return np.asarray(jax.vmap(jax.vmap(draw))(cell_keys(keys, n_chains)))


def _run_condition(params, seen, sigmas, etas, tembs, target, z0, keys, steps_per_level, flow):
    """Annealed Langevin of one condition: target [d], z0 [n, d], keys [n] (per chain)."""
    inject = condition_injections(params, seen, target)  # [L, H]

    def level_body(z, level_inputs):
        level, sigma, eta, temb = level_inputs

        def step_body(z, step):
            drift = score_from_parts(params, z, sigma, temb, inject)
            z = z + eta * drift
            if not flow:
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


def _map_conditions(params, seen, sigmas, etas, targets, z0, keys, steps_per_level, flow):
    """``lax.map`` of :func:`_run_condition` over conditions: [c, d], [c, n, d], [c, n] keys."""
    tembs = level_embeddings(params, sigmas.shape[0])
    run = partial(_run_condition, params, seen, sigmas, etas, tembs)
    return jax.lax.map(
        lambda args: run(*args, steps_per_level=steps_per_level, flow=flow), (targets, z0, keys)
    )


@partial(jax.jit, static_argnames=("steps_per_level", "probability_flow"))
def _run_chunk(params, seen, targets, sigmas, etas, z0, keys, steps_per_level, probability_flow):
    """Annealed Langevin for a chunk: targets [c, d], z0 [c, n, d], keys [c, n] → z [c, n, d].

    ``lax.map`` runs the chunk's conditions one after the other with the same computation, so
    a condition's result does not depend on the chunk it is in."""
    tembs = level_embeddings(params, sigmas.shape[0])
    run = partial(_run_condition, params, seen, sigmas, etas, tembs)
    return jax.lax.map(
        lambda args: run(*args, steps_per_level=steps_per_level, flow=probability_flow),
        (targets, z0, keys),
    )


def _local_devices(mesh) -> list:
    """The devices predictions run on: the mesh's devices of this process (default: one)."""
    if mesh is None:
        return [jax.devices()[0]]
    local = {d.id for d in jax.local_devices()}
    return [d for d in mesh.devices.flat if d.id in local]


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
        ``[k]`` PRNG keys, one per condition; chain c uses ``fold_in(key, c)`` (initial state
        and noise), so a chain depends only on its condition's key and its index.
    n_chains
        Chains per condition.
    z0
        Optional ``[k, n_chains, d]`` (or ``[n_chains, d]`` for all) initial states; default
        N(0, I) drawn from each chain's key.
    probability_flow
        Drop the noise term (deterministic dynamics).
    chunk_size
        Conditions per compiled call (does not change the result).
    mesh
        Optional :func:`lcdiff.model.sharding.device_mesh`: chunks are spread over its devices
        (those of this process; with several hosts every host samples every condition). The
        result does not depend on the number of devices.

    Returns
    -------
    ``[k, n_chains, d]`` float32 chain endpoints (standardized space).
    """
    targets = np.asarray(targets, np.float32)
    k, d = targets.shape
    if k == 0:
        return np.zeros((0, n_chains, d), np.float32)
    chains = np.asarray(cell_keys(keys, n_chains))  # raw uint32 keys [k, n, 2]
    if z0 is None:
        z0 = initial_states(keys, n_chains, d)
    else:
        z0 = np.broadcast_to(np.asarray(z0, np.float32), (k, n_chains, d))
    etas = step_sizes(sigmas, anneal_dt)
    devices = _local_devices(mesh)
    shared = {
        dev: jax.device_put(
            (params, np.asarray(seen, bool), np.asarray(sigmas, np.float32), etas), dev
        )
        for dev in devices
    }
    chunk = _chunk_length(-(-k // len(devices)), chunk_size)
    starts = list(range(0, k, chunk))
    out = []
    # one wave = one chunk per device, dispatched asynchronously (the devices run side by side),
    # then fetched: device memory holds at most one chunk's chains per device
    for wave in range(0, len(starts), len(devices)):
        pending = []
        for dev, start in zip(devices, starts[wave : wave + len(devices)], strict=False):
            idx = np.arange(start, start + chunk)
            idx = np.where(idx < k, idx, start)  # pad the last chunk with a repeat of its first
            inputs = jax.device_put(
                (targets[idx], np.asarray(z0[idx], np.float32), chains[idx]), dev
            )
            params_d, seen_d, sigmas_d, etas_d = shared[dev]
            z = _run_chunk(
                params_d,
                seen_d,
                inputs[0],
                sigmas_d,
                etas_d,
                inputs[1],
                inputs[2],
                steps_per_level=steps_per_level,
                probability_flow=probability_flow,
            )
            pending.append((z, min(chunk, k - start)))
        out.extend(np.asarray(z)[:n] for z, n in pending)
    return np.concatenate(out, axis=0)
