"""Standardization of latent states between stage A and stage B (reference §3, "all-std").

The score model works in z = (s − μ_ctrl) / σ_all, where μ_ctrl is the per-gene mean of the
control condition's states and σ_all the per-gene std of all training conditions' states pooled.
The control is thus centred at 0 and perturbation effects are shifts in units of pooled std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SCALE = 1e-6  # a gene that never varies keeps unit scale instead of dividing by ~0


@dataclass(frozen=True)
class Standardizer:
    """Per-gene affine map s = mean + scale · z and its inverse.

    Attributes
    ----------
    mean
        ``[d]`` control mean of the states.
    scale
        ``[d]`` pooled std of the states (genes with std below ``MIN_SCALE`` get 1).
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, states: np.ndarray, control_index: int = 0) -> Standardizer:
        """Fit from states ``[m, n, d]`` (condition axis first; or a list of ``[n_e, d]``)."""
        per_condition = [np.asarray(s, np.float64) for s in states]
        mean = per_condition[control_index].mean(axis=0)
        pooled = np.concatenate(per_condition, axis=0).std(axis=0)
        scale = np.where(pooled > MIN_SCALE, pooled, 1.0)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def transform(self, states: np.ndarray) -> np.ndarray:
        """z = (s − mean) / scale, broadcasting over leading axes."""
        return ((np.asarray(states) - self.mean) / self.scale).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """s = mean + scale · z, broadcasting over leading axes."""
        return (self.mean + self.scale * np.asarray(z)).astype(np.float32)
