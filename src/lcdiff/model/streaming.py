"""Stage B without one array of all conditions' states: states are produced per batch.

The reference draws ``n_states`` latent states of every condition after stage A and keeps one
``[conditions, n_states, genes]`` array for the whole of stage B (120 GB of host memory for a
genome-wide screen). Here a training step fetches only the ``score_batch_size`` states it uses:

- ``"cells"`` (``noise_model=None``): the rows of the training screen's ``X`` (already held);
- ``"generators"`` (the ZIP noise model): state j of condition e is the generator of e applied to
  row j of the prior draws that :func:`lcdiff.model.noise.sample_condition_states` would make
  with key ``fold_in(key_states, e)``; the step regenerates just the picked rows, so it sees the
  same states as the materialized array (to float rounding) without storing them.

The standardizer (control mean, pooled std) is fitted in one pass over the conditions, one
condition's states at a time (float64 running moments), so memory stays at one condition.

The step draws its condition, rows, levels and noise from ``fold_in(key, step)`` exactly like
:func:`lcdiff.model.dsm.make_score_step`, and its batch is split over the devices of a
:mod:`lcdiff.model.sharding` mesh (data parallel).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from lcdiff.model.dsm import dsm_loss, score_optimizer
from lcdiff.model.noise import generator_apply, sample_condition_states
from lcdiff.model.sharding import (
    check_batch_divisible,
    put_replicated,
    replicated,
    split_leading,
)
from lcdiff.model.standardize import MIN_SCALE, Standardizer

# Prior draws are made in blocks of this many rows, each from fold_in(condition key, first row):
# the default ``chunk`` of noise.sample_condition_states (a test checks both stay in step).
PRIOR_BLOCK = 4096


class CellStates:
    """States = the given per-condition cell matrices (``noise_model=None``).

    Parameters
    ----------
    cells
        One ``[n_e, d]`` float32 array per condition (control first).
    """

    kind = "cells"

    def __init__(self, cells: list[np.ndarray]):
        self.cells = cells
        self.sizes = np.array([len(x) for x in cells], np.int32)

    def __len__(self) -> int:
        return len(self.cells)

    def condition(self, e: int) -> np.ndarray:
        """``[n_e, d]`` states of condition ``e``."""
        return np.asarray(self.cells[e], np.float32)

    def device_data(self) -> tuple:
        """(cells of all conditions back to back ``[N, d]``, offsets ``[m]``)."""
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int32)
        return (np.concatenate(self.cells).astype(np.float32), offsets)


class GeneratorStates:
    """States regenerated from stage-A generators on demand.

    Parameters
    ----------
    gen
        Stacked generator parameters (leading axis = condition).
    key
        The states key; condition e uses ``fold_in(key, e)``.
    n_states
        States per condition.
    hidden
        Generator input width (prior dimension).
    floor
        Optional ``[d]`` lower bound applied to every state
        (:func:`lcdiff.model.noise.state_floor`): states below it decode to the same counts,
        so clipping them changes no count distribution but keeps them from inflating the pooled
        scale and the DSM gradients.
    """

    kind = "generators"

    def __init__(
        self,
        gen: dict,
        key: jax.Array,
        n_states: int,
        hidden: int,
        floor: np.ndarray | None = None,
    ):
        self.gen = gen
        self.key = key
        self.n_states = int(n_states)
        self.hidden = int(hidden)
        m, d = gen["proj_b"].shape
        self.sizes = np.full(m, self.n_states, np.int32)
        # no floor = -inf, so there is one code path: max(x, -inf) = x exactly
        self.floor = (
            np.full(d, -np.inf, np.float32) if floor is None else np.asarray(floor, np.float32)
        )

    def __len__(self) -> int:
        return len(self.sizes)

    def condition(self, e: int) -> np.ndarray:
        """``[n_states, d]`` states of condition ``e`` (as ``noise.sample_all_states``)."""
        gen_e = jax.tree.map(lambda p: p[e], self.gen)
        states = sample_condition_states(
            gen_e, jax.random.fold_in(self.key, e), self.n_states, self.hidden, PRIOR_BLOCK
        )
        return np.maximum(states, self.floor)

    def device_data(self) -> tuple:
        """(stacked generators, states key, floor)."""
        return (self.gen, np.asarray(self.key), self.floor)


def iter_conditions(source) -> Iterator[np.ndarray]:
    """Each condition's ``[n_e, d]`` states in turn (only one held at a time)."""
    for e in range(len(source)):
        yield source.condition(e)


def fit_standardizer(source, control_index: int = 0, scale: str = "pooled") -> Standardizer:
    """Standardizer from one pass over the conditions (same result as ``Standardizer.fit``).

    The pooled per-gene variance is accumulated with Chan's pairwise update of (count, mean,
    sum of squared deviations) in float64, so no array of all states is formed.

    ``scale="within"`` (an lcdiff option; the paper pools) divides by the median over conditions
    of each gene's within-condition std instead: a few conditions with extreme states, or large
    shifts between conditions, then cannot inflate the unit of a gene far beyond the spread of
    cells inside any condition.
    """
    count, mean, m2 = 0, None, None
    control_mean = None
    within = []
    for e, states in enumerate(iter_conditions(source)):
        x = np.asarray(states, np.float64)
        n_b, mean_b = x.shape[0], x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        within.append(np.sqrt(m2_b / max(n_b, 1)))
        if e == control_index:
            control_mean = mean_b
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    spread = np.sqrt(m2 / count) if scale == "pooled" else np.median(np.stack(within), axis=0)
    unit = np.where(spread > MIN_SCALE, spread, 1.0)
    return Standardizer(control_mean.astype(np.float32), unit.astype(np.float32))


def _generator_rows(
    gen: dict, key: jax.Array, env: jax.Array, pick: jax.Array, n_states: int, hidden: int
) -> jax.Array:
    """States ``pick`` of condition ``env`` regenerated from its generator; ``[B, d]``."""
    key_e = jax.random.fold_in(key, env)
    blocks = [
        jax.random.normal(
            jax.random.fold_in(key_e, start), (min(PRIOR_BLOCK, n_states - start), hidden)
        )
        for start in range(0, n_states, PRIOR_BLOCK)
    ]
    prior = blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks)
    gen_e = jax.tree.map(lambda p: p[env], gen)
    return generator_apply(gen_e, prior[pick])


@functools.lru_cache(maxsize=8)
def make_stream_score_step(config, kind: str, mesh: Mesh):
    """A jitted, data-parallel stage-B step ``(state, data, key) -> (state, loss)``.

    ``data`` = (``source.device_data()`` …, sizes ``[m]``, targets ``[m, d]``, seen ``[d]``,
    sigmas ``[n_levels]``, mean ``[d]``, scale ``[d]``), all replicated over ``mesh``. The batch
    (rows, standardized states, levels, noise) is split over the mesh axis; the parameters and
    optimizer state stay replicated. Same random draws as ``dsm.make_score_step``.
    """
    check_batch_divisible(config.score_batch_size, mesh)
    batch, weighting = config.score_batch_size, config.loss_weighting
    n_states, hidden = config.n_states, config.generator_hidden
    optimizer = score_optimizer(config)
    split = split_leading(mesh)

    def rows(source_data, env, pick):
        if kind == "cells":
            cells, offsets = source_data
            return cells[offsets[env] + pick]
        gen, key_states, floor = source_data
        return jnp.maximum(_generator_rows(gen, key_states, env, pick, n_states, hidden), floor)

    def step(state, data, key):
        *source_data, sizes, targets, seen, sigmas, mean, scale = data
        t = state["step"] + 1
        k_env, k_pick, k_loss = jax.random.split(jax.random.fold_in(key, t), 3)
        env = jax.random.randint(k_env, (), 0, sizes.shape[0])
        size = sizes[env]
        pick = jnp.floor(jax.random.uniform(k_pick, (batch,)) * size).astype(jnp.int32)
        pick = jax.lax.with_sharding_constraint(jnp.minimum(pick, size - 1), split)
        z = jax.lax.with_sharding_constraint((rows(source_data, env, pick) - mean) / scale, split)
        loss, grads = jax.value_and_grad(dsm_loss)(
            state["params"], z, targets[env], seen, sigmas, k_loss, weighting
        )
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt": opt, "step": t}, loss

    return jax.jit(step, donate_argnums=(0,), out_shardings=replicated(mesh))


def stream_data(source, standardizer: Standardizer, targets, seen, sigmas, mesh: Mesh) -> tuple:
    """The ``data`` tuple of :func:`make_stream_score_step`, replicated over ``mesh``."""
    data = (
        *source.device_data(),
        source.sizes,
        np.asarray(targets, np.float32),
        np.asarray(seen, bool),
        np.asarray(sigmas, np.float32),
        standardizer.mean,
        standardizer.scale,
    )
    return put_replicated(data, mesh)
