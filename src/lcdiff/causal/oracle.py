"""An exactly linear stand-in for a fitted LCD: the oracle of the CLIPR benchmarks and tests.

:class:`LinearSDEOracle` implements the part of the ``lc.LCD`` interface that CLIPR reads
(``genes``, ``control``, ``trained_targets``, ``state_mean``, ``state_scale``, ``drift``,
``fixed_points``, ``sample_states``) for the linear SDE

    ds = (A s + b + c_q) dt + D^{1/2} dW        (state units, D diagonal),

whose stationary law in condition ``q`` is ``N(μ_q, Σ)`` with ``μ_q = −A⁻¹(b + c_q)`` and
``A Σ + Σ Aᵀ + D = 0``. Two read-outs of its "drift":

- ``mode="drift"``: the true drift ``A s + b + c_q`` (CLIPR then recovers ``A`` exactly);
- ``mode="score"``: the exact score ``−Σ⁻¹(s − μ_q)``, i.e. what a perfectly trained LCD
  (a Langevin model) learns; CLIPR then returns ``−Σ⁻¹``.

Values of :meth:`drift` follow LCD's convention: they live in standardized space
``z = (s − state_mean) / state_scale`` and transform like a score, so the state-unit value is
``drift / state_scale``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.linalg

from lcdiff.data.labels import parse_label
from lcdiff.errors import LcdiffError, UnknownPerturbationError


class OracleError(LcdiffError, ValueError):
    """The linear system given to :class:`LinearSDEOracle` is unusable."""


def stationary_covariance(drift: np.ndarray, diffusion: np.ndarray | float) -> np.ndarray:
    """Solve ``A Σ + Σ Aᵀ + D = 0`` for the stationary covariance ``Σ`` [d, d].

    Raises
    ------
    OracleError
        If ``A`` is not stable (an eigenvalue with non-negative real part).
    """
    drift = np.asarray(drift, dtype=np.float64)
    d = drift.shape[0]
    if np.max(np.linalg.eigvals(drift).real) >= 0:
        raise OracleError("The drift matrix is not stable (an eigenvalue has real part >= 0).")
    diff = np.broadcast_to(np.asarray(diffusion, dtype=np.float64), (d,))
    cov = scipy.linalg.solve_continuous_lyapunov(drift, -np.diag(diff))
    return 0.5 * (cov + cov.T)


class LinearSDEOracle:
    """Exactly linear model with the CLIPR-facing interface of ``lc.LCD``.

    Parameters
    ----------
    drift
        ``A`` [d, d] in state units (``A[j, i]`` = effect of gene ``i`` on gene ``j``); stable.
    bias
        ``b`` [d].
    shifts
        Per-gene drift shift of a single perturbation: a mapping gene → shift vector [d] (or a
        scalar, meaning ``u · e_gene``), or a vector ``u`` [d] meaning gene ``j`` shifts its own
        drift by ``u_j``. A combination adds the shifts of its genes.
    genes
        Gene names [d].
    control
        Control label.
    diffusion
        Diagonal of ``D`` [d] or a scalar.
    trained_targets
        Genes that count as perturbed in training (default: every gene with a shift).
    mode
        ``"drift"`` or ``"score"`` (see the module docstring).
    state_mean, state_scale
        Standardization; defaults mimic LCD: the control mean and the per-gene std pooled over
        the control and the trained single-gene conditions.
    exact_moments
        Default of :meth:`sample_states`: samples whose mean and covariance are exact.
    """

    is_fitted = True

    def __init__(
        self,
        drift: np.ndarray,
        bias: np.ndarray,
        shifts: Mapping[str, np.ndarray | float] | np.ndarray,
        genes: Sequence[str],
        control: str = "ctrl",
        diffusion: np.ndarray | float = 1.0,
        trained_targets: Sequence[str] | None = None,
        mode: str = "drift",
        state_mean: np.ndarray | None = None,
        state_scale: np.ndarray | None = None,
        exact_moments: bool = False,
    ) -> None:
        if mode not in ("drift", "score"):
            raise OracleError(f"mode must be 'drift' or 'score'; got {mode!r}.")
        self.a = np.asarray(drift, dtype=np.float64)
        d = self.a.shape[0]
        if self.a.shape != (d, d):
            raise OracleError(f"drift must be square; got {self.a.shape}.")
        self.genes = [str(g) for g in genes]
        if len(self.genes) != d:
            raise OracleError(f"{len(self.genes)} gene names for a {d}-gene drift matrix.")
        self.b = np.broadcast_to(np.asarray(bias, dtype=np.float64), (d,)).copy()
        self.diffusion = np.broadcast_to(np.asarray(diffusion, dtype=np.float64), (d,)).copy()
        self.control = control
        self.mode = mode
        self.exact_moments = exact_moments
        self._position = {g: i for i, g in enumerate(self.genes)}
        self._shift = self._shift_table(shifts)
        self.trained_targets = (
            list(trained_targets) if trained_targets is not None else list(self._shift)
        )
        self.train_labels = [control, *self.trained_targets]
        self.cov = stationary_covariance(self.a, self.diffusion)
        self.precision = np.linalg.inv(self.cov)
        if state_mean is None or state_scale is None:
            means = self.stationary_means(self.train_labels)
            pooled_var = np.diag(self.cov) + means.var(axis=0)
        self.state_mean = means[0] if state_mean is None else np.asarray(state_mean, float)
        self.state_scale = (
            np.sqrt(pooled_var) if state_scale is None else np.asarray(state_scale, float)
        )

    # -- construction -------------------------------------------------------------------------
    def _shift_table(self, shifts) -> dict[str, np.ndarray]:
        d = len(self.genes)
        table: dict[str, np.ndarray] = {}
        if isinstance(shifts, Mapping):
            for gene, value in shifts.items():
                if gene not in self._position:
                    raise OracleError(f"Shift given for unknown gene {gene!r}.")
                value = np.asarray(value, dtype=np.float64)
                if value.ndim == 0:
                    vec = np.zeros(d)
                    vec[self._position[gene]] = float(value)
                    value = vec
                table[str(gene)] = value
        else:
            u = np.asarray(shifts, dtype=np.float64)
            if u.shape != (d,):
                raise OracleError(f"shifts as a vector must have length d = {d}; got {u.shape}.")
            for j, gene in enumerate(self.genes):
                if u[j] != 0:
                    table[gene] = u[j] * np.eye(d)[j]
        return table

    @classmethod
    def from_simulation(cls, adata, mode: str = "drift") -> LinearSDEOracle:
        """Build the oracle of a ``lc.simulate.linear_sde`` AnnData (``uns["simulation"]``)."""
        sim = adata.uns.get("simulation")
        if not isinstance(sim, Mapping) or "drift" not in sim:
            raise OracleError(
                "This AnnData carries no uns['simulation'] with the true drift; make it with "
                "lc.simulate.linear_sde."
            )
        info = adata.uns.get("lcdiff", {})
        control = str(info.get("control", "ctrl"))
        labels = adata.obs["perturbation"].astype(str).unique()
        targets = sorted({g for lab in labels for g in parse_label(lab, control)})
        shifts = sim["shifts"]
        if isinstance(shifts, Mapping) and "u" in shifts:  # {"u": [d], "targets": [...]}
            shifts = np.asarray(shifts["u"], dtype=np.float64)
        elif not isinstance(shifts, Mapping):
            shifts = np.asarray(shifts, dtype=np.float64)
        return cls(
            drift=np.asarray(sim["drift"]),
            bias=np.asarray(sim["bias"]),
            shifts=shifts,
            genes=list(map(str, adata.var_names)),
            control=control,
            diffusion=np.asarray(sim.get("diffusion", 1.0), dtype=np.float64),
            trained_targets=targets,
            mode=mode,
        )

    # -- the LCD interface --------------------------------------------------------------------
    def _label_shift(self, label: str) -> np.ndarray:
        total = np.zeros(len(self.genes))
        for gene in parse_label(label, self.control):
            if gene not in self._position:
                raise UnknownPerturbationError(f"Gene {gene!r} of {label!r} is not modelled.")
            total += self._shift.get(gene, 0.0)
        return total

    def stationary_means(self, labels: Sequence[str]) -> np.ndarray:
        """Exact stationary means ``μ_q = −A⁻¹(b + c_q)`` [k, d] in state units."""
        rhs = np.stack([self.b + self._label_shift(lab) for lab in labels], axis=1)
        return -np.linalg.solve(self.a, rhs).T

    def _state_drift(self, s: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        # s [k, n, d] -> drift [k, n, d] in state units
        if self.mode == "drift":
            offset = np.stack([self.b + self._label_shift(lab) for lab in labels])
            return s @ self.a.T + offset[:, None, :]
        mu = self.stationary_means(labels)
        return -(s - mu[:, None, :]) @ self.precision  # Σ⁻¹ is symmetric

    def drift(self, z: np.ndarray, labels: Sequence[str], level: int = -1) -> np.ndarray:
        """Drift in standardized space, score convention (``state value = value / scale``).

        ``z`` [k, n, d] standardized; returns [k, n, d]. ``level`` is accepted and ignored
        (the oracle has no noise levels).
        """
        z = np.asarray(z, dtype=np.float64)
        s = self.state_mean + self.state_scale * z
        return self.state_scale * self._state_drift(s, list(labels))

    def fixed_points(self, labels: Sequence[str], z0=None) -> np.ndarray:
        """Standardized fixed points ``(μ_q − state_mean) / state_scale`` [k, d]."""
        return (self.stationary_means(list(labels)) - self.state_mean) / self.state_scale

    def sample_states(
        self,
        labels: Sequence[str],
        n_cells: int = 1000,
        seed: int = 0,
        standardized: bool = False,
        exact_moments: bool | None = None,
    ) -> np.ndarray:
        """Stationary samples [k, n, d] (state units unless ``standardized``).

        With ``exact_moments`` every condition's sample mean and covariance (``ddof = 1``)
        equal the population values exactly (needs ``n_cells > d``); ``None`` uses the
        constructor's choice.
        """
        exact_moments = self.exact_moments if exact_moments is None else exact_moments
        labels = list(labels)
        d = len(self.genes)
        rng = np.random.default_rng(seed)
        chol = np.linalg.cholesky(self.cov)
        means = self.stationary_means(labels)
        out = np.empty((len(labels), n_cells, d))
        for i, mu in enumerate(means):
            noise = rng.standard_normal((n_cells, d))
            if exact_moments:
                if n_cells <= d:
                    raise OracleError("exact_moments needs n_cells > d.")
                noise -= noise.mean(axis=0)
                emp = noise.T @ noise / (n_cells - 1)
                noise = noise @ np.linalg.inv(np.linalg.cholesky(emp)).T
            out[i] = mu + noise @ chol.T
        if standardized:
            out = (out - self.state_mean) / self.state_scale
        return out
