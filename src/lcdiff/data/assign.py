"""Perturbation labels from gRNA counts: ``lc.pp.assign_perturbations``.

Most screens arrive as a gene count matrix plus a gRNA count matrix (cells × gRNAs, UMIs per
guide) and a table saying which gene each gRNA targets. This module turns that into the
canonical ``obs["perturbation"]`` labels the rest of lcdiff reads.

Two rules, after the usual practice (e.g. sceptre's low-MOI "maximum" rule and its high-MOI
UMI threshold):

- **low MOI** (one guide per cell expected): a cell takes the target of its top gRNA when that
  gRNA has at least ``min_umis`` UMIs *and* holds at least ``min_fraction`` of the cell's gRNA
  UMIs; otherwise it is ``"unassigned"``. A tie for the top count is ``"unassigned"`` too, even
  when the tied guides share a target: two guides with equal counts in a low-MOI cell usually
  mean a doublet or ambient guide RNA, and the rule stays easy to state.
- **high MOI** (several guides per cell): a cell takes every gRNA with at least ``min_umis``
  UMIs; its label is the canonical combination over the distinct targets (``"A+B"``). A cell
  with no such gRNA is ``"unassigned"``. ``min_fraction`` is not used.

Non-targeting gRNAs map to the control label; at high MOI they drop out of a combination, so a
cell carrying a non-targeting and an ``A`` guide is ``"A"``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from lcdiff.data.labels import DEFAULT_CONTROL, format_label, parse_label
from lcdiff.errors import (
    ConfigError,
    EmptyScreenError,
    InvalidCountsError,
    InvalidLabelError,
    MissingColumnError,
    ScreenError,
)

logger = logging.getLogger(__name__)

UNASSIGNED = "unassigned"
UNS_KEY = "assign_perturbations"
DEFAULT_NON_TARGETING = (
    "non-targeting",
    "non_targeting",
    "nontargeting",
    "NT",
    "NTC",
    "negative_control",
)

# Every cell falls into exactly one of these outcomes (the first rule it fails, or how it was
# kept); the counts go to uns and to the printed summary.
LOW_MOI_OUTCOMES = (
    "assigned_target",
    "assigned_control",
    "no_grna",
    "below_min_umis",
    "tie",
    "below_min_fraction",
)
HIGH_MOI_OUTCOMES = ("single_target", "multi_target", "control_only", "no_grna", "below_min_umis")


@dataclass(frozen=True)
class _Guides:
    """gRNA counts in CSR form plus each guide's parsed targets (``()`` = non-targeting)."""

    counts: sp.csr_matrix  # [n_cells, n_grnas]
    ids: list[str]  # [n_grnas]
    targets: list[tuple[str, ...]]  # [n_grnas]


def assign_perturbations(
    adata: AnnData,
    grna_counts="grna_counts",
    grna_targets=None,
    *,
    moi: str = "low",
    min_umis: float = 5,
    min_fraction: float = 0.5,
    control: str = DEFAULT_CONTROL,
    non_targeting: Sequence[str] = DEFAULT_NON_TARGETING,
    key_added: str = "perturbation",
    inplace: bool = False,
    verbose: bool = True,
) -> AnnData | None:
    """Label each cell with its perturbation from gRNA UMI counts.

    Parameters
    ----------
    adata
        The screen, ``n_cells`` cells (its ``X`` is not read).
    grna_counts
        gRNA UMI counts ``[n_cells, n_grnas]``: a dense or scipy-sparse matrix (rows in
        ``adata`` order), a ``pandas.DataFrame`` (index = cell names, aligned to
        ``adata.obs_names``; columns = gRNA ids), or the name of an ``adata.obsm`` entry
        holding either (default ``"grna_counts"``).
    grna_targets
        The gene each gRNA targets, ``[n_grnas]``: a sequence in column order, a mapping /
        ``pandas.Series`` from gRNA id to target (aligned by id when the counts are a DataFrame;
        with a plain matrix a Series is read in order and a dict is refused), or the name of an
        ``adata.uns`` entry holding a sequence. A target may itself be a combination
        (``"A+B"``, for dual-guide constructs). Targets listed in ``non_targeting`` (compared
        case-insensitively) or equal to ``control`` mean non-targeting.
    moi
        ``"low"`` (top gRNA must pass ``min_umis`` and ``min_fraction``; ties → unassigned) or
        ``"high"`` (every gRNA passing ``min_umis``; label = combination of distinct targets).
    min_umis
        Minimum UMIs of a gRNA in a cell for it to count (≥ 1).
    min_fraction
        Low MOI only: minimum share of the cell's gRNA UMIs held by its top gRNA, in [0, 1].
    control
        Label given to cells whose (counted) gRNAs are all non-targeting.
    non_targeting
        Target names that mean "non-targeting".
    key_added
        ``obs`` column that receives the labels.
    inplace
        ``False`` (default): return a new AnnData and leave ``adata`` untouched. ``True``: write
        into ``adata`` and return ``None`` (scanpy style).
    verbose
        Print the one-line-per-rule summary (it is always logged at INFO level).

    Returns
    -------
    The AnnData (a copy unless ``inplace``) with

    - ``obs[key_added]``: canonical labels (categorical), ``control`` or ``"unassigned"``;
    - ``obs["grna_n_umis"]``: total gRNA UMIs per cell; ``obs["n_grnas_passing"]``: gRNAs with
      at least ``min_umis`` UMIs;
    - ``uns["assign_perturbations"]``: the parameters, ``outcomes`` (cells per rule outcome; see
      ``LOW_MOI_OUTCOMES`` / ``HIGH_MOI_OUTCOMES``), ``labels`` and ``cells_per_label``
      (the cells of each label, most frequent first).

    Raises
    ------
    MissingColumnError
        ``grna_counts`` / ``grna_targets`` names an ``obsm`` / ``uns`` entry that does not exist.
    ScreenError
        Shapes or gRNA ids do not match the cells or the targets.
    InvalidCountsError
        gRNA counts are negative, non-finite or not whole numbers.
    InvalidLabelError
        A target name is empty or malformed.
    ConfigError
        ``moi``, ``min_umis`` or ``min_fraction`` is out of range.
    """
    moi = _check_parameters(moi, min_umis, min_fraction, control, key_added)
    guides = _read_guides(adata, grna_counts, grna_targets, control, non_targeting)
    if moi == "low":
        labels, outcomes = _assign_low_moi(guides, min_umis, min_fraction, control)
    else:
        labels, outcomes = _assign_high_moi(guides, min_umis, control)

    grna_n_umis = np.asarray(guides.counts.sum(axis=1)).ravel()
    n_passing = np.asarray((guides.counts >= min_umis).sum(axis=1)).ravel()
    cells_per_label = pd.Series(labels).value_counts()
    record = {
        "moi": moi,
        "min_umis": float(min_umis),
        "min_fraction": float(min_fraction) if moi == "low" else None,
        "control": control,
        "key_added": key_added,
        "n_cells": int(adata.n_obs),
        "n_grnas": len(guides.ids),
        "outcomes": {k: int(v) for k, v in outcomes.items()},
        # two arrays rather than a dict: labels may hold characters h5py refuses as keys
        "labels": cells_per_label.index.astype(str).to_numpy(),
        "cells_per_label": cells_per_label.to_numpy().astype(np.int64),
    }
    _report(record, verbose)

    out = adata if inplace else adata.copy()
    out.obs[key_added] = pd.Categorical(labels)
    out.obs["grna_n_umis"] = grna_n_umis.astype(np.float64)
    out.obs["n_grnas_passing"] = n_passing.astype(np.int64)
    out.uns[UNS_KEY] = {k: v for k, v in record.items() if v is not None}
    return None if inplace else out


# --- input handling ------------------------------------------------------------------------
def _check_parameters(moi, min_umis, min_fraction, control, key_added) -> str:
    if moi not in ("low", "high"):
        raise ConfigError(f"moi={moi!r} is not known; use moi='low' or moi='high'.")
    if not np.isfinite(min_umis) or min_umis < 1:
        raise ConfigError(
            f"min_umis={min_umis!r} must be a number ≥ 1 (a gRNA with 0 UMIs is not present); "
            "the usual choice is 5."
        )
    if not np.isfinite(min_fraction) or not 0 <= min_fraction <= 1:
        raise ConfigError(
            f"min_fraction={min_fraction!r} must lie in [0, 1]; the usual low-MOI choice is 0.5."
        )
    if not isinstance(control, str) or control == "" or control == UNASSIGNED:
        raise ConfigError(
            f"control={control!r} must be a non-empty string other than {UNASSIGNED!r}, "
            "e.g. 'ctrl'."
        )
    if not isinstance(key_added, str) or key_added == "":
        raise ConfigError(f"key_added={key_added!r} must be a non-empty obs column name.")
    return moi


def _read_guides(adata, grna_counts, grna_targets, control, non_targeting) -> _Guides:
    counts, ids = _counts_matrix(adata, grna_counts)
    targets = _target_names(adata, grna_targets, ids, counts.shape[1])
    if ids is None:
        ids = [f"grna_{j}" for j in range(counts.shape[1])]
    nt = {str(t).lower() for t in non_targeting} | {control.lower()}
    parsed = []
    for guide, target in zip(ids, targets, strict=True):
        if target is None or (isinstance(target, float) and np.isnan(target)):
            raise InvalidLabelError(
                f"gRNA {guide!r} has no target (missing value); give every gRNA a target gene "
                "name, or 'non-targeting' for control guides."
            )
        target = str(target)
        if target == UNASSIGNED:
            raise InvalidLabelError(
                f"gRNA {guide!r} targets {UNASSIGNED!r}, which is the label of cells without a "
                "confident gRNA; rename that target."
            )
        if target.lower() in nt:
            parsed.append(())
            continue
        try:
            parsed.append(parse_label(target, control))
        except InvalidLabelError as err:
            raise InvalidLabelError(f"gRNA {guide!r}: {err}") from err
    return _Guides(counts=counts, ids=ids, targets=parsed)


def _counts_matrix(adata: AnnData, grna_counts) -> tuple[sp.csr_matrix, list[str] | None]:
    """The gRNA counts as CSR ``[n_cells, n_grnas]`` (float64) and the gRNA ids (if named)."""
    if isinstance(grna_counts, str):
        if grna_counts not in adata.obsm:
            raise MissingColumnError(
                f"adata.obsm has no entry {grna_counts!r} (it has {sorted(adata.obsm)}); pass "
                "the gRNA count matrix itself (cells × gRNAs) or the name of the obsm entry "
                "that holds it."
            )
        grna_counts = adata.obsm[grna_counts]
    if isinstance(grna_counts, pd.DataFrame):
        frame = grna_counts
        if not frame.index.equals(adata.obs_names):
            missing = adata.obs_names.difference(frame.index)
            if len(missing):
                raise ScreenError(
                    f"The gRNA count table lacks {len(missing)} of the {adata.n_obs} cells "
                    f"(e.g. {list(missing[:3])}); its index must hold adata.obs_names (give a "
                    "row of zeros to cells without gRNA reads)."
                )
            frame = frame.loc[adata.obs_names]
        ids = [str(c) for c in frame.columns]
        if frame.dtypes.map(lambda d: isinstance(d, pd.SparseDtype)).all() and frame.shape[1]:
            matrix = sp.csr_matrix(frame.sparse.to_coo())
        else:
            matrix = frame.to_numpy()
    else:
        matrix, ids = grna_counts, None
    matrix = _as_csr(matrix)
    if matrix.shape[0] != adata.n_obs:
        raise ScreenError(
            f"The gRNA count matrix has {matrix.shape[0]} rows but the AnnData has "
            f"{adata.n_obs} cells; pass one row per cell in adata.obs_names order (transpose "
            "a gRNAs × cells matrix with .T)."
        )
    if matrix.shape[1] == 0:
        raise EmptyScreenError(
            "The gRNA count matrix has no columns (no gRNAs); pass the cells × gRNAs UMI matrix."
        )
    _check_counts(matrix)
    return matrix, ids


def _as_csr(matrix) -> sp.csr_matrix:
    if sp.issparse(matrix):
        out = sp.csr_matrix(matrix, dtype=np.float64)
    else:
        arr = np.asarray(matrix)
        if arr.ndim != 2:
            raise ScreenError(
                f"The gRNA counts must be a 2-D matrix (cells × gRNAs); got shape {arr.shape}."
            )
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise InvalidCountsError(
                f"The gRNA counts have dtype {arr.dtype}; they must be numbers (UMI counts)."
            )
        out = sp.csr_matrix(arr.astype(np.float64))
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _check_counts(matrix: sp.csr_matrix) -> None:
    values = matrix.data
    if not np.isfinite(values).all():
        raise InvalidCountsError(
            "The gRNA counts contain NaN or infinite values; pass raw gRNA UMI counts."
        )
    if (values < 0).any():
        raise InvalidCountsError(
            "The gRNA counts contain negative values; pass raw gRNA UMI counts, not centred "
            "or log-scaled values."
        )
    if not np.array_equal(values, np.round(values)):
        raise InvalidCountsError(
            "The gRNA counts are not whole numbers; pass raw gRNA UMI counts (not normalized "
            "or log-transformed values)."
        )


def _target_names(adata: AnnData, grna_targets, ids: list[str] | None, n_grnas: int) -> list:
    if grna_targets is None:
        raise ScreenError(
            "grna_targets is required: the target gene of each gRNA (a list in column order, a "
            "dict/Series from gRNA id to gene, or the name of an adata.uns entry)."
        )
    if isinstance(grna_targets, str):
        if grna_targets not in adata.uns:
            raise MissingColumnError(
                f"adata.uns has no entry {grna_targets!r} (it has {sorted(adata.uns)}); pass "
                "the gRNA targets themselves or the name of the uns entry holding them."
            )
        grna_targets = adata.uns[grna_targets]
    if isinstance(grna_targets, Mapping | pd.Series) and ids is not None:
        lookup = dict(grna_targets.items())
        missing = [g for g in ids if g not in lookup]
        if missing:
            raise ScreenError(
                f"No target given for {len(missing)} gRNA(s), e.g. {missing[:3]}; grna_targets "
                "must name the target of every gRNA column."
            )
        return [lookup[g] for g in ids]
    if isinstance(grna_targets, Mapping):
        raise ScreenError(
            "grna_targets is a mapping from gRNA id to target, but the gRNA counts carry no "
            "gRNA ids; pass the counts as a DataFrame with gRNA ids as columns, or the targets "
            "as a list in column order."
        )
    targets = list(np.asarray(grna_targets, dtype=object).ravel())
    if len(targets) != n_grnas:
        raise ScreenError(
            f"grna_targets has {len(targets)} entries but the gRNA count matrix has {n_grnas} "
            "columns; give exactly one target per gRNA, in column order."
        )
    return targets


# --- the two rules -------------------------------------------------------------------------
def _row_of_each_entry(counts: sp.csr_matrix) -> np.ndarray:
    """Row (cell) index of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))


def _assign_low_moi(guides: _Guides, min_umis, min_fraction, control):
    counts = guides.counts
    n_cells = counts.shape[0]
    total = np.asarray(counts.sum(axis=1)).ravel()
    top = counts.max(axis=1).toarray().ravel()
    rows = _row_of_each_entry(counts)
    at_top = (counts.data == top[rows]) & (counts.data > 0)
    n_at_top = np.bincount(rows[at_top], minlength=n_cells)
    # the column holding the top count; only read where exactly one guide holds it
    top_col = np.full(n_cells, -1)
    top_col[rows[at_top]] = counts.indices[at_top]
    fraction = np.divide(top, total, out=np.zeros(n_cells), where=total > 0)

    outcome = np.full(n_cells, "", dtype=object)
    outcome[total == 0] = "no_grna"
    undecided = outcome == ""
    outcome[undecided & (top < min_umis)] = "below_min_umis"
    undecided = outcome == ""
    outcome[undecided & (n_at_top > 1)] = "tie"
    undecided = outcome == ""
    outcome[undecided & (fraction < min_fraction)] = "below_min_fraction"
    kept = outcome == ""

    guide_labels = np.array([format_label(t, control) for t in guides.targets], dtype=object)
    labels = np.full(n_cells, UNASSIGNED, dtype=object)
    labels[kept] = guide_labels[top_col[kept]]
    is_nt = np.array([len(t) == 0 for t in guides.targets])
    outcome[kept] = np.where(is_nt[top_col[kept]], "assigned_control", "assigned_target")
    return labels, _tally(outcome, LOW_MOI_OUTCOMES)


def _assign_high_moi(guides: _Guides, min_umis, control):
    counts = guides.counts
    n_cells = counts.shape[0]
    total = np.asarray(counts.sum(axis=1)).ravel()
    rows = _row_of_each_entry(counts)
    passing = counts.data >= min_umis
    target_sets: list[set[str]] = [set() for _ in range(n_cells)]
    has_guide = np.zeros(n_cells, dtype=bool)
    for row, col in zip(rows[passing], counts.indices[passing], strict=True):
        has_guide[row] = True
        target_sets[row].update(guides.targets[col])

    labels = np.full(n_cells, UNASSIGNED, dtype=object)
    outcome = np.where(total == 0, "no_grna", "below_min_umis").astype(object)
    for row in np.flatnonzero(has_guide):
        genes = target_sets[row]
        labels[row] = format_label(genes, control)
        outcome[row] = (
            "control_only" if not genes else "single_target" if len(genes) == 1 else "multi_target"
        )
    return labels, _tally(outcome, HIGH_MOI_OUTCOMES)


def _tally(outcome: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    values, counts = np.unique(outcome.astype(str), return_counts=True)
    found = dict(zip(values, counts, strict=True))
    return {name: int(found.get(name, 0)) for name in names}


def _report(record: dict, verbose: bool) -> None:
    n = max(record["n_cells"], 1)
    rules = (
        f"top gRNA ≥ {record['min_umis']:g} UMIs and ≥ {record['min_fraction']:.0%} of the "
        "cell's gRNA UMIs, no tie"
        if record["moi"] == "low"
        else f"every gRNA ≥ {record['min_umis']:g} UMIs"
    )
    lines = [f"assign_perturbations ({record['moi']} MOI: {rules}) on {record['n_cells']} cells:"]
    for name, count in record["outcomes"].items():
        lines.append(f"  {name:<20} {count:>8}  ({count / n:.1%})")
    n_labels = len([k for k in record["labels"] if k != UNASSIGNED])
    lines.append(f"  -> {n_labels} labels (control included), key obs[{record['key_added']!r}]")
    text = "\n".join(lines)
    logger.info(text)
    if verbose:
        print(text)
