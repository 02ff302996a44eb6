"""Directed causal effects from stationary moments ("moments-CLIPR").

Model. In state units, each condition follows a linear SDE ``ds = (A s + b + c_k) dt + dW``
with diffusion matrix ``D = diag(diffusion)`` shared by every condition. Its stationary law has
covariance ``Σ`` (the same in every condition) solving the Lyapunov equation

    A Σ + Σ Aᵀ + D = 0,

and means ``μ_k = −A⁻¹(b + c_k)``. A single perturbation of gene ``t_k`` shifts the drift of that
gene only (``c_k − c_0 = u_k e_{t_k}``, size ``u_k`` unknown), so the mean shift
``m_k = μ_k − μ_0`` satisfies ``A m_k = −u_k e_{t_k}``.

Why this beats the paper's read-out. A Langevin model learns the *score* ``−Σ⁻¹(s − μ)``, whose
matrix is symmetric; the Lyapunov equation ties the asymmetric drift ``A`` to ``Σ`` and ``D``,
and the mean shifts pin down the rest.

Parameterization. Every solution of the Lyapunov equation is ``A = (K − D/2) Σ⁻¹`` with ``K``
skew-symmetric, so the unknowns are ``K`` (d(d−1)/2 numbers) and ``u`` (p numbers). With
``N = Σ⁻¹ M`` (columns ``n_k``) the mean equations read ``K n_k = (D/2) n_k − u_k e_{t_k}``.
``u_k`` appears in one equation only (row ``t_k`` of column ``k``), so it is eliminated
exactly: we fit ``K`` to every other entry and read ``u_k`` off the residual.

Solvers.
- Every gene perturbed exactly once (``p = d``): closed form ``A = −U M⁻¹`` with
  ``u_k = D_{t_k} / (2 (M⁻¹ Σ)_{k, t_k})`` from the diagonal of the Lyapunov equation.
- Otherwise (or ``method="cg"``): least squares over ``K`` with a ridge ``λ‖A‖²_F`` (with
  fewer than d perturbations the equations leave ``K`` underdetermined, and among the fits
  the smallest drift is the best guess; with estimated moments a larger ridge also averages
  out their errors). Solved matrix-free by preconditioned conjugate gradients in the
  eigenbasis of ``W = N Nᵀ + λΣ⁻²``: without the eliminated on-target entries the normal
  operator is ``K ↦ (K W + W K)/2``, diagonal in that basis, so it is an exact preconditioner
  up to a rank-p correction; each iteration costs two d×d×p products (about 10 iterations
  and 10 s at d = 1000 on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from lcdiff.errors import LcdiffError


class MomentsError(LcdiffError, ValueError):
    """Inputs of the moments estimator are inconsistent or degenerate."""


@dataclass(frozen=True)
class MomentsSolution:
    """Result of :func:`moments_solve` with ``return_details=True``.

    Attributes
    ----------
    drift
        ``A`` [d, d] (row = target gene, column = source gene; the causal matrix is ``A.T``).
    skew
        ``K`` [d, d], skew-symmetric, with ``A = (K − D/2) Σ⁻¹``.
    shifts
        ``u`` [p]: the fitted on-target drift shift of each perturbation.
    residual
        Relative residual of the mean equations, ``‖A M + U‖_F / ‖(D/2) N‖_F``.
    method
        ``"closed_form"`` or ``"cg"``.
    iterations
        CG iterations (0 for the closed form).
    """

    drift: np.ndarray
    skew: np.ndarray
    shifts: np.ndarray
    residual: float
    method: str
    iterations: int


def _validate(mean_ctrl, cov_ctrl, means, targets, diffusion):
    mean_ctrl = np.asarray(mean_ctrl, dtype=np.float64)
    cov_ctrl = np.asarray(cov_ctrl, dtype=np.float64)
    means = np.atleast_2d(np.asarray(means, dtype=np.float64))
    targets = np.asarray(targets)
    d = mean_ctrl.shape[0]
    if mean_ctrl.ndim != 1:
        raise MomentsError(f"mean_ctrl must be a vector [d]; got shape {mean_ctrl.shape}.")
    if cov_ctrl.shape != (d, d):
        raise MomentsError(
            f"cov_ctrl must be [d, d] = [{d}, {d}] to match mean_ctrl; got {cov_ctrl.shape}."
        )
    if means.ndim != 2 or means.shape[1] != d:
        raise MomentsError(f"means must be [k, d] with d = {d}; got shape {means.shape}.")
    if targets.shape != (means.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise MomentsError(
            f"targets must be {means.shape[0]} integer gene indices (one per row of means); "
            f"got {targets!r}."
        )
    if targets.size and (targets.min() < 0 or targets.max() >= d):
        raise MomentsError(
            f"targets must lie in [0, {d}); got range [{targets.min()}, {targets.max()}]."
        )
    diffusion = np.broadcast_to(np.asarray(diffusion, dtype=np.float64), (d,)).copy()
    if not np.all(diffusion > 0):
        raise MomentsError("diffusion (the diagonal of D) must be positive for every gene.")
    for name, arr in (("mean_ctrl", mean_ctrl), ("cov_ctrl", cov_ctrl), ("means", means)):
        if not np.all(np.isfinite(arr)):
            raise MomentsError(f"{name} contains NaN or inf; estimate the moments again.")
    return mean_ctrl, cov_ctrl, means, targets.astype(np.int64), diffusion


def _cholesky(cov: np.ndarray):
    sym = 0.5 * (cov + cov.T)
    try:
        return scipy.linalg.cho_factor(sym, lower=True)
    except np.linalg.LinAlgError as exc:
        raise MomentsError(
            "cov_ctrl is not positive definite (too few control cells for the number of genes?); "
            "shrink it towards its diagonal, e.g. with lc.causal.shrink_covariance."
        ) from exc


def moments_solve(
    mean_ctrl: np.ndarray,
    cov_ctrl: np.ndarray,
    means: np.ndarray,
    targets: np.ndarray,
    diffusion: np.ndarray | float,
    ridge: float = 1e-8,
    method: str = "auto",
    tol: float = 1e-10,
    max_iter: int = 2000,
    return_details: bool = False,
) -> np.ndarray | MomentsSolution:
    """Drift matrix ``A`` of a linear SDE from control covariance and perturbation means.

    Parameters
    ----------
    mean_ctrl
        ``μ_0`` [d]: mean state of control cells.
    cov_ctrl
        ``Σ_0`` [d, d]: covariance of control cells (positive definite).
    means
        ``μ_k`` [p, d]: mean state of each single-gene perturbation.
    targets
        [p] integer index of the perturbed gene of each row of ``means``.
    diffusion
        Diagonal of the diffusion matrix ``D`` [d] (or a scalar), in the same units as the
        states. For an LCD model this is ``2 · state_scale²``.
    ridge
        Ridge penalty on ``‖A‖²_F``, relative to ``tr(N Nᵀ) / tr(Σ⁻²)``. With fewer than d
        perturbations it picks the smallest drift among the exact fits (keep it small, like the
        default, for exact moments); larger values (≈ 0.1) average out errors of estimated
        moments and, in the limit, return the symmetric ``−(D/2) Σ⁻¹``.
    method
        ``"auto"`` (closed form when every gene is perturbed exactly once, else ``"cg"``),
        ``"closed_form"`` or ``"cg"``.
    tol
        Relative residual at which conjugate gradients stop.
    max_iter
        Iteration cap of conjugate gradients.
    return_details
        Return a :class:`MomentsSolution` instead of the matrix alone.

    Returns
    -------
    ``A`` [d, d], with ``A[j, i]`` the effect of gene ``i`` on the drift of gene ``j``
    (transpose it for the row = source convention), or a :class:`MomentsSolution`.

    Raises
    ------
    MomentsError
        For inconsistent shapes, non-finite moments, a covariance that is not positive definite,
        or ``method="closed_form"`` when the targets are not a permutation of all genes.
    """
    mean_ctrl, cov_ctrl, means, targets, diffusion = _validate(
        mean_ctrl, cov_ctrl, means, targets, diffusion
    )
    d, p = mean_ctrl.shape[0], means.shape[0]
    if p == 0:
        raise MomentsError("moments_solve needs at least one perturbation (means has no rows).")
    if method not in ("auto", "closed_form", "cg"):
        raise MomentsError(f"method must be 'auto', 'closed_form' or 'cg'; got {method!r}.")
    shifts = (means - mean_ctrl).T  # M [d, p]
    every_gene_once = p == d and np.array_equal(np.sort(targets), np.arange(d))
    if method == "closed_form" and not every_gene_once:
        raise MomentsError(
            "The closed form needs every gene perturbed exactly once (p = d); use method='cg'."
        )
    chol = _cholesky(cov_ctrl)
    normal = scipy.linalg.cho_solve(chol, shifts)  # N = Σ⁻¹ M [d, p]
    half_d = 0.5 * diffusion

    if method == "closed_form" or (method == "auto" and every_gene_once):
        drift, u = _closed_form(shifts, cov_ctrl, targets, diffusion)
        skew = drift @ cov_ctrl + np.diag(half_d)
        skew = 0.5 * (skew - skew.T)
        used, iterations = "closed_form", 0
    else:
        prec = scipy.linalg.cho_solve(chol, np.eye(d))
        skew, iterations = _skew_cg(normal, prec, half_d, targets, ridge, tol, max_iter)
        u = half_d[targets] * normal[targets, np.arange(p)] - np.einsum(
            "kj,jk->k", skew[targets], normal
        )
        drift = scipy.linalg.cho_solve(chol, (skew - np.diag(half_d)).T).T  # (K − D/2) Σ⁻¹
        used = "cg"
    onehot = np.zeros((d, p))
    onehot[targets, np.arange(p)] = u
    scale = np.linalg.norm(half_d[:, None] * normal)
    residual = float(np.linalg.norm(drift @ shifts + onehot) / max(scale, 1e-300))
    if not return_details:
        return drift
    return MomentsSolution(drift, skew, u, residual, used, iterations)


def _closed_form(shifts, cov, targets, diffusion):
    """``A = −U M⁻¹`` with ``u`` from the diagonal of the Lyapunov equation (p = d)."""
    d = shifts.shape[0]
    try:
        minv = np.linalg.inv(shifts)  # [p, d]: row k belongs to perturbation k
    except np.linalg.LinAlgError as exc:
        raise MomentsError(
            "The mean shifts are linearly dependent, so the closed form does not exist; "
            "use method='cg' with a ridge."
        ) from exc
    # (A Σ)_{t_k t_k} = −u_k (M⁻¹ Σ)_{k, t_k} must equal −D_{t_k} / 2.
    minv_cov = minv @ cov
    denom = minv_cov[np.arange(d), targets]
    u = diffusion[targets] / (2.0 * denom)
    drift = np.zeros((d, d))
    drift[targets] = -u[:, None] * minv
    return drift, u


def _skew_cg(normal, prec, half_d, targets, ridge, tol, max_iter):
    """Ridge least squares over skew K of ``K N ≈ (D/2) N`` off the on-target entries.

    The penalty is ``λ ‖A‖²_F = λ ‖(K − D/2) P‖²_F`` with ``P = Σ⁻¹`` (prefer the smallest
    drift among those that fit). The normal operator without the p eliminated entries is
    ``K ↦ (K W + W K)/2`` with ``W = N Nᵀ + λ P²``; in its eigenbasis ``W = V Λ Vᵀ``
    (``K̃ = Vᵀ K V``) that is the elementwise product with ``S_ij = (Λ_i + Λ_j)/2``, an exact
    preconditioner up to a rank-p correction: the masked entries ``(t_k, k)`` subtract
    ``Π(Σ_k c_k α_k ñ_kᵀ)`` with ``α_k = Vᵀ e_{t_k}``, ``ñ_k = Vᵀ n_k`` and ``c_k = α_kᵀ K̃ ñ_k``
    (``Π`` = skew part).
    """
    d, p = normal.shape
    gram = normal @ normal.T
    prec_sq = prec @ prec
    lam = ridge * max(np.trace(gram), 1e-300) / max(np.trace(prec_sq), 1e-300)
    evals, evecs = np.linalg.eigh(gram + lam * prec_sq)
    evals = np.clip(evals, 0.0, None)
    diag_op = 0.5 * (evals[:, None] + evals[None, :])
    diag_op = np.maximum(diag_op, 1e-12 * diag_op.max())
    n_t = evecs.T @ normal  # ñ [d, p]
    alpha = evecs[targets].T  # α [d, p]

    def skew_part(x):
        return 0.5 * (x - x.T)

    def apply(kt):
        # c_k = α_kᵀ K̃ ñ_k for every k, then subtract Π(Σ_k c_k α_k ñ_kᵀ)
        c = np.einsum("ik,ik->k", alpha, kt @ n_t)
        return diag_op * kt - skew_part((alpha * c) @ n_t.T)

    # Right-hand side: Π(P_Ω(B) Nᵀ) + λ Π((D/2) P²) with B = (D/2) N, in the eigenbasis.
    b_masked = half_d[:, None] * normal
    b_masked[targets, np.arange(p)] = 0.0
    rhs_full = skew_part(b_masked @ normal.T + lam * half_d[:, None] * prec_sq)
    rhs = evecs.T @ rhs_full @ evecs

    kt = rhs / diag_op
    resid = rhs - apply(kt)
    precond = resid / diag_op
    direction = precond.copy()
    rz = np.vdot(resid, precond)
    rhs_norm = max(np.linalg.norm(rhs), 1e-300)
    iterations = 0
    while np.linalg.norm(resid) > tol * rhs_norm and iterations < max_iter:
        hd = apply(direction)
        step = rz / np.vdot(direction, hd)
        kt += step * direction
        resid -= step * hd
        precond = resid / diag_op
        rz_new = np.vdot(resid, precond)
        direction = precond + (rz_new / rz) * direction
        rz = rz_new
        iterations += 1
    return skew_part(evecs @ kt @ evecs.T), iterations


def shrink_covariance(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """Shrink a covariance towards its diagonal: ``(1 − α) Σ + α diag(Σ)``.

    Parameters
    ----------
    cov
        [d, d] covariance.
    shrinkage
        ``α`` in [0, 1].

    Returns
    -------
    [d, d] shrunk covariance (positive definite for ``α > 0`` and positive variances).
    """
    if not 0.0 <= shrinkage <= 1.0:
        raise MomentsError(f"shrinkage must lie in [0, 1]; got {shrinkage}.")
    cov = np.asarray(cov, dtype=np.float64)
    return (1.0 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))
