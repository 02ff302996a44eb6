"""Preprocessing of a raw screen into a prepared screen (``lc.pp.prepare``).

The steps follow the reference pipeline (lcd-evaluation §2.1 and §2.6):

1. validate (typed errors, canonical labels, unique gene names);
2. cell and gene QC: cells with fewer than ``min_genes_per_cell`` detected genes, genes detected in
   fewer than ``min_cells_per_gene`` cells are removed;
3. a "selection" log1p layer: counts scaled to the median library size of control cells, then
   log1p; used for gene selection and marker genes only;
4. perturbation QC: perturbations whose targets were removed, or with fewer than
   ``min_cells_per_perturbation`` cells, are dropped;
5. gene selection: genes sorted by (targeted in a test perturbation, targeted in a training
   perturbation, marker count over training perturbations, Seurat normalized dispersion on control
   plus training single-perturbation cells), first ``n_genes`` kept; cells re-filtered on them;
6. top marker genes per perturbation (Wilcoxon vs control, ranked by absolute score);
7. ``X`` = log1p counts per 10k over the selected genes, ``layers["counts"]`` the raw counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from lcdiff.data.labels import canonical_label, parse_label
from lcdiff.data.normalize import log1p_cp10k
from lcdiff.data.schema import (
    PERTURBATION_KEY,
    drop_small_conditions,
    drop_unknown_targets,
    label_kind,
    set_label_columns,
    validate_with_report,
)
from lcdiff.errors import EmptyScreenError, GeneSelectionError, ScreenError

# Reference thresholds (lcd-evaluation §2.1); the defaults shrink them for small screens.
AUTO_N_GENES = 1000  # the paper's gene count (lcd-model §10)
REFERENCE_MIN_GENES_PER_CELL = 20
REFERENCE_MIN_CELLS_PER_GENE = 200
SELECTION_LAYER = "log1p_selection"
GENE_SELECTION_ORDER = (
    "perturbed in test",
    "perturbed in training",
    "marker count over training perturbations",
    "seurat dispersions_norm on control + training singles",
)


def prepare(
    adata: AnnData,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = "ctrl",
    n_genes: int | Literal["auto"] | None = "auto",
    layer: str | None = None,
    test_labels: Iterable[str] | None = None,
    min_genes_per_cell: int | None = None,
    min_cells_per_gene: int | None = None,
    min_cells_per_perturbation: int = 100,
    n_markers: int = 20,
    strict: bool = False,
    drop_unselected_perturbations: bool = False,
) -> AnnData:
    """Validate, filter, select genes and normalize a raw screen.

    Parameters
    ----------
    adata
        Raw screen, ``[n_cells, n_genes_total]`` UMI counts in ``X`` or ``layers[layer]``.
    perturbation_key
        obs column with the perturbation labels.
    control
        Label of control cells.
    n_genes
        Number of genes to keep. ``"auto"`` (default) keeps the paper's 1000 genes, or every gene
        passing QC when fewer pass; ``None`` keeps every gene passing QC. An explicit number must
        be at least the number of perturbed genes and at most the number of genes passing QC.
    layer
        Layer with raw counts (``None``: ``X``).
    test_labels
        Perturbations that will be held out. Their targets are ranked first; marker counts and
        dispersions use training perturbations only, so the gene choice does not look at test
        cells. ``None``: every perturbation counts as training.
    min_genes_per_cell
        Cells with fewer detected genes are removed (before and after gene selection). ``None``:
        the reference value 20, lowered to 5 % of the genes for screens with fewer than 400
        (selected) genes.
    min_cells_per_gene
        Genes detected in fewer cells are removed. ``None``: the reference value 200, lowered to
        1 % of the cells for screens with fewer than 20,000 cells.
    min_cells_per_perturbation
        Perturbations with fewer cells are dropped (the control needs as many).
    n_markers
        Number of marker genes per perturbation (0: none).
    strict
        Raise instead of dropping perturbations that target unmeasured genes.
    drop_unselected_perturbations
        If ``n_genes`` is smaller than the number of perturbed genes, keep the first ``n_genes``
        and drop perturbations whose targets were not selected (the reference behaviour on
        Replogle). Default: raise :class:`GeneSelectionError`.

    Returns
    -------
    A new AnnData following the prepared-screen contract (:mod:`lcdiff.data.screen`):
    ``X`` ``[n_cells, n_genes]`` float32 log1p CP10k, ``layers["counts"]``, ``obs["perturbation"]``,
    ``obs["n_targets"]``, ``var["perturbed"]`` (perturbed genes first), ``var["hvg_rank"]``,
    ``var["marker_count"]``, ``var["dispersions_norm"]``, and ``uns["lcdiff"]`` recording every
    choice and the markers (label → list of gene names). The input is not modified.

    Raises
    ------
    lcdiff.errors.ScreenError
        The subclasses listed in :func:`lcdiff.data.schema.validate`, and
        :class:`GeneSelectionError` for an impossible ``n_genes``.
    """
    n_cells_in, n_genes_in = getattr(adata, "n_obs", 0), getattr(adata, "n_vars", 0)
    _check_positive("min_cells_per_perturbation", min_cells_per_perturbation, minimum=2)
    _check_positive("n_markers", n_markers, minimum=0)
    if (
        n_genes != "auto"
        and n_genes is not None
        and (isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1)
    ):
        raise GeneSelectionError(
            f"n_genes must be a positive integer, 'auto' or None, got {n_genes!r}."
        )
    screen, report = validate_with_report(
        adata,
        perturbation_key,
        control,
        layer=layer,
        min_cells=min_cells_per_perturbation,
        strict=strict,
    )
    n_cells_validated = screen.n_obs
    n_budget = screen.n_vars if n_genes is None else min(_as_number(n_genes), screen.n_vars)
    if min_genes_per_cell is None:
        min_genes_per_cell = auto_min_genes_per_cell(n_budget)
    if min_cells_per_gene is None:
        min_cells_per_gene = auto_min_cells_per_gene(screen.n_obs)
    _check_positive("min_genes_per_cell", min_genes_per_cell, minimum=0)
    _check_positive("min_cells_per_gene", min_cells_per_gene, minimum=0)

    # Cell and gene QC, then perturbation QC on what remains.
    screen = filter_cells_by_detected_genes(screen, min_genes_per_cell)
    screen = filter_genes_by_detected_cells(screen, min_cells_per_gene)
    qc_reason = f"were removed by gene QC (detected in < {min_cells_per_gene} cells)"
    screen, qc_removed_targets, qc_removed_labels = drop_unknown_targets(
        screen, control, reason=qc_reason
    )
    sizes_after_qc = _condition_sizes(screen)
    screen, small_after_qc = drop_small_conditions(screen, control, min_cells_per_perturbation)
    n_cells_after_qc, n_genes_after_qc = screen.n_obs, screen.n_vars
    screen.layers[SELECTION_LAYER] = selection_log1p(screen.X, _is_control(screen, control))

    # Which perturbations are "test" for gene selection.
    labels_present = set(screen.obs[PERTURBATION_KEY].astype(str))
    test_set = _resolve_test_labels(test_labels, control, labels_present)
    train_set = labels_present - test_set - {control}

    genes = screen.var_names.to_numpy().astype(str)
    test_genes = {g for lab in test_set for g in parse_label(lab, control)}
    train_genes = {g for lab in train_set for g in parse_label(lab, control)}
    n_perturbed = len(test_genes | train_genes)
    n_select = _resolve_n_genes(n_genes, n_perturbed, screen.n_vars, drop_unselected_perturbations)

    ranking = wilcoxon_ranking(screen, control, sorted(labels_present - {control}), n_markers)
    marker_count = np.zeros(screen.n_vars, dtype=np.int64)
    gene_index = {g: i for i, g in enumerate(genes)}
    for lab in train_set:
        for g in ranking.get(lab, [])[:n_markers]:
            marker_count[gene_index[g]] += 1
    dispersion = seurat_dispersions(screen, control, train_set)
    in_test = np.isin(genes, sorted(test_genes))
    in_train = np.isin(genes, sorted(train_genes))
    order = selection_order(in_test, in_train, marker_count, dispersion)
    selected = order[:n_select]

    out = screen[:, selected].copy()
    out.var["perturbed"] = (in_test | in_train)[selected]
    out.var["marker_count"] = marker_count[selected]
    out.var["dispersions_norm"] = dispersion[selected].astype(np.float64)
    out.var["hvg_rank"] = hvg_rank(dispersion[selected])

    # Re-filter cells on the selected genes, drop perturbations that lost their targets or cells.
    out = filter_cells_by_detected_genes(out, min_genes_per_cell, stage="among the selected genes")
    out, unselected_targets, unselected_labels = drop_unknown_targets(
        out, control, reason=f"are not among the {n_select} selected genes"
    )
    sizes_after_selection = _condition_sizes(out)
    out, small_after_selection = drop_small_conditions(out, control, min_cells_per_perturbation)
    out_labels = sorted(set(out.obs[PERTURBATION_KEY].astype(str)) - {control})
    if out.n_obs != screen.n_obs:  # the cells changed: rank again (exact, as the reference)
        ranking = wilcoxon_ranking(out, control, out_labels, n_markers)
    markers = _top_markers(ranking, out_labels, set(out.var_names), n_markers)

    counts = out.X
    out.layers["counts"] = counts
    out.X = log1p_cp10k(counts)
    del out.layers[SELECTION_LAYER]
    set_label_columns(out, control)
    out.uns["lcdiff"] = {
        "control": control,
        "perturbation_key": PERTURBATION_KEY,
        "source_perturbation_key": perturbation_key,
        "counts_source": "X" if layer is None else f"layers/{layer}",
        "normalization": "log1p counts per 10k over the selected genes (X); raw counts in "
        "layers['counts']",
        "n_genes_requested": str(n_genes),
        "n_genes": int(out.n_vars),
        "n_perturbed_genes": int(out.var["perturbed"].sum()),
        "gene_selection_order": list(GENE_SELECTION_ORDER),
        "test_labels": sorted(test_set),
        "min_genes_per_cell": int(min_genes_per_cell),
        "min_cells_per_gene": int(min_cells_per_gene),
        "min_cells_per_perturbation": int(min_cells_per_perturbation),
        "n_markers": int(n_markers),
        "markers": markers,
        "strict": bool(strict),
        "cells": {
            "input": int(n_cells_in),
            "after_validation": int(n_cells_validated),
            "after_qc": int(n_cells_after_qc),
            "output": int(out.n_obs),
            "all_zero_dropped": int(report.n_all_zero_cells),
        },
        "genes": {
            "input": int(n_genes_in),
            "after_qc": int(n_genes_after_qc),
            "output": int(out.n_vars),
        },
        "renamed_duplicate_genes": list(report.renamed_duplicate_genes),
        "unknown_target_genes": list(report.unknown_genes),
        "dropped_perturbations": {
            "unknown_targets": list(report.dropped_unknown_conditions),
            "too_few_cells": sorted(
                {*report.dropped_small_conditions, *small_after_qc, *small_after_selection}
            ),
            "targets_removed_by_gene_qc": list(qc_removed_targets),
            "targets_not_selected": list(unselected_labels),
        },
        "unselected_target_genes": list(unselected_targets),
    }
    cells = {
        **report.small_condition_cells,
        **{lab: sizes_after_qc[lab] for lab in small_after_qc},
        **{lab: sizes_after_selection[lab] for lab in small_after_selection},
    }
    out.uns["lcdiff"]["labels"] = sorted(set(out.obs[PERTURBATION_KEY].astype(str)))
    out.uns["lcdiff"]["dropped_labels"] = dropped_label_reasons(
        control,
        unknown=report.dropped_unknown_conditions,
        qc_removed=qc_removed_labels,
        unselected=unselected_labels,
        small=cells,
        min_cells=min_cells_per_perturbation,
        min_cells_per_gene=min_cells_per_gene,
        n_selected=n_select,
    )
    return out


def _condition_sizes(adata: AnnData) -> dict[str, int]:
    return {
        str(k): int(v) for k, v in adata.obs[PERTURBATION_KEY].astype(str).value_counts().items()
    }


def dropped_label_reasons(
    control: str,
    unknown: Iterable[str] = (),
    qc_removed: Iterable[str] = (),
    unselected: Iterable[str] = (),
    small: dict[str, int] | None = None,
    min_cells: int = 100,
    min_cells_per_gene: int = 0,
    n_selected: int = 0,
) -> dict[str, str]:
    """Why each label of the input was dropped by :func:`prepare` (label → reason).

    Reasons are phrased so that they read the same to Python and command-line users (the
    thresholds are given as numbers, not as argument names).
    """
    out: dict[str, str] = {}
    for label in unknown:
        kind = label_kind(label, control)
        if kind == "not a perturbation":
            out[label] = "not a perturbation (cells without an assigned guide)"
        elif kind == "control-like":
            out[label] = f"looks like a control label, but the control label is {control!r}"
        else:
            out[label] = "targets a gene that is not measured"
    for label in qc_removed:
        out[label] = f"targets a gene removed by gene QC (detected in < {min_cells_per_gene} cells)"
    for label in unselected:
        out[label] = f"targets a gene outside the {n_selected} selected genes"
    for label, n in (small or {}).items():
        out[label] = f"too few cells ({n} < {min_cells})"
    return dict(sorted(out.items()))


# --- thresholds -------------------------------------------------------------------------------
def auto_min_genes_per_cell(n_genes: int) -> int:
    """The reference 20 detected genes per cell, or 5 % of ``n_genes`` if that is smaller."""
    return int(min(REFERENCE_MIN_GENES_PER_CELL, max(1, math.ceil(0.05 * n_genes))))


def auto_min_cells_per_gene(n_cells: int) -> int:
    """The reference 200 cells per gene, or 1 % of ``n_cells`` if that is smaller."""
    return int(min(REFERENCE_MIN_CELLS_PER_GENE, max(1, math.ceil(0.01 * n_cells))))


def _check_positive(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ScreenError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _as_number(n_genes) -> int:
    return AUTO_N_GENES if n_genes == "auto" else int(n_genes)


def _resolve_n_genes(n_genes, n_perturbed: int, n_available: int, allow_drop: bool) -> int:
    if n_genes is None:
        return n_available
    if n_genes == "auto":
        # The paper's 1000 genes, or every gene on a smaller screen.
        return max(min(AUTO_N_GENES, n_available), min(n_perturbed, n_available))
    if n_genes > n_available:
        raise GeneSelectionError(
            f"n_genes={n_genes} but only {n_available} genes pass QC; pass n_genes <= "
            f"{n_available}, or n_genes=None to keep all of them.",
            cli=f"--n-genes {n_genes} but only {n_available} genes pass QC; pass --n-genes "
            f"{n_available} (or more, to keep all of them).",
        )
    if n_genes < n_perturbed and not allow_drop:
        problem = (
            f"is smaller than the {n_perturbed} perturbed genes; every perturbed gene must be "
            "modelled."
        )
        raise GeneSelectionError(
            f"n_genes={n_genes} {problem} Pass n_genes >= {n_perturbed}, or "
            "drop_unselected_perturbations=True to drop perturbations whose targets do not fit.",
            cli=f"--n-genes {n_genes} {problem} Pass --n-genes {n_perturbed} or more.",
        )
    return int(n_genes)


def _resolve_test_labels(test_labels, control: str, present: set[str]) -> set[str]:
    if test_labels is None:
        return set()
    if isinstance(test_labels, str):
        test_labels = [test_labels]
    wanted = {canonical_label(str(lab), control) for lab in test_labels} - {control}
    absent = sorted(wanted - present)
    if absent:
        warnings.warn(
            f"{len(absent)} test_labels have no cells after QC and are ignored: {absent[:10]}",
            UserWarning,
            stacklevel=3,
        )
    return wanted & present


# --- QC ---------------------------------------------------------------------------------------
def _detected_per_cell(x) -> np.ndarray:
    if sp.issparse(x):
        return np.asarray((x > 0).sum(axis=1)).ravel()
    return np.count_nonzero(np.asarray(x) > 0, axis=1)


def _detected_per_gene(x) -> np.ndarray:
    if sp.issparse(x):
        return np.asarray((x > 0).sum(axis=0)).ravel()
    return np.count_nonzero(np.asarray(x) > 0, axis=0)


def filter_cells_by_detected_genes(
    adata: AnnData, min_genes: int, stage: str = "detected"
) -> AnnData:
    """Keep cells with at least ``min_genes`` genes with non-zero counts in ``X``."""
    keep = _detected_per_cell(adata.X) >= min_genes
    if not keep.any():
        raise EmptyScreenError(
            f"No cell has {min_genes} or more genes {stage}; lower min_genes_per_cell."
        )
    return adata if keep.all() else adata[keep].copy()


def filter_genes_by_detected_cells(adata: AnnData, min_cells: int) -> AnnData:
    """Keep genes with non-zero counts in at least ``min_cells`` cells."""
    keep = _detected_per_gene(adata.X) >= min_cells
    if not keep.any():
        raise EmptyScreenError(
            f"No gene is detected in {min_cells} or more cells; lower min_cells_per_gene."
        )
    return adata if keep.all() else adata[:, keep].copy()


def qc_metrics(adata: AnnData, mito_prefix: str = "MT-") -> pd.DataFrame:
    """Per-cell ``total_counts``, ``n_genes_by_counts`` and ``pct_counts_mito`` of ``X``.

    Mitochondrial genes are those whose name starts with ``mito_prefix`` (case-insensitive).
    """
    x = adata.X
    total = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    mito = adata.var_names.str.upper().str.startswith(mito_prefix.upper())
    mito_total = (
        np.asarray(x[:, mito].sum(axis=1)).ravel().astype(np.float64)
        if mito.any()
        else np.zeros(adata.n_obs)
    )
    pct = np.divide(100.0 * mito_total, total, out=np.zeros_like(total), where=total > 0)
    return pd.DataFrame(
        {
            "total_counts": total,
            "n_genes_by_counts": _detected_per_cell(x),
            "pct_counts_mito": pct,
        },
        index=adata.obs_names,
    )


def dataset_qc(
    adata: AnnData,
    max_pct_mito: float | None = None,
    min_total_counts: float | None = None,
    max_total_counts: float | None = None,
    min_genes_by_counts: float | None = None,
    max_genes_by_counts: float | None = None,
) -> AnnData:
    """Keep cells strictly inside the given bounds (the reference's dataset-specific QC).

    Adds the :func:`qc_metrics` columns to obs of the returned copy.
    """
    metrics = qc_metrics(adata)
    keep = np.ones(adata.n_obs, dtype=bool)
    if max_pct_mito is not None:
        keep &= metrics["pct_counts_mito"].to_numpy() < max_pct_mito
    if min_total_counts is not None:
        keep &= metrics["total_counts"].to_numpy() > min_total_counts
    if max_total_counts is not None:
        keep &= metrics["total_counts"].to_numpy() < max_total_counts
    if min_genes_by_counts is not None:
        keep &= metrics["n_genes_by_counts"].to_numpy() > min_genes_by_counts
    if max_genes_by_counts is not None:
        keep &= metrics["n_genes_by_counts"].to_numpy() < max_genes_by_counts
    out = adata[keep].copy()
    for column in metrics.columns:
        out.obs[column] = metrics[column].to_numpy()[keep]
    return out


# --- gene selection ---------------------------------------------------------------------------
def _is_control(adata: AnnData, control: str) -> np.ndarray:
    return (adata.obs[PERTURBATION_KEY].astype(str) == control).to_numpy()


def selection_log1p(counts, is_control: np.ndarray):
    """log1p of counts scaled to the median control library size (all genes given).

    Returns a CSR matrix for sparse input, a dense float32 array otherwise.
    """
    library = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    target = float(np.median(library[is_control]))
    scale = np.divide(target, library, out=np.zeros_like(library), where=library > 0)
    if sp.issparse(counts):
        scaled = sp.csr_matrix(sp.diags(scale) @ counts, dtype=np.float32)
        scaled.data = np.log1p(scaled.data)
        return scaled
    return np.log1p(np.asarray(counts, dtype=np.float64) * scale[:, None]).astype(np.float32)


def wilcoxon_ranking(
    adata: AnnData, control: str, labels: list[str], n_markers: int
) -> dict[str, list[str]]:
    """Genes of each perturbation ranked by absolute Wilcoxon score against control.

    Same scores as ``scanpy.tl.rank_genes_groups(method="wilcoxon", reference=control,
    rankby_abs=True)`` on the selection log1p layer (no tie correction), computed faster by
    sorting the control cells once. Each perturbation is compared with the control alone and the
    per-gene scores do not depend on the other genes, so the full ranking restricted to a gene
    subset is that subset's ranking.

    Returns
    -------
    label → all gene names, largest ``|score|`` first, ties in gene order (``{}`` when
    ``n_markers`` is 0).
    """
    if n_markers == 0 or not labels:
        return {}
    scores = wilcoxon_scores(
        adata.layers[SELECTION_LAYER], adata.obs[PERTURBATION_KEY], control, labels
    )
    genes = adata.var_names.to_numpy().astype(str)
    ranking = {}
    for lab, z in scores.items():
        order = np.lexsort((np.arange(len(z)), -np.abs(z)))
        ranking[lab] = genes[order].tolist()
    return ranking


def wilcoxon_scores(
    values, groups: pd.Series, control: str, labels: list[str], chunk: int = 2000
) -> dict[str, np.ndarray]:
    """Wilcoxon rank-sum z-scores of each group against the control, per gene.

    Parameters
    ----------
    values
        ``[n_cells, n_genes]`` dense or sparse expression.
    groups
        ``[n_cells]`` group label of each cell.
    control
        The reference group.
    labels
        Groups to score.
    chunk
        Genes processed at a time (bounds memory to ``n_control × chunk`` floats).

    Returns
    -------
    label → ``[n_genes]`` z-scores, positive where the group is higher than control.
    """
    groups = groups.astype(str).to_numpy()
    ctrl_rows = np.flatnonzero(groups == control)
    rows = {lab: np.flatnonzero(groups == lab) for lab in labels}
    n_genes = values.shape[1]
    n_ref = len(ctrl_rows)
    scores = {lab: np.empty(n_genes) for lab in labels}
    for start in range(0, n_genes, chunk):
        cols = slice(start, min(start + chunk, n_genes))
        ref = np.sort(_dense64(values[ctrl_rows][:, cols]), axis=0)
        width = ref.shape[1]
        # Offsetting gene column g by g * span lays the sorted columns end to end in one sorted
        # vector, so one searchsorted call counts control values per gene. Queries are clipped
        # to just outside the control range, which leaves the counts unchanged.
        low, high = float(ref.min()), float(ref.max())
        span = high - low + 2.0
        offset = np.arange(width) * span - low
        ref_flat = (ref + offset).ravel(order="F")
        column_start = np.arange(width) * n_ref
        for lab in labels:
            grp = np.clip(_dense64(values[rows[lab]][:, cols]), low - 0.5, high + 0.5)
            query = (grp + offset).ravel(order="F")
            below = np.searchsorted(ref_flat, query, side="left")
            equal = np.searchsorted(ref_flat, query, side="right") - below
            below -= np.repeat(column_start, grp.shape[0])
            u_terms = below + 0.5 * equal
            u = u_terms.reshape(width, grp.shape[0]).sum(axis=1)
            n_grp = grp.shape[0]
            sd = np.sqrt(n_grp * n_ref * (n_grp + n_ref + 1) / 12.0)
            scores[lab][cols] = (u - n_grp * n_ref / 2.0) / sd
    return scores


def _dense64(x) -> np.ndarray:
    return (x.toarray() if sp.issparse(x) else np.asarray(x)).astype(np.float64)


def seurat_dispersions(adata: AnnData, control: str, train_labels: set[str]) -> np.ndarray:
    """Seurat normalized dispersion of each gene on control + training single perturbations.

    Computed with ``scanpy.pp.highly_variable_genes(flavor="seurat")`` on the selection log1p
    layer. Returns ``[n_genes]`` floats; NaN where undefined (e.g. a gene never detected there).
    """
    import scanpy as sc

    singles = {lab for lab in train_labels if len(parse_label(lab, control)) == 1}
    labels = adata.obs[PERTURBATION_KEY].astype(str)
    keep = labels.isin(singles | {control}).to_numpy()
    work = AnnData(X=adata.layers[SELECTION_LAYER][keep], var=pd.DataFrame(index=adata.var_names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sc.pp.highly_variable_genes(work, flavor="seurat", inplace=False)
    values = np.asarray(table["dispersions_norm"], dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)


def selection_order(
    in_test: np.ndarray, in_train: np.ndarray, marker_count: np.ndarray, dispersion: np.ndarray
) -> np.ndarray:
    """Gene indices sorted by (in_test, in_train, marker_count, dispersion) descending.

    NaN dispersions sort last; remaining ties keep the input order.
    """
    disp = np.where(np.isnan(dispersion), -np.inf, dispersion)
    # np.lexsort sorts ascending by the last key first; negate for descending, index breaks ties.
    return np.lexsort(
        (
            np.arange(len(disp)),
            -disp,
            -marker_count.astype(np.float64),
            -in_train.astype(np.int8),
            -in_test.astype(np.int8),
        )
    )


def hvg_rank(dispersion: np.ndarray) -> np.ndarray:
    """Rank of each gene by dispersion, 0 = most variable; NaN last, ties by position."""
    disp = np.where(np.isnan(dispersion), -np.inf, dispersion)
    order = np.lexsort((np.arange(len(disp)), -disp))
    rank = np.empty(len(disp), dtype=np.int64)
    rank[order] = np.arange(len(disp))
    return rank


def _top_markers(
    ranking: dict[str, list[str]], labels: list[str], genes: set[str], n_markers: int
) -> dict[str, list[str]]:
    return {
        lab: [g for g in ranking.get(lab, []) if g in genes][:n_markers]
        for lab in labels
        if n_markers > 0
    }
