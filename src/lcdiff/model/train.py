"""The training loop shared by both stages: progress bar, checkpoints, non-finite detection.

A stage is a jitted ``step(state, data, key) -> (state, loss)`` whose state carries its own step
counter and whose randomness is ``fold_in(key, step)``. Restarting from a checkpoint therefore
replays exactly the steps an uninterrupted run would take: a killed and resumed run ends with the
same parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from lcdiff.errors import TrainingDivergedError

StepCallback = Callable[[str, int, float], None]


def all_finite(tree) -> bool:
    """Whether every floating-point leaf of a pytree is finite."""
    for leaf in jax.tree.leaves(tree):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            return False
    return True


def run_stage(
    stage: str,
    step_fn,
    state: dict,
    data,
    key: jax.Array,
    n_steps: int,
    *,
    save_checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 1000,
    progress: bool = True,
    progress_every: int = 50,
    description: str = "",
    callback: StepCallback | None = None,
) -> tuple[dict, list[float]]:
    """Run ``step_fn`` until ``state["step"] == n_steps``.

    Parameters
    ----------
    stage
        Name used in messages (``"A (noise model)"``, ``"B (score model)"``).
    step_fn
        Jitted step; it may donate ``state``.
    state
        Training state with an integer ``"step"`` (0 for a fresh run, or a checkpoint's step).
    data, key
        Passed to every step.
    n_steps
        Total number of steps of the stage.
    save_checkpoint
        Called with the state every ``checkpoint_every`` steps and at the end (only with finite
        parameters).
    progress, progress_every, description
        tqdm bar showing the loss (refreshed every ``progress_every`` steps) and the rate.
    callback
        ``callback(stage, step, loss)`` after every step (used to stop runs in tests).

    Returns
    -------
    The final state and the losses of the steps run (one per step).

    Raises
    ------
    TrainingDivergedError
        When a loss (or the parameters at a checkpoint) is not finite; checkpoints already on
        disk are left untouched.
    """
    start = int(state["step"])
    losses: list[float] = []
    bar = tqdm(
        total=n_steps,
        initial=start,
        desc=description or f"LCD stage {stage}",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        leave=True,
    )
    try:
        for step in range(start + 1, n_steps + 1):
            state, loss = step_fn(state, data, key)
            value = float(loss)
            if not math.isfinite(value):
                raise TrainingDivergedError(_diverged_message(stage, step, value))
            losses.append(value)
            if callback is not None:
                callback(stage, step, value)
            if step % progress_every == 0 or step == n_steps:
                bar.set_postfix(loss=f"{np.mean(losses[-progress_every:]):.4g}", refresh=False)
                bar.update(step - bar.n)
            if save_checkpoint is not None and (step % checkpoint_every == 0 or step == n_steps):
                if not all_finite(state):
                    raise TrainingDivergedError(_diverged_message(stage, step, float("nan")))
                save_checkpoint(state)
    finally:
        bar.close()
    return state, losses


def _diverged_message(stage: str, step: int, value: float) -> str:
    return (
        f"Training diverged in stage {stage} at step {step}: the loss is {value}. The last "
        "good checkpoint (if a checkpoint_dir was given) is kept on disk. Lower the learning "
        "rate (noise_lr / score_lr overrides) or check the input for extreme values."
    )
