"""CLIPR: a gene × gene matrix of direct causal effects read off a fitted model.

Two read-outs share one entry point, :func:`clipr`:

``method="paper"`` (the published estimator, lcd-evaluation §1). Query every trained target as
a single-gene perturbation, plus the control. For each query take the noise-free fixed point
``x*_q`` (deterministic annealed run from the control mean) and the drift ``f_q`` at the origin
of state space, both in state units. If the drift were affine with one shared matrix,
``f_q(s) = A s + b + c_q``, then ``f_q(0) = −A x*_q``; stacking the queries as columns gives
``F0 = −A X``, which is solved for ``A`` by Tikhonov regression
``A = −F0 Xᵀ (X Xᵀ + τ I)⁻¹`` (or a pseudo-inverse / truncated SVD). The reported matrix is
``Aᵀ``: row = source gene, column = target gene.

Where the drift is linearized is the ``reference`` option of the paper method. ``"origin"``
(default) is the published estimator above: the drift at the state origin ``s = 0``. Where
that point lies relative to the data depends on the state coordinates; far outside it, a
learned drift only extrapolates. ``"control"`` evaluates the drift at the control mean ``r``
(``z = 0`` in standardized space, the point the reference code also uses for its
standardized-space output) and centres the fixed points there: under the same affine model
``f_q(r) = A r + b + c_q = −A (x*_q − r)``, so the solve is ``F_r = −A (X − r 1ᵀ)``. On an
exactly affine drift both references return the same ``A``; they differ when the drift is
only locally linear. The control reference does not depend on where the coordinate origin is,
but it is not more accurate in general: at the control mean the drift of an unperturbed gene
is ≈ 0, so with fewer queries than genes its row of ``A`` is left ≈ 0
(benchmarks/results/clipr_reference.md).

``method="moments"``: the directed estimator of :mod:`lcdiff.causal.moments`, fed with the
model's stationary moments (control covariance and the mean of each single-gene query).

Caveat worth knowing. LCD's drift is a score. For Gaussian conditions ``N(μ_q, Σ)`` a perfect
score model hands the paper estimator ``−Σ⁻¹``, a symmetric matrix, not the causal drift; the
moments estimator uses the Lyapunov equation to recover the direction.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lcdiff.errors import LcdiffError, NotFittedError

SOLVERS = ("tikhonov", "pinv", "tsvd")
METHODS = ("paper", "moments")
#: Where the paper method evaluates the drift: the state origin (published) or the control mean.
REFERENCES = ("origin", "control")


#: What an entry of each estimator's effect matrix measures. Stored with every matrix:
#: ``effects.attrs["units"]``, ``screen.uns["clipr"][key]["units"]`` and the metadata file that
#: ``lcdiff clipr`` writes beside its CSV.
EFFECT_UNITS = {
    "paper": (
        "Jacobian of the learned score (d log p / ds) with respect to the latent state s, "
        "s = state_mean + state_scale * z (the noise model's latent state; the training X with "
        "noise_model=None): units of 1 / (latent-state unit)^2, so entries grow as state_scale "
        "shrinks; compare signs and ranks, not magnitudes, with a network in other units"
    ),
    "moments": (
        "drift Jacobian of the latent-state SDE ds = f(s) dt + sqrt(2) * state_scale dW: a rate, "
        "per unit of SDE time (latent-state units cancel)"
    ),
}


class CliprError(LcdiffError, ValueError):
    """CLIPR inputs are inconsistent (shapes, non-finite responses, unknown options)."""


# --------------------------------------------------------------------------------------------
# The linear solve
# --------------------------------------------------------------------------------------------
def clipr_solve(
    f0: np.ndarray,
    fixed_points: np.ndarray,
    tikhonov: float = 1e-2,
    method: str = "tikhonov",
    tsvd: float | None = None,
) -> np.ndarray:
    """Solve ``F0 = −A X`` for the drift matrix ``A``.

    Parameters
    ----------
    f0
        ``F0`` [d, k]: drift at the origin of each single-gene query (columns = queries); for
        another reference point ``r``, pass the drift there and ``X − r 1ᵀ`` as ``fixed_points``.
    fixed_points
        ``X`` [d, k]: fixed point of each query, same column order.
    tikhonov
        Ridge ``τ ≥ 0`` of ``A = −F0 Xᵀ (X Xᵀ + τ I)⁻¹`` (the argmin of
        ``‖A X + F0‖²_F + τ ‖A‖²_F``). ``τ = 0`` falls back to the pseudo-inverse.
    method
        ``"tikhonov"``, ``"pinv"`` (``A = −F0 X⁺``) or ``"tsvd"`` (pseudo-inverse keeping the
        ``⌊d · tsvd⌋`` largest singular values of ``X``).
    tsvd
        Fraction of singular values kept by ``method="tsvd"``, in (0, 1].

    Returns
    -------
    ``A`` [d, d]: ``A[j, i]`` is the effect of gene ``i`` on the drift of gene ``j``; the causal
    matrix (row = source) is ``A.T``.

    Raises
    ------
    CliprError
        For mismatched shapes, an unknown method, a negative ``tikhonov`` or a missing ``tsvd``.

    Warns
    -----
    RuntimeWarning
        When queries with non-finite responses are dropped (a diverged fixed-point run).
    """
    f0 = np.asarray(f0, dtype=np.float64)
    x = np.asarray(fixed_points, dtype=np.float64)
    if f0.ndim != 2 or f0.shape != x.shape:
        raise CliprError(
            f"f0 and fixed_points must both be [d, k] with queries as columns; got {f0.shape} "
            f"and {x.shape}."
        )
    if method not in SOLVERS:
        raise CliprError(f"Unknown CLIPR solver {method!r}; choose one of {SOLVERS}.")
    if not (tikhonov >= 0 and math.isfinite(tikhonov)):
        raise CliprError(f"tikhonov must be a finite number >= 0; got {tikhonov}.")
    finite = np.isfinite(f0).all(axis=0) & np.isfinite(x).all(axis=0)
    if not finite.all():
        warnings.warn(
            f"Dropping {int((~finite).sum())} of {finite.size} CLIPR queries with non-finite "
            "fixed points or drifts (the deterministic run diverged).",
            RuntimeWarning,
            stacklevel=2,
        )
        f0, x = f0[:, finite], x[:, finite]
    d, k = x.shape
    if k == 0:
        raise CliprError("No usable CLIPR query is left (all responses are non-finite).")
    if method == "tikhonov" and tikhonov > 0:
        # Push-through identity Xᵀ(XXᵀ + τI_d)⁻¹ = (XᵀX + τI_k)⁻¹Xᵀ: solve the k × k system.
        gram = x.T @ x + tikhonov * np.eye(k)
        return -f0 @ np.linalg.solve(gram, x.T)
    if method == "tsvd":
        if tsvd is None or not 0 < tsvd <= 1:
            raise CliprError(f"method='tsvd' needs tsvd in (0, 1]; got {tsvd}.")
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        keep = max(1, min(int(math.floor(d * tsvd)), s.size))
        pinv = (vt[:keep].T / s[:keep]) @ u[:, :keep].T
        return -f0 @ pinv
    return -f0 @ np.linalg.pinv(x)


def bias_and_shifts(
    drift: np.ndarray, fixed_point_ctrl: np.ndarray, fixed_points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Intercept ``b = −A x*_0`` and per-query shifts ``c_q = −A (x*_q − x*_0)``.

    Parameters
    ----------
    drift
        ``A`` [d, d].
    fixed_point_ctrl
        ``x*_0`` [d], the control fixed point.
    fixed_points
        ``X`` [d, k], the query fixed points as columns.

    Returns
    -------
    ``b`` [d] and ``C`` [d, k] (columns = queries).
    """
    b = -drift @ fixed_point_ctrl
    c = -drift @ (fixed_points - fixed_point_ctrl[:, None])
    return b, c


def causal_frame(drift: np.ndarray, genes: list[str]) -> pd.DataFrame:
    """The causal matrix ``Aᵀ`` as a DataFrame (index = source gene, columns = target gene)."""
    return pd.DataFrame(np.asarray(drift).T, index=list(genes), columns=list(genes))


# --------------------------------------------------------------------------------------------
# The model wrapper
# --------------------------------------------------------------------------------------------
@dataclass
class CliprResult:
    """Everything CLIPR computed, in state units (queries are columns).

    Attributes
    ----------
    effects
        Causal matrix [genes × genes]; ``effects.loc[i, j]`` = direct effect of gene ``i`` on
        gene ``j`` (= ``drift[j, i]``).
    drift
        ``A`` [d, d].
    queries
        The single-gene query labels (column order of ``f0``, ``fixed_points``, ``shifts``).
    bias
        ``b`` [d] = ``−A x*_ctrl``.
    shifts
        ``C`` [d, k]: ``c_q = −A (x*_q − x*_ctrl)``.
    f0
        ``F0`` [d, k]: drift at the reference point (paper method; ``None`` for moments).
    fixed_points
        ``X`` [d, k]: query fixed points (paper) or stationary means (moments), uncentred.
    fixed_point_ctrl
        [d]: control fixed point (paper) or control mean (moments).
    method, params
        The estimator and the options it ran with (paper: ``params["reference"]``).
    extra
        Method-specific extras (paper: ``reference_point`` [d], the state where the drift was
        read, and ``f0_ctrl``; moments: the covariance used, the fitted ``u``, residual).
    """

    effects: pd.DataFrame
    drift: np.ndarray
    queries: list[str]
    bias: np.ndarray
    shifts: np.ndarray
    f0: np.ndarray | None
    fixed_points: np.ndarray
    fixed_point_ctrl: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def query_labels(model) -> list[str]:
    """Single-gene queries of CLIPR: every trained target that is a modelled gene, by gene order.

    Raises
    ------
    CliprError
        When the model has no trained target among its genes.
    """
    position = {g: i for i, g in enumerate(model.genes)}
    targets = list(dict.fromkeys(model.trained_targets))
    missing = [t for t in targets if t not in position]
    if missing:
        warnings.warn(
            f"{len(missing)} trained targets are not modelled genes and are not queried "
            f"(e.g. {missing[:5]}).",
            RuntimeWarning,
            stacklevel=3,
        )
    queries = sorted((t for t in targets if t in position), key=position.__getitem__)
    if not queries:
        raise CliprError(
            "The model has no trained single-gene target among its genes, so CLIPR has nothing "
            "to query; train on a screen that perturbs some of the modelled genes."
        )
    return queries


def _check_model(model) -> None:
    missing = [
        name
        for name in (
            "genes",
            "control",
            "trained_targets",
            "state_mean",
            "state_scale",
            "drift",
            "fixed_points",
            "sample_states",
        )
        if not hasattr(model, name)
    ]
    if missing:
        raise CliprError(
            f"lc.tl.clipr needs a fitted lc.LCD (or an object with its interface); this "
            f"{type(model).__name__} lacks {missing}."
        )
    if not getattr(model, "is_fitted", True):
        raise NotFittedError("The model is not fitted; call model.fit() before lc.tl.clipr.")


def clipr(
    model,
    method: str = "paper",
    tikhonov: float = 1e-2,
    solver: str = "tikhonov",
    tsvd: float | None = None,
    reference: str = "origin",
    screen=None,
    key_added: str | None = None,
    return_details: bool = False,
    n_cells: int = 2000,
    seed: int = 0,
    diffusion: np.ndarray | float | None = None,
    moments_from: str = "score",
    covariance: str = "control",
    cov_shrinkage: float | str = "ledoit-wolf",
    jacobian_step: float = 0.1,
    moments_solver: str = "cg",
    ridge: float = 0.1,
) -> pd.DataFrame | CliprResult:
    """Causal effects of a fitted model (CLIPR).

    Parameters
    ----------
    model
        A fitted :class:`lcdiff.LCD` (or any object with its interface: ``genes``, ``control``,
        ``trained_targets``, ``state_mean``, ``state_scale``, ``drift``, ``fixed_points``,
        ``sample_states``).
    method
        ``"paper"`` (fixed points + drift at the origin, the published estimator) or
        ``"moments"`` (directed estimator from stationary moments).
    tikhonov
        Ridge ``τ`` of the paper solve (1e-2 in the paper's Replogle analysis; 1e-3 for its
        synthetic d = 100 runs).
    solver
        ``"tikhonov"``, ``"pinv"`` or ``"tsvd"`` (paper method).
    tsvd
        Fraction of singular values kept by ``solver="tsvd"``.
    reference
        Where the paper method reads the drift. ``"origin"`` (default): the state origin
        ``s = 0``, the published estimator. ``"control"``: the control mean (``z = 0``), with
        the fixed points centred there (``F_r = −A (X − r 1ᵀ)``); an lcdiff option for models
        whose states lie far from the origin, where the learned drift is extrapolating. Both
        give the same ``A`` on an exactly affine drift. Only ``"origin"`` is accepted by the
        moments method (it reads no drift at a point).
    screen
        Optional AnnData whose ``var_names`` are the model's genes (any order); the causal
        matrix is written to ``screen.varp[key_added]`` and the options to
        ``screen.uns["clipr"][key_added]``.
    key_added
        Key for ``screen``; defaults to ``"clipr_<method>"`` (``"clipr_paper_control"`` for
        ``reference="control"``).
    return_details
        Return a :class:`CliprResult` (intermediate matrices included) instead of the frame.
    n_cells
        Samples per condition used to estimate the moments (moments method).
    seed
        Sampling seed (moments method).
    diffusion
        Diagonal of the diffusion matrix in state units for the moments method; default
        ``2 · state_scale²`` (LCD's SDE has diffusion √2 in standardized space).
    moments_from
        Where the moments method gets its moments: ``"score"`` (default; means = the
        noise-free fixed points, control covariance = the inverse of minus the symmetrized
        Jacobian of the control score at its fixed point: exact for a Gaussian stationary law,
        deterministic, and far cheaper than sampling) or ``"samples"`` (means and covariance
        of ``n_cells`` stationary samples per condition from ``model.sample_states``).
    covariance
        ``"control"`` (covariance of control samples, as the estimator assumes) or
        ``"pooled"`` (within-condition covariance pooled over all queried conditions: more
        samples, valid when perturbations only shift the mean).
    cov_shrinkage
        Shrinkage of the sample covariance towards its diagonal: a number in [0, 1] or
        ``"ledoit-wolf"`` (estimated from the samples; needed when ``n_cells`` ≲ d).
    jacobian_step
        Central-difference step (standardized units) of the score Jacobian
        (``moments_from="score"``).
    moments_solver
        ``method`` of :func:`lcdiff.causal.moments_solve`. The default ``"cg"`` fits the
        Lyapunov-parameterized drift to the mean equations by ridge least squares, which
        averages out errors of estimated moments; the closed form (``"auto"`` when every gene
        is perturbed) trusts every mean equation exactly and amplifies such errors.
    ridge
        Relative ridge of the moments solve; large values pull the estimate towards the
        symmetric ``−(D/2) Σ⁻¹``. 0.1 suits estimated moments (benchmarks/clipr_synthetic.py);
        use ~1e-8 with exact moments.

    Returns
    -------
    DataFrame [genes × genes] (index = source gene, columns = target gene), or a
    :class:`CliprResult` when ``return_details`` is true.

    Raises
    ------
    CliprError
        For an unknown method, reference or options, or a model without trained targets.
    NotFittedError
        If the model is not fitted.
    """
    if method not in METHODS:
        raise CliprError(f"Unknown CLIPR method {method!r}; choose 'paper' or 'moments'.")
    check_reference(reference, method)
    _check_model(model)
    queries = query_labels(model)
    genes = list(model.genes)
    mean = np.asarray(model.state_mean, dtype=np.float64)
    scale = np.asarray(model.state_scale, dtype=np.float64)
    if method == "paper":
        result = _clipr_paper(model, queries, mean, scale, tikhonov, solver, tsvd, reference)
    else:
        if moments_from not in ("samples", "score"):
            raise CliprError(f"moments_from must be 'samples' or 'score'; got {moments_from!r}.")
        if moments_from == "samples":
            means, cov, info = _sample_moments(
                model, queries, n_cells, seed, covariance, cov_shrinkage
            )
        else:
            means, cov, info = _score_moments(model, queries, mean, scale, jacobian_step)
        result = _clipr_moments(
            model, queries, scale, means, cov, info, diffusion, moments_solver, ridge
        )
    result.effects = causal_frame(result.drift, genes)
    result.effects.attrs["units"] = EFFECT_UNITS[method]
    result.params["units"] = EFFECT_UNITS[method]
    from lcdiff._io import check_finite

    check_finite(
        result.effects,
        f"The CLIPR effect matrix ({method})",
        "The fixed points or the drift of the model are broken; check the model's predictions.",
    )
    if screen is not None:
        default_key = f"clipr_{method}" if reference == "origin" else f"clipr_{method}_{reference}"
        _write_to_screen(screen, result, genes, key_added or default_key)
    return result if return_details else result.effects


def check_reference(reference: str, method: str = "paper") -> None:
    """Raise :class:`CliprError` unless ``reference`` is valid for ``method``."""
    if reference not in REFERENCES:
        raise CliprError(
            f"Unknown CLIPR reference {reference!r}; choose 'origin' (drift at the state "
            "origin, the published estimator) or 'control' (drift at the control mean)."
        )
    if method != "paper" and reference != "origin":
        raise CliprError(
            f"reference={reference!r} applies to method='paper' only; the {method} method "
            "reads no drift at a point. Drop the reference option or use method='paper'."
        )


def _clipr_paper(
    model, queries, mean, scale, tikhonov, solver, tsvd, reference="origin"
) -> CliprResult:
    labels = [model.control, *queries]
    z_star = np.asarray(model.fixed_points(labels), dtype=np.float64)  # [k + 1, d]
    fixed = (mean + scale * z_star).T  # state units, [d, k + 1]
    # The reference point r in state units and in standardized space: the origin s = 0
    # (z = −m / v, the published choice) or the control mean s = m (z = 0).
    point = np.zeros_like(mean) if reference == "origin" else mean
    z_ref = np.broadcast_to((point - mean) / scale, (len(labels), 1, mean.size))
    drift_z = np.asarray(model.drift(z_ref, labels, level=-1), dtype=np.float64)[:, 0, :]
    f0 = (drift_z / scale).T  # transformed like a score (÷ v), [d, k + 1]
    # f_q(r) = −A (x*_q − r); at the origin this is the published F0 = −A X unchanged.
    centred = fixed if reference == "origin" else fixed - point[:, None]
    a = clipr_solve(f0[:, 1:], centred[:, 1:], tikhonov=tikhonov, method=solver, tsvd=tsvd)
    b, c = bias_and_shifts(a, fixed[:, 0], fixed[:, 1:])
    return CliprResult(
        effects=pd.DataFrame(),
        drift=a,
        queries=list(queries),
        bias=b,
        shifts=c,
        f0=f0[:, 1:],
        fixed_points=fixed[:, 1:],
        fixed_point_ctrl=fixed[:, 0],
        method="paper",
        params={"tikhonov": tikhonov, "solver": solver, "tsvd": tsvd, "reference": reference},
        extra={"f0_ctrl": f0[:, 0], "reference_point": point},
    )


def estimate_covariance(
    samples: np.ndarray, shrinkage: float | str = "ledoit-wolf"
) -> tuple[np.ndarray, float]:
    """Sample covariance shrunk towards its diagonal.

    Parameters
    ----------
    samples
        [n, d] centred or uncentred samples (centred here).
    shrinkage
        A number in [0, 1], or ``"ledoit-wolf"``: the Ledoit–Wolf intensity of the
        standardized samples towards the identity, i.e. of the correlation matrix towards
        ``I`` (so the variances are kept).

    Returns
    -------
    The [d, d] covariance (``ddof = 1``) and the shrinkage used.
    """
    samples = np.asarray(samples, dtype=np.float64)
    centred = samples - samples.mean(axis=0)
    cov = centred.T @ centred / max(samples.shape[0] - 1, 1)
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit-wolf":
            raise CliprError(f"cov_shrinkage must be a number or 'ledoit-wolf'; got {shrinkage!r}.")
        from sklearn.covariance import ledoit_wolf_shrinkage

        std = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
        shrinkage = float(ledoit_wolf_shrinkage(centred / std, assume_centered=True))
    from lcdiff.causal.moments import shrink_covariance

    return shrink_covariance(cov, float(shrinkage)), float(shrinkage)


def _sample_moments(model, queries, n_cells, seed, covariance, cov_shrinkage):
    """Means [k + 1, d] and control covariance from stationary samples (state units)."""
    if covariance not in ("control", "pooled"):
        raise CliprError(f"covariance must be 'control' or 'pooled'; got {covariance!r}.")
    labels = [model.control, *queries]
    states = np.asarray(
        model.sample_states(labels, n_cells=n_cells, seed=seed, standardized=False),
        dtype=np.float64,
    )  # [k + 1, n, d]
    means = states.mean(axis=1)
    if covariance == "control":
        pool = states[0]
    else:
        pool = (states - means[:, None, :]).reshape(-1, states.shape[-1])
    cov, used = estimate_covariance(pool, cov_shrinkage)
    if covariance == "pooled":  # each condition lost one degree of freedom to its own mean
        cov *= (pool.shape[0] - 1) / (pool.shape[0] - states.shape[0])
    info = {
        "moments_from": "samples",
        "n_cells": n_cells,
        "seed": seed,
        "covariance": covariance,
        "cov_shrinkage": used,
    }
    return means, cov, info


def _score_moments(model, queries, mean, scale, step):
    """Means = fixed points; control covariance = (−sym. Jacobian of the score)⁻¹ (state units).

    For a Gaussian law ``N(μ, Σ)`` the score is ``−Σ⁻¹(s − μ)``: its zero is the mean and its
    Jacobian is ``−Σ⁻¹``. The Jacobian is taken by central differences in standardized space
    (``2d`` drift evaluations) and mapped to state units, ``J_s = diag(1/v) J_z diag(1/v)``.
    Eigenvalues of the precision below ``1e-6 ×`` the largest are floored (a non-concave
    log-density has no covariance to read off there).
    """
    if not step > 0:
        raise CliprError(f"jacobian_step must be positive; got {step}.")
    labels = [model.control, *queries]
    z_star = np.asarray(model.fixed_points(labels), dtype=np.float64)  # [k + 1, d]
    d = z_star.shape[1]
    offsets = step * np.eye(d)
    points = np.concatenate([z_star[0] + offsets, z_star[0] - offsets])[None]  # [1, 2d, d]
    values = np.asarray(model.drift(points, [model.control], level=-1), dtype=np.float64)[0]
    jac_z = ((values[:d] - values[d:]) / (2.0 * step)).T  # [i, j] = ∂f_i / ∂z_j
    jac_s = jac_z / np.outer(scale, scale)
    precision = -0.5 * (jac_s + jac_s.T)
    evals, evecs = np.linalg.eigh(precision)
    floor = 1e-6 * max(float(evals.max()), 1e-300)
    n_floored = int(np.sum(evals < floor))
    cov = (evecs / np.maximum(evals, floor)) @ evecs.T
    info = {"moments_from": "score", "jacobian_step": step, "floored_eigenvalues": n_floored}
    return mean + scale * z_star, 0.5 * (cov + cov.T), info


def _clipr_moments(
    model, queries, scale, means, cov, info, diffusion, solver, ridge
) -> CliprResult:
    from lcdiff.causal.moments import moments_solve

    diff = (
        2.0 * scale**2
        if diffusion is None
        else np.broadcast_to(np.asarray(diffusion, dtype=np.float64), scale.shape)
    )
    position = {g: i for i, g in enumerate(model.genes)}
    targets = np.array([position[q] for q in queries], dtype=np.int64)
    sol = moments_solve(
        means[0], cov, means[1:], targets, diff, ridge=ridge, method=solver, return_details=True
    )
    fixed = means[1:].T
    b, c = bias_and_shifts(sol.drift, means[0], fixed)
    params = {
        **info,
        "solver": solver,
        "ridge": ridge,
        "diffusion": "2*state_scale^2" if diffusion is None else "user",
    }
    return CliprResult(
        effects=pd.DataFrame(),
        drift=sol.drift,
        queries=list(queries),
        bias=b,
        shifts=c,
        f0=None,
        fixed_points=fixed,
        fixed_point_ctrl=means[0],
        method="moments",
        params=params,
        extra={
            "covariance": cov,
            "diffusion": diff,
            "target_shifts": sol.shifts,
            "residual": sol.residual,
            "solver": sol.method,
            "iterations": sol.iterations,
        },
    )


def _write_to_screen(screen, result: CliprResult, genes: list[str], key: str) -> None:
    names = list(map(str, screen.var_names))
    if sorted(names) != sorted(genes):
        raise CliprError(
            "screen.var_names are not the model's genes, so the causal matrix cannot be stored "
            "in screen.varp; pass the screen the model was trained on (or screen=None)."
        )
    screen.varp[key] = result.effects.loc[names, names].to_numpy()
    record = {"method": result.method, "queries": list(result.queries)}
    record.update({k: v for k, v in result.params.items() if v is not None})
    screen.uns.setdefault("clipr", {})[key] = record
