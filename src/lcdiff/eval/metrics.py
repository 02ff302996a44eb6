"""Metrics comparing predicted with observed cells of one perturbation condition.

Every function takes cells × genes arrays on the evaluation scale (log1p CP10k, see
``lcdiff.data.normalize.log1p_cp10k``) and follows ``lcd-evaluation.md`` §3:

- distribution metrics: :func:`mmd` (unbiased MMD², RBF kernel averaged over 10 bandwidths),
  :func:`energy_distance` (unbiased), :func:`w1_marginals` (mean per-gene Wasserstein-1);
- mean-based metrics: :func:`rmse_mean`, :func:`pearson_delta` (against the control mean or the
  training-perturbation centroid, "Systema-style");
- differential expression: :func:`de_test` / :func:`de_calls` (Mann–Whitney U + Benjamini–Hochberg),
  :func:`de_classification` (precision / recall / F1 of the DE calls) and :func:`topk_metrics`
  (AUROC / AP / precision of the top-k most significant genes);
- :func:`condition_metrics` computes the whole set for one condition, under every gene mask.

Pairwise distances are computed once per pair of samples (in row blocks, so memory stays
bounded) and shared by MMD and the energy distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lcdiff.errors import MetricInputError

#: RBF bandwidths are these factors times sqrt(number of genes).
MMD_BANDWIDTH_FACTORS = np.logspace(-2, 1, 10)
#: Genes whose |mean change| is below this count as unchanged when ranking DE genes.
ZERO_CHANGE_ATOL = 1e-6
#: HVG strata as [low, high) fractions of the number of genes, keyed by mask suffix.
HVG_STRATA = {"_hvg_0-5": (0.0, 0.05), "_hvg_5-20": (0.05, 0.20), "_hvg_20-100": (0.20, 1.0)}
#: Rankings of the predicted DE genes used by the top-k metrics.
DE_RANKINGS = ("delta", "pval")

# Pairwise-distance blocks hold at most this many entries (8 bytes each) at once.
_BLOCK_ENTRIES = 2**22


# --- input checks --------------------------------------------------------------------------
def _as_cells(a, name: str, min_cells: int = 1) -> np.ndarray:
    """A finite float64 ``[cells, genes]`` matrix (sparse matrices are densified)."""
    if hasattr(a, "toarray"):
        a = a.toarray()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise MetricInputError(
            f"{name} must be a cells × genes matrix (2-D); got shape {arr.shape}. "
            "Pass one condition's cells as rows."
        )
    if arr.shape[0] < min_cells or arr.shape[1] == 0:
        raise MetricInputError(
            f"{name} has shape {arr.shape}; need at least {min_cells} cell(s) and 1 gene."
        )
    if not np.isfinite(arr).all():
        raise MetricInputError(
            f"{name} contains NaN or inf; metrics need finite expression values "
            "(check the prediction for a diverged model)."
        )
    return arr


def _same_genes(*arrays: tuple[str, np.ndarray]) -> None:
    widths = {name: a.shape[-1] for name, a in arrays}
    if len(set(widths.values())) != 1:
        raise MetricInputError(
            f"Gene counts differ: {widths}; all inputs must have the same genes in the same order."
        )


def _as_vector_or_mean(reference, name: str) -> np.ndarray:
    """A reference given as a mean vector ``[genes]`` or as cells ``[n, genes]``."""
    ref = np.asarray(
        reference.toarray() if hasattr(reference, "toarray") else reference, dtype=np.float64
    )
    if ref.ndim == 2:
        ref = _as_cells(ref, name).mean(axis=0)
    if ref.ndim != 1 or not np.isfinite(ref).all():
        raise MetricInputError(
            f"{name} must be a finite mean vector [genes] or a cells × genes matrix; "
            f"got shape {np.shape(reference)}."
        )
    return ref


# --- distribution metrics ------------------------------------------------------------------
def _block_sums(a: np.ndarray, b: np.ndarray, inv_two_l2: np.ndarray, same: bool):
    """Sums over all pairs (i, j), i ≠ j when ``same``, of RBF kernels and of distances.

    Returns ``(kernel_sums [n_bandwidths], distance_sum)``. Squared distances come from
    ‖a‖² + ‖b‖² − 2 a·b, computed in row blocks to bound memory.
    """
    sq_a = np.einsum("ij,ij->i", a, a)
    sq_b = np.einsum("ij,ij->i", b, b)
    rows = max(1, _BLOCK_ENTRIES // max(1, b.shape[0]))
    kernel_sums = np.zeros(len(inv_two_l2))
    distance_sum = 0.0
    for start in range(0, a.shape[0], rows):
        stop = min(start + rows, a.shape[0])
        sq = sq_a[start:stop, None] + sq_b[None, :] - 2.0 * (a[start:stop] @ b.T)
        np.maximum(sq, 0.0, out=sq)  # rounding can make tiny distances negative
        if same:  # exact zeros on the diagonal; removed from the sums below
            idx = np.arange(start, stop)
            sq[idx - start, idx] = 0.0
        distance_sum += np.sqrt(sq).sum()
        for i, c in enumerate(inv_two_l2):
            kernel_sums[i] += np.exp(-c * sq).sum()
    if same:
        kernel_sums -= a.shape[0]  # k(x, x) = 1 on the diagonal
    return kernel_sums, distance_sum


def _mmd_and_energy(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Unbiased MMD² (bandwidth-averaged) and unbiased energy distance from shared distances."""
    n, m = x.shape[0], y.shape[0]
    # Both metrics are translation invariant; centring shrinks the norms and so the rounding
    # error of ‖a‖² + ‖b‖² − 2 a·b.
    shift = np.concatenate([x, y]).mean(axis=0)
    x, y = x - shift, y - shift
    bandwidths = MMD_BANDWIDTH_FACTORS * np.sqrt(x.shape[1])
    inv_two_l2 = 1.0 / (2.0 * bandwidths**2)
    k_xx, d_xx = _block_sums(x, x, inv_two_l2, same=True)
    k_yy, d_yy = _block_sums(y, y, inv_two_l2, same=True)
    k_xy, d_xy = _block_sums(x, y, inv_two_l2, same=False)
    mmd2 = k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2.0 * k_xy / (n * m)
    energy = 2.0 * d_xy / (n * m) - d_xx / (n * (n - 1)) - d_yy / (m * (m - 1))
    return float(mmd2.mean()), float(energy)


def _checked_pair(x, y, min_cells: int = 2) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = _as_cells(x, "x", min_cells), _as_cells(y, "y", min_cells)
    _same_genes(("x", xa), ("y", ya))
    return xa, ya


def mmd(x, y) -> float:
    """Unbiased MMD² between two samples, RBF kernel averaged over 10 bandwidths.

    k(a, b) = exp(−‖a − b‖² / (2ℓ²)) with ℓ ∈ logspace(−2, 1, 10) · √genes; within-sample sums
    exclude the diagonal and are divided by n(n − 1). Can be slightly negative. Lower is better.

    Parameters
    ----------
    x : array [n_x, genes]
        Predicted cells (n_x ≥ 2).
    y : array [n_y, genes]
        Observed cells (n_y ≥ 2).

    Returns
    -------
    float
        The mean over the 10 bandwidths of the unbiased MMD² estimates.
    """
    return _mmd_and_energy(*_checked_pair(x, y))[0]


def energy_distance(x, y) -> float:
    """Unbiased energy distance 2E‖X−Y‖ − E‖X−X′‖ − E‖Y−Y′‖ (Euclidean norms).

    Within-sample expectations average over the n(n − 1) ordered pairs of distinct cells. This is
    the *squared* scale: for 1-D samples and V-statistics it equals the square of
    ``scipy.stats.energy_distance``. Lower is better.

    Parameters
    ----------
    x : array [n_x, genes]
        Predicted cells (n_x ≥ 2).
    y : array [n_y, genes]
        Observed cells (n_y ≥ 2).
    """
    return _mmd_and_energy(*_checked_pair(x, y))[1]


def _w1_per_gene(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1-D Wasserstein-1 distance of every gene's marginals, ``[genes]``."""
    n, m = x.shape[0], y.shape[0]
    # genes × cells, so that each gene's values are contiguous (sorting is ~4x faster)
    values = np.ascontiguousarray(np.concatenate([x, y]).T)
    order = np.argsort(values, axis=1, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=1)
    # After the k-th smallest pooled value, the CDFs are (#x among them)/n and (k − #x)/m. Within
    # a run of tied values the partial counts are wrong, but the run's width is zero.
    n_from_x = np.cumsum(order < n, axis=1)[:, :-1]
    cdf_x = n_from_x / n
    cdf_y = (np.arange(1, n + m) - n_from_x) / m
    widths = np.diff(sorted_values, axis=1)
    return (np.abs(cdf_x - cdf_y) * widths).sum(axis=1)


def w1_marginals(x, y) -> float:
    """Mean over genes of the 1-D Wasserstein-1 distance between the empirical marginals.

    W1 = ∫ |F_x(t) − F_y(t)| dt per gene (the CDF integral of ``scipy.stats.wasserstein_distance``),
    vectorized over genes.

    Parameters
    ----------
    x : array [n_x, genes]
    y : array [n_y, genes]
    """
    return float(_w1_per_gene(*_checked_pair(x, y, min_cells=1)).mean())


def rmse_mean(x, y) -> float:
    """Root mean squared difference of the per-gene means, sqrt(mean_g (x̄_g − ȳ_g)²).

    Parameters
    ----------
    x : array [n_x, genes]
    y : array [n_y, genes]
    """
    xa, ya = _checked_pair(x, y, min_cells=1)
    return float(np.sqrt(np.mean((xa.mean(axis=0) - ya.mean(axis=0)) ** 2)))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either vector is constant (or has fewer than 2 entries)."""
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")


def pearson_delta(x, y, reference) -> float:
    """Pearson correlation over genes of the mean changes (x̄ − r) and (ȳ − r).

    With ``reference`` = training control this is ``pearson_de``; with the centroid of the
    training-perturbation means (each condition weighted equally, control excluded) it is the
    Systema-style ``pearson_systema`` of the paper's tables. NaN when a change vector is constant.

    Parameters
    ----------
    x : array [n_x, genes]
        Predicted cells.
    y : array [n_y, genes]
        Observed cells.
    reference : array [genes] or [n_ref, genes]
        A mean vector, or cells whose mean is used.
    """
    xa, ya = _checked_pair(x, y, min_cells=1)
    ref = _as_vector_or_mean(reference, "reference")
    _same_genes(("x", xa), ("reference", ref))
    return _pearson(xa.mean(axis=0) - ref, ya.mean(axis=0) - ref)


# --- differential expression ---------------------------------------------------------------
@dataclass(frozen=True)
class DETest:
    """Per-gene differential-expression test of one set of cells against control cells.

    Attributes
    ----------
    pvals : array [genes]
        Two-sided asymptotic Mann–Whitney U p-values (constant genes get 1).
    pvals_adj : array [genes]
        Benjamini–Hochberg adjusted p-values.
    mean_change : array [genes]
        Mean of the cells minus mean of the control (float64).
    alpha : float
        FDR level of the calls.
    """

    pvals: np.ndarray
    pvals_adj: np.ndarray
    mean_change: np.ndarray
    alpha: float = 0.05

    @property
    def signs(self) -> np.ndarray:
        """+1 / −1 for genes called DE (adjusted p < alpha), by the sign of the change; else 0."""
        called = self.pvals_adj < self.alpha
        return np.where(called, np.where(self.mean_change > 0, 1, -1), 0).astype(np.int8)

    @property
    def abs_change(self) -> np.ndarray:
        """|mean change| with changes below ``ZERO_CHANGE_ATOL`` set to exactly 0."""
        change = np.abs(self.mean_change)
        return np.where(change < ZERO_CHANGE_ATOL, 0.0, change)

    def ranks(self, by: str) -> np.ndarray:
        """0-based significance ranks (0 = most significant); ties share the largest rank.

        ``by="delta"`` ranks by |mean change|; ``by="pval"`` by p-value, ties broken by
        |mean change|, and genes without change are ranked last whatever their p-value.
        """
        change = self.abs_change
        if by == "delta":
            return _max_ranks(-change)
        if by == "pval":
            # A zero change cannot be DE; its p-value only reflects float noise.
            pval_key = np.where(change > 0, self.pvals, np.inf)
            return _max_ranks(pval_key, -change)
        raise MetricInputError(f"Unknown DE ranking {by!r}; use one of {DE_RANKINGS}.")


def _max_ranks(primary: np.ndarray, secondary: np.ndarray | None = None) -> np.ndarray:
    """0-based ranks by ascending key (lexicographic with ``secondary``); ties get the max rank."""
    if secondary is not None:
        first = stats.rankdata(primary, method="dense")
        second = stats.rankdata(secondary, method="dense")
        # Integer codes make the lexicographic order exact.
        primary = first * (second.max() + 1) + second
    return (stats.rankdata(primary, method="max") - 1).astype(np.int64)


def de_test(cells, control_cells, alpha: float = 0.05) -> DETest:
    """Mann–Whitney U per gene (asymptotic, two-sided) + Benjamini–Hochberg, vs control.

    Parameters
    ----------
    cells : array [n, genes]
        Cells of one condition (n ≥ 2).
    control_cells : array [n_ctrl, genes]
        Reference (training control) cells (n_ctrl ≥ 2).
    alpha : float
        FDR level of the DE calls.

    Returns
    -------
    DETest
        p-values, adjusted p-values and mean changes; ``.signs`` gives the calls.
    """
    if not 0 < alpha < 1:
        raise MetricInputError(f"alpha must lie in (0, 1); got {alpha}.")
    xa = _as_cells(cells, "cells", 2)
    ca = _as_cells(control_cells, "control_cells", 2)
    _same_genes(("cells", xa), ("control_cells", ca))
    result = stats.mannwhitneyu(xa, ca, axis=0, method="asymptotic", alternative="two-sided")
    pvals = np.nan_to_num(np.asarray(result.pvalue, dtype=np.float64), nan=1.0)
    pvals_adj = stats.false_discovery_control(pvals, method="bh")
    mean_change = xa.mean(axis=0) - ca.mean(axis=0)
    return DETest(pvals=pvals, pvals_adj=pvals_adj, mean_change=mean_change, alpha=alpha)


def de_calls(cells, control_cells, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Signed DE calls of ``cells`` against ``control_cells`` (see :func:`de_test`).

    Returns
    -------
    signs : array [genes] of int
        +1 (up), −1 (down) for genes with BH-adjusted p < ``alpha``, else 0.
    pvals : array [genes]
        BH-adjusted p-values.
    """
    test = de_test(cells, control_cells, alpha)
    return test.signs, test.pvals_adj


def _precision_recall_f1(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    """Binary precision / recall / F1 (positive = True); NaN where the ratio is 0/0."""
    tp = float(np.sum(predicted & actual))
    n_pred, n_true = float(predicted.sum()), float(actual.sum())
    precision = tp / n_pred if n_pred else float("nan")
    recall = tp / n_true if n_true else float("nan")
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else float("nan")
    return precision, recall, f1


def _binary_de_scores(pred_signs, true_signs, genes=None) -> dict[str, float]:
    predicted, actual = np.asarray(pred_signs) != 0, np.asarray(true_signs) != 0
    if genes is not None:
        predicted, actual = predicted[genes], actual[genes]
    prec, rec, f1 = _precision_recall_f1(predicted, actual)
    return {"classify_de_prec": prec, "classify_de_recall": rec, "classify_de_f1": f1}


def de_classification(pred, true, control, alpha: float = 0.05) -> dict[str, float]:
    """Precision, recall and F1 of the predicted DE calls against the observed ones.

    Both sets of cells are tested against ``control`` (:func:`de_test`); positive class = DE
    (either sign). Precision is NaN without predicted DE genes, recall NaN without observed DE
    genes, F1 NaN only when neither has any.

    Parameters
    ----------
    pred : array [n_x, genes]
    true : array [n_y, genes]
    control : array [n_ctrl, genes]

    Returns
    -------
    dict
        ``classify_de_prec``, ``classify_de_recall``, ``classify_de_f1``.
    """
    return _binary_de_scores(
        de_test(pred, control, alpha).signs, de_test(true, control, alpha).signs
    )


def binary_auroc(score, positive) -> float:
    """AUROC of ``score`` for the boolean labels ``positive`` (ties count one half).

    Computed from average ranks (the Mann–Whitney statistic); NaN when one class is empty.
    """
    score = np.asarray(score, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(score)  # average ranks, 1-based
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(score, positive) -> float:
    """Average precision Σ (R_t − R_{t−1}) P_t over distinct score thresholds t (descending).

    Tied scores enter together (as ``sklearn.metrics.average_precision_score``), so the result
    does not depend on the order of the genes. NaN without positives.
    """
    score = np.asarray(score, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order]
    # The last index of each run of equal scores is where that threshold's counts are read.
    last_of_run = np.r_[np.flatnonzero(np.diff(score) != 0), score.size - 1]
    tp = np.cumsum(positive)[last_of_run]
    precision = tp / (last_of_run + 1)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * precision))


def _topk_scores(pred_test: DETest, true_test: DETest, ks: Sequence[int]) -> dict[str, float]:
    true_rank = true_test.ranks("pval")
    out: dict[str, float] = {}
    for k in ks:
        actual = true_rank < k
        for by in DE_RANKINGS:
            pred_rank = pred_test.ranks(by)
            score = -pred_rank.astype(np.float64)
            out[f"classify_topk_auroc_{by}_{k}"] = binary_auroc(score, actual)
            out[f"classify_topk_ap_{by}_{k}"] = average_precision(score, actual)
            out[f"classify_topk_precision_{by}_{k}"] = _precision_recall_f1(pred_rank < k, actual)[
                0
            ]
    return out


def topk_metrics(pred, true, control, ks: Sequence[int] = (20, 100)) -> dict[str, float]:
    """How well the prediction ranks the k most significant observed DE genes.

    Truth: genes whose observed p-value rank (:meth:`DETest.ranks` ``"pval"``, 0-based, ties
    share the largest rank) is below k. The prediction is ranked two ways (``delta``: by
    |mean change|; ``pval``: by p-value, ties broken by |mean change|), scored by −rank.

    Parameters
    ----------
    pred : array [n_x, genes]
    true : array [n_y, genes]
    control : array [n_ctrl, genes]
    ks : sequence of int
        Sizes of the top sets.

    Returns
    -------
    dict
        ``classify_topk_{auroc,ap,precision}_{delta,pval}_{k}`` for each k. Precision compares
        the predicted top-k set with the true one (NaN when the predicted set is empty).
    """
    ks = _check_ks(ks)
    return _topk_scores(de_test(pred, control), de_test(true, control), ks)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise MetricInputError(f"ks must be positive integers; got {ks}.")
    return ks


# --- gene masks and the full per-condition set -----------------------------------------------
def gene_masks(n_genes: int, markers=None, hvg_rank=None) -> dict[str, np.ndarray]:
    """Column indices of every gene mask, keyed by metric-name suffix.

    Parameters
    ----------
    n_genes : int
    markers : sequence of int or boolean array [genes], optional
        The condition's marker genes (suffix ``"_20"``).
    hvg_rank : array [genes], optional
        0-based HVG rank of each gene; strata ``_hvg_0-5``, ``_hvg_5-20``, ``_hvg_20-100`` are the
        ranks in [0, 5 %), [5 %, 20 %), [20 %, 100 %) of ``n_genes``.

    Returns
    -------
    dict
        ``{"": all genes, "_20": ..., "_hvg_...": ...}``; strata that select no gene are left out.
    """
    masks = {"": np.arange(n_genes)}
    if markers is not None:
        idx = np.asarray(markers)
        if idx.dtype == bool:
            if idx.shape != (n_genes,):
                raise MetricInputError(
                    f"A boolean marker mask needs one entry per gene ({n_genes}); got {idx.shape}."
                )
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).ravel()
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n_genes:
            raise MetricInputError(
                f"markers must be non-empty column indices in [0, {n_genes}); got {idx.tolist()}."
            )
        masks["_20"] = np.unique(idx)
    if hvg_rank is not None:
        rank = np.asarray(hvg_rank, dtype=np.float64).ravel()
        if rank.shape != (n_genes,):
            raise MetricInputError(
                f"hvg_rank needs one rank per gene ({n_genes}); got shape {rank.shape}."
            )
        for suffix, (lo, hi) in HVG_STRATA.items():
            selected = np.flatnonzero((rank >= lo * n_genes) & (rank < hi * n_genes))
            if selected.size:
                masks[suffix] = selected
    return masks


def condition_metrics(
    pred,
    true,
    control,
    centroid,
    markers=None,
    hvg_rank=None,
    *,
    true_de: DETest | None = None,
    ks: Sequence[int] = (20, 100),
) -> dict[str, float]:
    """Every metric of ``lcd-evaluation.md`` §3 for one test condition.

    Parameters
    ----------
    pred : array [n_x, genes]
        Predicted cells (log1p CP10k).
    true : array [n_y, genes]
        Observed cells of the condition.
    control : array [n_ctrl, genes]
        Training control cells (reference of ``pearson_de`` and of the DE tests).
    centroid : array [genes] or [n, genes]
        Mean of the training-perturbation condition means (reference of ``pearson_systema``).
    markers : sequence of int or boolean array [genes], optional
        The condition's marker genes (suffix ``_20``).
    hvg_rank : array [genes], optional
        HVG rank of each gene (suffixes ``_hvg_0-5``, ``_hvg_5-20``, ``_hvg_20-100``).
    true_de : DETest, optional
        ``de_test(true, control)``, if already computed (it is the same for every method).
    ks : sequence of int
        Sizes of the top-k sets.

    Returns
    -------
    dict[str, float]
        For each mask suffix s: ``mmd{s}``, ``ed{s}``, ``w1_eltwise{s}``, ``rmse_m{s}``,
        ``pearson_de{s}``, ``pearson_systema{s}``, ``classify_de_{prec,recall,f1}{s}``; without
        mask: ``classify_topk_{auroc,ap,precision}_{delta,pval}_{k}``. DE calls use BH over all
        genes; masks select genes afterwards (as the reference does).
    """
    xa, ya = _checked_pair(pred, true)
    ctrl = _as_cells(control, "control", 2)
    _same_genes(("pred", xa), ("control", ctrl))
    ctrl_mean = ctrl.mean(axis=0)
    centroid_mean = _as_vector_or_mean(centroid, "centroid")
    _same_genes(("pred", xa), ("centroid", centroid_mean))
    ks = _check_ks(ks)

    pred_de = de_test(xa, ctrl)
    if true_de is None:
        true_de = de_test(ya, ctrl)
    elif true_de.mean_change.shape != (xa.shape[1],):
        raise MetricInputError(
            f"true_de covers {true_de.mean_change.shape[0]} genes, the cells {xa.shape[1]}; "
            "pass de_test(true, control) for the same genes."
        )
    dx, dy = xa.mean(axis=0), ya.mean(axis=0)
    w1 = _w1_per_gene(xa, ya)  # per gene, so every mask averages a subset

    out: dict[str, float] = {}
    for suffix, genes in gene_masks(xa.shape[1], markers, hvg_rank).items():
        xs, ys = xa[:, genes], ya[:, genes]
        out[f"mmd{suffix}"], out[f"ed{suffix}"] = _mmd_and_energy(xs, ys)
        out[f"w1_eltwise{suffix}"] = float(w1[genes].mean())
        out[f"rmse_m{suffix}"] = float(np.sqrt(np.mean((dx[genes] - dy[genes]) ** 2)))
        out[f"pearson_de{suffix}"] = _pearson(
            dx[genes] - ctrl_mean[genes], dy[genes] - ctrl_mean[genes]
        )
        out[f"pearson_systema{suffix}"] = _pearson(
            dx[genes] - centroid_mean[genes], dy[genes] - centroid_mean[genes]
        )
        for name, value in _binary_de_scores(pred_de.signs, true_de.signs, genes).items():
            out[f"{name}{suffix}"] = value
    out.update(_topk_scores(pred_de, true_de, ks))
    return out
