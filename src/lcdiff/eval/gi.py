"""Genetic-interaction (GI) scores of double perturbations, after Norman et al. (2019).

Follows ``lcd-evaluation.md`` §4. For a double (a, b):

1. undo log1p (``expm1``) and z-score every cell with the control's per-gene mean and standard
   deviation (a zero standard deviation is replaced by 1);
2. δ_e = mean z-score of condition e minus that of control, on the *GI genes* (mean normalized
   expression > 0.5 over the cells considered; all genes if fewer than 20 % pass);
3. Theil–Sen regression without intercept, δ_ab ≈ c_a δ_a + c_b δ_b;
4. scores: ``mag`` = √(c_a² + c_b²), distance correlations ``dcor`` ([δ_a, δ_b] vs δ_ab),
   ``dcor_singles``, ``dcor_a``, ``dcor_b``, ``ts_linear_dcor`` (fit vs δ_ab), ``corr_fit``
   (Pearson of fit vs δ_ab), ``dominance`` = log10(|c_a| / |c_b|) and
   ``dcor_ratio`` = min(dcor_a, dcor_b) / max(dcor_a, dcor_b).

:func:`classify_gi` turns scores into interaction types with thresholds;
:func:`calibrate_gi_thresholds` derives thresholds from a labelled reference table (Norman's
Table S9) as §4.3 describes, and :func:`quantile_gi_thresholds` is a documented fallback when no
reference table is available.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from lcdiff.errors import MetricInputError
from lcdiff.eval.metrics import _as_cells, _pearson, _same_genes

#: Interaction type → (score it reads, bounds it needs: "min" means score ≥ min, "max" ≤ max).
GI_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "synergy": ("mag", ("min",)),
    "additive": ("mag", ("min", "max")),
    "suppression": ("mag", ("max",)),
    "neomorphism": ("ts_linear_dcor", ("max",)),
    "epistasis": ("dcor_ratio", ("max",)),
    "redundancy": ("dcor", ("min",)),
}
#: GI genes: mean normalized (expm1) expression above this value...
GI_MIN_MEAN = 0.5
#: ...unless fewer than this fraction of genes pass, in which case all genes are used.
GI_MIN_FRACTION = 0.2


# --- distance correlation ------------------------------------------------------------------
def _centred_distances(v: np.ndarray) -> np.ndarray:
    v = v.reshape(len(v), -1)
    dist = np.sqrt(np.maximum(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1), 0.0))
    return dist - dist.mean(0) - dist.mean(1)[:, None] + dist.mean()


def distance_correlation(x, y) -> float:
    """Distance correlation of Székely et al. (V-statistic), in [0, 1].

    dCor = dCov(x, y) / sqrt(dVar(x) · dVar(y)) with dCov² = mean(A ∘ B) of the double-centred
    Euclidean distance matrices. 0 when either variable is constant.

    Parameters
    ----------
    x : array [n] or [n, p]
    y : array [n] or [n, q]
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise MetricInputError(
            f"distance_correlation needs two samples of equal length ≥ 2; got {len(x)} and "
            f"{len(y)}."
        )
    a, b = _centred_distances(x), _centred_distances(y)
    dcov2, dvar_x2, dvar_y2 = (a * b).mean(), (a * a).mean(), (b * b).mean()
    denom = np.sqrt(dvar_x2 * dvar_y2)
    if denom <= 0:
        return 0.0
    return float(np.sqrt(max(dcov2, 0.0) / denom))


# --- GI genes and mean changes -------------------------------------------------------------
def gi_gene_mask(
    cell_sets: Sequence, min_mean: float = GI_MIN_MEAN, min_fraction: float = GI_MIN_FRACTION
) -> np.ndarray:
    """Genes used for GI scores: mean expm1 expression over all given cells > ``min_mean``.

    Falls back to all genes when fewer than ``min_fraction`` of the genes pass.

    Parameters
    ----------
    cell_sets : sequence of arrays [n_i, genes]
        log1p-normalized cells of every condition considered (e.g. all conditions of a screen).

    Returns
    -------
    array [genes] of bool
    """
    if len(cell_sets) == 0:
        raise MetricInputError("gi_gene_mask needs at least one set of cells.")
    mats = [_as_cells(c, f"cell_sets[{i}]") for i, c in enumerate(cell_sets)]
    _same_genes(*((f"cell_sets[{i}]", m) for i, m in enumerate(mats)))
    total = sum(np.expm1(m).sum(axis=0) for m in mats)
    mean = total / sum(m.shape[0] for m in mats)
    mask = mean > min_mean
    if mask.sum() < min_fraction * mask.size:
        return np.ones_like(mask)
    return mask


def _gene_index(gi_genes, n_genes: int) -> np.ndarray:
    idx = np.asarray(gi_genes)
    if idx.dtype == bool:
        if idx.shape != (n_genes,):
            raise MetricInputError(
                f"A boolean gi_genes mask needs one entry per gene ({n_genes}); got {idx.shape}."
            )
        idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64).ravel()
    if idx.size < 3 or idx.min() < 0 or idx.max() >= n_genes:
        raise MetricInputError(
            f"gi_genes must select at least 3 genes by index in [0, {n_genes}); got "
            f"{idx.size} index(es)."
        )
    return idx


def gi_deltas(double, single_a, single_b, control, gi_genes=None):
    """Mean z-score changes (δ_a, δ_b, δ_ab) on the GI genes (§4.1 steps 1–2).

    Parameters
    ----------
    double, single_a, single_b : arrays [n_e, genes]
        log1p-normalized cells of the double and of its two singles.
    control : array [n_ctrl, genes]
        log1p-normalized control cells (z-score reference).
    gi_genes : boolean array [genes] or column indices, optional
        Default: :func:`gi_gene_mask` over the four given sets of cells.

    Returns
    -------
    tuple of arrays [n_gi_genes]
        ``(delta_a, delta_b, delta_ab)``.
    """
    names = ("double", "single_a", "single_b", "control")
    mats = [
        _as_cells(m, n, 2 if n == "control" else 1)
        for m, n in zip((double, single_a, single_b, control), names, strict=True)
    ]
    _same_genes(*zip(names, mats, strict=True))
    if gi_genes is None:
        gi_genes = gi_gene_mask(mats)
    genes = _gene_index(gi_genes, mats[0].shape[1])
    expr = [np.expm1(m[:, genes]) for m in mats]
    ctrl = expr[3]
    ctrl_mean, ctrl_std = ctrl.mean(axis=0), ctrl.std(axis=0)
    ctrl_std = np.where(np.isclose(ctrl_std, 0.0), 1.0, ctrl_std)
    mean_z = [((e - ctrl_mean) / ctrl_std).mean(axis=0) for e in expr]
    delta_ab, delta_a, delta_b = (mz - mean_z[3] for mz in mean_z[:3])
    return delta_a, delta_b, delta_ab


def gi_scores_from_deltas(delta_a, delta_b, delta_ab) -> dict[str, float]:
    """GI scores (§4.1 steps 3–4) from the three mean-change vectors.

    Parameters
    ----------
    delta_a, delta_b, delta_ab : arrays [genes]

    Returns
    -------
    dict
        ``c_a``, ``c_b``, ``mag``, ``dcor``, ``dcor_singles``, ``dcor_a``, ``dcor_b``,
        ``ts_linear_dcor``, ``corr_fit``, ``dominance``, ``dcor_ratio``.
    """
    from sklearn.linear_model import TheilSenRegressor

    da, db, dab = (np.asarray(v, dtype=np.float64).ravel() for v in (delta_a, delta_b, delta_ab))
    if not (da.size == db.size == dab.size) or da.size < 3:
        raise MetricInputError(
            f"delta vectors must have equal length ≥ 3; got {da.size}, {db.size}, {dab.size}."
        )
    if not all(np.isfinite(v).all() for v in (da, db, dab)):
        raise MetricInputError("delta vectors contain NaN or inf; check the input cells.")
    singles = np.column_stack([da, db])
    fit = TheilSenRegressor(
        fit_intercept=False, random_state=1000, max_subpopulation=int(1e5), max_iter=1000
    ).fit(singles, dab)
    c_a, c_b = (float(c) for c in fit.coef_)
    fitted = fit.predict(singles)
    dcor_a, dcor_b = distance_correlation(da, dab), distance_correlation(db, dab)
    with np.errstate(divide="ignore", invalid="ignore"):
        dominance = float(np.log10(np.abs(c_a) / np.abs(c_b)))
        dcor_ratio = float(np.float64(min(dcor_a, dcor_b)) / max(dcor_a, dcor_b))
    return {
        "c_a": c_a,
        "c_b": c_b,
        "mag": float(np.hypot(c_a, c_b)),
        "dcor": distance_correlation(singles, dab),
        "dcor_singles": distance_correlation(da, db),
        "dcor_a": dcor_a,
        "dcor_b": dcor_b,
        "ts_linear_dcor": distance_correlation(fitted, dab),
        "corr_fit": _pearson(fitted, dab),
        "dominance": dominance,
        "dcor_ratio": dcor_ratio,
    }


def gi_scores(double, single_a, single_b, control, gi_genes=None) -> dict[str, float]:
    """Norman-style GI scores of a double perturbation from cells (§4.1).

    Parameters
    ----------
    double : array [n_ab, genes]
        log1p-normalized cells of the double (a, b).
    single_a, single_b : arrays [n_a, genes], [n_b, genes]
        Cells of the two singles.
    control : array [n_ctrl, genes]
        Control cells (the z-score reference).
    gi_genes : boolean array [genes] or column indices, optional
        Genes to score on; default :func:`gi_gene_mask` of the four given sets of cells. For the
        paper's protocol, compute it once over all conditions of the screen and pass it.

    Returns
    -------
    dict[str, float]
        See :func:`gi_scores_from_deltas`. ``dominance`` is ±inf when a coefficient is 0;
        ``dcor_ratio`` NaN when both single-gene distance correlations are 0.
    """
    return gi_scores_from_deltas(*gi_deltas(double, single_a, single_b, control, gi_genes))


# --- interaction types ---------------------------------------------------------------------
def _check_thresholds(thresholds: Mapping) -> None:
    if not isinstance(thresholds, Mapping):
        raise MetricInputError(
            "thresholds must be a dict like {'synergy': {'min': 1.1}, 'additive': {'min': 0.8, "
            f"'max': 1.1}}, ...}}; got {type(thresholds).__name__}."
        )
    unknown = sorted(set(thresholds) - set(GI_TYPES))
    if unknown:
        raise MetricInputError(
            f"Unknown GI type(s) {unknown} in thresholds; known types: {sorted(GI_TYPES)}."
        )


def classify_gi(scores: Mapping[str, float], thresholds: Mapping) -> set[str]:
    """Interaction types of one double: every type whose score lies within its bounds (§4.2).

    ``synergy``: mag ≥ min; ``additive``: min ≤ mag ≤ max; ``suppression``: mag ≤ max;
    ``neomorphism``: ts_linear_dcor ≤ max; ``epistasis``: dcor_ratio ≤ max; ``redundancy``:
    dcor ≥ min. A type whose needed bound is missing (or None) is never assigned; a NaN score
    never satisfies a bound. A double may carry several labels.

    Parameters
    ----------
    scores : dict
        Output of :func:`gi_scores`.
    thresholds : dict
        ``{type: {"min": float, "max": float}}`` (only the bounds a type needs are read).

    Returns
    -------
    set of str
    """
    _check_thresholds(thresholds)
    labels = set()
    for gi_type, (score_name, bounds) in GI_TYPES.items():
        limits = thresholds.get(gi_type) or {}
        if any(limits.get(b) is None for b in bounds):
            continue
        if score_name not in scores:
            raise MetricInputError(
                f"scores lack {score_name!r} (needed for {gi_type}); pass the output of gi_scores."
            )
        value = float(scores[score_name])
        if "min" in bounds and not value >= float(limits["min"]):
            continue
        if "max" in bounds and not value <= float(limits["max"]):
            continue
        labels.add(gi_type)
    return labels


def _consistent(thresholds: dict[str, dict[str, float | None]]) -> dict:
    """synergy.min = additive.max = the larger; suppression.max = additive.min = the smaller."""

    def tie(first, second, pick):
        a, b = thresholds[first[0]].get(first[1]), thresholds[second[0]].get(second[1])
        values = [v for v in (a, b) if v is not None]
        if values:
            thresholds[first[0]][first[1]] = thresholds[second[0]][second[1]] = pick(values)

    tie(("synergy", "min"), ("additive", "max"), max)
    tie(("suppression", "max"), ("additive", "min"), min)
    return thresholds


def calibrate_gi_thresholds(
    scores: Sequence[Mapping[str, float]],
    reference_scores: Sequence[Mapping[str, float]],
    reference_labels: Sequence[set[str]],
    low: float = 0.05,
    high: float = 0.95,
) -> dict[str, dict[str, float | None]]:
    """Thresholds for :func:`classify_gi` transferred from a labelled reference (§4.3).

    For each type and each bound it needs: the ``low`` ("min") or ``high`` ("max") quantile of the
    reference score over the reference doubles labelled with that type; the fraction of *all*
    reference doubles with a score ≤ that value; the same quantile of ``scores`` (all our
    doubles), rounded to 2 decimals. Then synergy.min = additive.max = their maximum and
    suppression.max = additive.min = their minimum. A type without labelled reference doubles
    gets ``None`` bounds (never assigned).

    Parameters
    ----------
    scores : sequence of dict
        :func:`gi_scores` of every double in our data.
    reference_scores : sequence of dict
        Reference scores (e.g. Norman Table S9, pairs ordered alphabetically).
    reference_labels : sequence of set of str
        Reference types of each reference double (Norman's potentiation and strong-synergy
        classes merged into ``"synergy"``).
    """
    if len(reference_scores) != len(reference_labels) or not reference_scores or not scores:
        raise MetricInputError(
            "Need non-empty scores, and one label set per reference double "
            f"(got {len(reference_scores)} reference scores, {len(reference_labels)} label sets)."
        )
    thresholds: dict[str, dict[str, float | None]] = {}
    for gi_type, (score_name, bounds) in GI_TYPES.items():
        ref_all = np.array([float(s[score_name]) for s in reference_scores])
        ours = np.array([float(s[score_name]) for s in scores])
        ref_typed = ref_all[[gi_type in lab for lab in reference_labels]]
        ref_all, ours, ref_typed = (v[np.isfinite(v)] for v in (ref_all, ours, ref_typed))
        thresholds[gi_type] = {}
        for bound in bounds:
            if ref_typed.size == 0 or ours.size == 0:
                thresholds[gi_type][bound] = None
                continue
            value = np.quantile(ref_typed, low if bound == "min" else high)
            position = stats.percentileofscore(ref_all, value, kind="weak") / 100.0
            thresholds[gi_type][bound] = round(float(np.quantile(ours, position)), 2)
    return _consistent(thresholds)


def quantile_gi_thresholds(
    scores: Sequence[Mapping[str, float]],
    quantiles: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Fallback thresholds when no labelled reference table is at hand: quantiles of our scores.

    Each bound is the given quantile of the type's score over ``scores``, rounded to 2 decimals,
    then made consistent as in :func:`calibrate_gi_thresholds`. The default quantiles are a
    *convention of ours*, not the paper's values: synergy mag ≥ q0.8, additive q0.2 ≤ mag ≤ q0.8,
    suppression mag ≤ q0.2, neomorphism ts_linear_dcor ≤ q0.1, epistasis dcor_ratio ≤ q0.1,
    redundancy dcor ≥ q0.9. Use :func:`calibrate_gi_thresholds` with Norman's Table S9 for the
    paper's protocol.

    Parameters
    ----------
    scores : sequence of dict
        :func:`gi_scores` of every double.
    quantiles : dict, optional
        ``{type: {"min": q, "max": q}}`` overriding the defaults.
    """
    default = {
        "synergy": {"min": 0.8},
        "additive": {"min": 0.2, "max": 0.8},
        "suppression": {"max": 0.2},
        "neomorphism": {"max": 0.1},
        "epistasis": {"max": 0.1},
        "redundancy": {"min": 0.9},
    }
    quantiles = {**default, **(quantiles or {})}
    _check_thresholds(quantiles)
    if not scores:
        raise MetricInputError("quantile_gi_thresholds needs the scores of at least one double.")
    thresholds: dict[str, dict[str, float | None]] = {}
    for gi_type, (score_name, bounds) in GI_TYPES.items():
        values = np.array([float(s[score_name]) for s in scores])
        values = values[np.isfinite(values)]
        thresholds[gi_type] = {
            b: (
                round(float(np.quantile(values, quantiles[gi_type][b])), 2)
                if values.size and quantiles[gi_type].get(b) is not None
                else None
            )
            for b in bounds
        }
    return _consistent(thresholds)
