"""Validation of a raw perturbation screen (``lc.pp.validate``).

A raw screen is an AnnData of UMI counts (cells × genes, in ``X`` or a layer) with one obs column
naming each cell's perturbation. :func:`validate` checks it, fixes what can be fixed safely (with a
warning) and refuses the rest with a typed error whose message says how to fix the input. It never
modifies its argument.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.utils import make_index_unique

from lcdiff.data.labels import format_label, parse_label
from lcdiff.errors import (
    ControlNotFoundError,
    EmptyScreenError,
    InvalidCountsError,
    InvalidLabelError,
    LcdiffWarning,
    MissingColumnError,
    ScreenError,
    TooFewCellsError,
    UnknownGeneError,
)

PERTURBATION_KEY = "perturbation"
DEFAULT_MIN_CELLS = 100  # cells per perturbation, as in the reference pipeline


@dataclass
class ValidationReport:
    """What :func:`validate` changed; ``prepare`` stores it in ``uns["lcdiff"]``."""

    n_cells_in: int = 0
    n_genes_in: int = 0
    n_all_zero_cells: int = 0
    renamed_duplicate_genes: list[str] = field(default_factory=list)
    unknown_genes: list[str] = field(default_factory=list)
    dropped_unknown_conditions: list[str] = field(default_factory=list)
    dropped_small_conditions: list[str] = field(default_factory=list)
    #: cells of each condition dropped for having too few
    small_condition_cells: dict[str, int] = field(default_factory=dict)


def validate(
    adata: AnnData,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = "ctrl",
    layer: str | None = None,
    min_cells: int = DEFAULT_MIN_CELLS,
    strict: bool = False,
) -> AnnData:
    """Check a raw perturbation screen and return a cleaned copy.

    Parameters
    ----------
    adata
        Raw screen: ``[n_cells, n_genes]`` UMI counts in ``X`` (or in ``layers[layer]``), dense or
        sparse, integer or float dtype.
    perturbation_key
        obs column with each cell's perturbation label (``"A"``, ``"A+B"``, GEARS-style
        ``"A+ctrl"``, or the control label).
    control
        Label of the control (non-targeting) cells.
    layer
        Layer holding the raw counts; ``None`` reads ``X``.
    min_cells
        Perturbations with fewer cells are dropped (with a warning). The control must have at
        least this many cells too.
    strict
        If true, labels naming genes absent from ``var_names`` raise instead of being dropped.

    Returns
    -------
    A new AnnData: ``X`` = the counts (``float32``, sparse stays sparse), ``obs["perturbation"]``
    the canonical labels (categorical), ``obs["n_targets"]``, unique ``var_names``; other layers are
    not carried over. The input is not modified.

    Raises
    ------
    MissingColumnError
        ``perturbation_key`` is not an obs column, or ``layer`` is not a layer.
    EmptyScreenError
        No cells, no genes, or every cell has zero counts.
    InvalidCountsError
        Counts with NaN/inf, negative or non-integer values (e.g. log-normalized data).
    InvalidLabelError
        A malformed label (``"A++B"``, empty, surrounding whitespace, missing value).
    ControlNotFoundError
        No cell carries the control label.
    UnknownGeneError
        ``strict=True`` and a label names a gene not in ``var_names``.
    TooFewCellsError
        The control, or every perturbation, has fewer than ``min_cells`` cells.
    """
    validated, _ = validate_with_report(
        adata, perturbation_key, control, layer=layer, min_cells=min_cells, strict=strict
    )
    return validated


def validate_with_report(
    adata: AnnData,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = "ctrl",
    layer: str | None = None,
    min_cells: int = DEFAULT_MIN_CELLS,
    strict: bool = False,
) -> tuple[AnnData, ValidationReport]:
    """:func:`validate`, also returning a :class:`ValidationReport` of what was changed."""
    if not isinstance(adata, AnnData):
        raise ScreenError(
            f"Expected an AnnData, got {type(adata).__name__}; load your screen with "
            "anndata.read_h5ad(...) or build one with anndata.AnnData(X=counts, obs=...)."
        )
    if not isinstance(control, str) or control == "" or control != control.strip():
        raise InvalidLabelError(
            f"The control label {control!r} must be a non-empty string without spaces around it."
        )
    report = ValidationReport(n_cells_in=adata.n_obs, n_genes_in=adata.n_vars)
    _check_not_empty(adata)
    if perturbation_key not in adata.obs:
        problem = (
            f"obs has no column {perturbation_key!r}; the obs columns are "
            f"{list(map(str, adata.obs.columns))}."
        )
        raise MissingColumnError(
            f"{problem} Pass perturbation_key=<the column naming each cell's perturbation>.",
            cli=f"{problem} Pass --perturbation-key COLUMN (the column naming each cell's "
            "perturbation).",
        )
    counts = _counts_matrix(adata, layer)
    check_counts(counts, layer, available_layers=list(adata.layers.keys()))

    labels = canonical_labels(adata.obs[perturbation_key], control, perturbation_key)
    _check_control_present(labels, control, perturbation_key)

    obs, var = adata.obs.copy(), adata.var.copy()
    obs[PERTURBATION_KEY] = labels.to_numpy()
    if not obs.index.is_unique:
        warnings.warn(
            "obs_names (cell barcodes) are not unique; they were made unique by suffixing.",
            UserWarning,
            stacklevel=2,
        )
        obs.index = make_index_unique(pd.Index(obs.index.astype(str)))
    if not var.index.is_unique:
        report.renamed_duplicate_genes = sorted(set(var.index[var.index.duplicated()].astype(str)))
        warnings.warn(
            f"{len(report.renamed_duplicate_genes)} gene names occur more than once in var_names "
            f"(e.g. {report.renamed_duplicate_genes[:5]}); they were made unique by suffixing "
            "'-1', '-2', ... (the first occurrence keeps its name).",
            UserWarning,
            stacklevel=2,
        )
        var.index = make_index_unique(pd.Index(var.index.astype(str)))
    out = AnnData(
        X=_as_float32(counts),
        obs=obs,
        var=var,
        uns=_copy_uns(adata.uns),
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        varm={k: v.copy() for k, v in adata.varm.items()},
        varp={k: v.copy() for k, v in adata.varp.items()},
    )

    out, report.n_all_zero_cells = drop_all_zero_cells(out)
    out, report.unknown_genes, report.dropped_unknown_conditions = drop_unknown_targets(
        out, control, strict=strict
    )
    sizes = out.obs[PERTURBATION_KEY].astype(str).value_counts()
    out, report.dropped_small_conditions = drop_small_conditions(out, control, min_cells)
    report.small_condition_cells = {lab: int(sizes[lab]) for lab in report.dropped_small_conditions}
    set_label_columns(out, control)
    return out, report


# --- counts ---------------------------------------------------------------------------------
def _check_not_empty(adata: AnnData) -> None:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise EmptyScreenError(
            f"The screen is empty ({adata.n_obs} cells × {adata.n_vars} genes); pass an AnnData "
            "with cells in rows and genes in columns."
        )


def _counts_matrix(adata: AnnData, layer: str | None):
    if layer is None:
        if adata.X is None:
            layers = list(adata.layers.keys())
            raise MissingColumnError(
                f"adata.X is empty; pass layer=<the layer holding raw counts> (layers: {layers}).",
                cli=f"X is empty; pass --layer LAYER, the layer holding raw counts (layers: "
                f"{layers}).",
            )
        return adata.X
    if layer not in adata.layers:
        problem = f"No layer {layer!r}; the layers are {list(adata.layers.keys())}."
        raise MissingColumnError(
            f"{problem} Pass layer=None to read counts from X.",
            cli=f"{problem} Drop --layer to read counts from X.",
        )
    return adata.layers[layer]


def check_counts(counts, layer: str | None = None, available_layers: list[str] | None = None):
    """Raise :class:`InvalidCountsError` unless ``counts`` are finite non-negative integers.

    Parameters
    ----------
    counts
        ``[n_cells, n_genes]`` dense or sparse matrix.
    layer
        Where the counts came from (for the message).
    available_layers
        Layer names of the AnnData, to suggest a better one.
    """
    values = counts.data if sp.issparse(counts) else np.asarray(counts)
    where = "X" if layer is None else f"layers[{layer!r}]"
    if values.dtype.kind not in "biuf":
        raise InvalidCountsError(
            f"Counts in {where} have dtype {values.dtype}; expected numbers (UMI counts)."
        )
    hint, cli_hint = _counts_hint(layer, available_layers or [])
    problem = None
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        problem = f"Counts in {where} contain NaN or inf values."
    elif values.size and values.min() < 0:
        problem = f"Counts in {where} contain negative values (min {values.min():.3g})."
    elif values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        problem = f"Counts in {where} contain non-integer values."
    if problem is not None:
        raise InvalidCountsError(f"{problem} {hint}", cli=f"{problem} {cli_hint}")


def _counts_hint(layer: str | None, available_layers: list[str]) -> tuple[str, str]:
    """The fix for counts that are not raw counts: (for Python users, for the command line)."""
    base = "lcdiff needs raw UMI counts; log-normalized or scaled data is the usual cause."
    if "counts" in available_layers and layer != "counts":
        return (
            base + " This AnnData has a 'counts' layer: pass layer=\"counts\".",
            base + " This file has a 'counts' layer: pass --layer counts.",
        )
    return (
        base + ' Pass layer="counts" (or the layer that holds raw counts), or put raw counts in X.',
        base + " Pass --layer LAYER (the layer that holds raw counts), or put raw counts in X.",
    )


def _as_float32(counts):
    if sp.issparse(counts):
        return sp.csr_matrix(counts, dtype=np.float32, copy=True)
    return np.array(counts, dtype=np.float32, copy=True)


def _copy_uns(uns) -> dict:
    import copy

    return {k: copy.deepcopy(v) for k, v in uns.items() if k != "lcdiff"}


def drop_all_zero_cells(adata: AnnData) -> tuple[AnnData, int]:
    """Drop cells whose counts are all zero; raise if that leaves no cell."""
    library = np.asarray(adata.X.sum(axis=1)).ravel()
    zero = library <= 0
    if zero.all():
        raise EmptyScreenError(
            f"All {adata.n_obs} cells have zero counts; check that X (or the layer given) holds "
            "the count matrix."
        )
    if zero.any():
        warnings.warn(
            f"Dropped {int(zero.sum())} cells with zero counts.", UserWarning, stacklevel=3
        )
        adata = adata[~zero].copy()
    return adata, int(zero.sum())


# --- labels ---------------------------------------------------------------------------------
def canonical_labels(column: pd.Series, control: str, key: str = PERTURBATION_KEY) -> pd.Series:
    """Canonical label of every cell (parsing each distinct label once).

    Raises :class:`InvalidLabelError` naming the column for missing or malformed labels.
    """
    if column.isna().any():
        raise InvalidLabelError(
            f"{int(column.isna().sum())} cells have no label in obs[{key!r}] (missing values); "
            f"give control cells the label {control!r} or drop the unlabelled cells."
        )
    raw = column.astype(object)
    mapping = {}
    for label in pd.unique(raw):
        try:
            mapping[label] = format_label(parse_label(label, control), control)
        except InvalidLabelError as err:
            raise InvalidLabelError(f"In obs[{key!r}]: {err}") from None
    return raw.map(mapping).astype(str)


def _check_control_present(labels: pd.Series, control: str, key: str) -> None:
    if (labels == control).any():
        return
    top = labels.value_counts().head(10)
    listing = ", ".join(f"{lab!r} ({n})" for lab, n in top.items())
    problem = (
        f"No cell in obs[{key!r}] has the control label {control!r}. Most frequent labels: "
        f"{listing}."
    )
    raise ControlNotFoundError(
        f"{problem} Pass control=<the label of the non-targeting cells>.",
        cli=f"{problem} Pass --control LABEL (the label of the non-targeting cells).",
    )


#: Labels that name no perturbation at all (``lc.pp.assign_perturbations`` gives cells without
#: an assigned guide the label ``"unassigned"``); compared case-insensitively.
NOT_PERTURBATIONS = ("unassigned", "multiplet", "doublet", "none", "nan")
#: Labels that usually mean control cells; one that is not the chosen control is reported so.
CONTROL_LIKE = (
    "ctrl",
    "control",
    "non-targeting",
    "non_targeting",
    "nontargeting",
    "nt",
    "ntc",
    "negative_control",
    "safe-targeting",
)


def label_kind(label: str, control: str) -> str:
    """``"control"``, ``"not a perturbation"`` (``"unassigned"``, ...), ``"control-like"`` (a
    usual control name that is not ``control``) or ``"perturbation"``."""
    if label == control:
        return "control"
    if label.lower() in NOT_PERTURBATIONS:
        return "not a perturbation"
    if label.lower() in CONTROL_LIKE:
        return "control-like"
    return "perturbation"


def drop_unknown_targets(
    adata: AnnData, control: str, strict: bool = False, reason: str = "are not in var_names"
) -> tuple[AnnData, list[str], list[str]]:
    """Drop cells whose label names a gene absent from ``var_names`` (warn; raise if strict).

    ``reason`` completes the warning ("... target N genes that <reason>"). Labels that are no
    perturbation (``"unassigned"``) or look like another control label (``"non-targeting"``
    when the control is ``"ctrl"``) are dropped with their own warning, even if ``strict``.

    Returns
    -------
    (the filtered AnnData, the unknown genes, the dropped labels)
    """
    genes = set(adata.var_names)
    labels = adata.obs[PERTURBATION_KEY].astype(str)
    unknown_genes: set[str] = set()
    bad_labels, other_labels = [], []
    for label in pd.unique(labels):
        missing = [g for g in parse_label(label, control) if g not in genes]
        if not missing:
            continue
        if label_kind(label, control) == "perturbation":
            unknown_genes.update(missing)
            bad_labels.append(label)
        else:
            other_labels.append(label)
    if not bad_labels and not other_labels:
        return adata, [], []
    unknown = sorted(unknown_genes)
    bad_labels, other_labels = sorted(bad_labels), sorted(other_labels)
    message = (
        f"{len(bad_labels)} perturbations target {len(unknown)} genes that {reason}: "
        f"{unknown[:20]}{' ...' if len(unknown) > 20 else ''}"
    )
    if strict and bad_labels:
        raise UnknownGeneError(
            message + ". Check that var_names are gene symbols matching the labels (e.g. "
            "adata.var_names = adata.var['gene_symbols']), or pass strict=False to drop them."
        )
    for label in other_labels:
        n = int((labels == label).sum())
        if label_kind(label, control) == "not a perturbation":
            warnings.warn(
                f"Dropped the {n} cells labelled {label!r}: no perturbation was assigned to them.",
                UserWarning,
                stacklevel=3,
            )
        else:
            text = (
                f"Dropped the {n} cells labelled {label!r}, which looks like a control label, but "
                f"the control label is {control!r}"
            )
            warnings.warn(
                LcdiffWarning(
                    f"{text}; pass control={label!r} if they are the control cells.",
                    cli=f"{text}; pass --control {label} if they are the control cells.",
                ),
                stacklevel=3,
            )
    keep = ~labels.isin(bad_labels + other_labels).to_numpy()
    if bad_labels:
        n_bad = int(labels.isin(bad_labels).sum())
        warnings.warn(
            message + f"; dropped their {n_bad} cells ({bad_labels[:10]}"
            f"{' ...' if len(bad_labels) > 10 else ''}).",
            UserWarning,
            stacklevel=3,
        )
    return adata[keep].copy(), unknown, bad_labels + other_labels


def drop_small_conditions(
    adata: AnnData, control: str, min_cells: int
) -> tuple[AnnData, list[str]]:
    """Drop perturbations with fewer than ``min_cells`` cells (warn; raise if none remain)."""
    counts = adata.obs[PERTURBATION_KEY].astype(str).value_counts()
    n_control = int(counts.get(control, 0))
    if n_control < min_cells:
        problem = f"The control {control!r} has {n_control} cells, fewer than {min_cells}"
        raise TooFewCellsError(
            f"{problem} (min_cells); lower the minimum (min_cells / min_cells_per_perturbation) "
            "if this is intended.",
            cli=f"{problem} (--min-cells); lower --min-cells if this is intended, or check "
            "--control.",
        )
    small = sorted(lab for lab, n in counts.items() if lab != control and n < min_cells)
    perturbed = [lab for lab in counts.index if lab != control]
    if perturbed and len(small) == len(perturbed):
        problem = (
            f"Every perturbation has fewer than {min_cells} cells (largest: "
            f"{int(counts.drop(control).max())})"
        )
        raise TooFewCellsError(
            f"{problem}; lower min_cells / min_cells_per_perturbation.",
            cli=f"{problem}; lower --min-cells.",
        )
    if not perturbed:
        raise TooFewCellsError(
            "The screen has only control cells; a screen needs at least one perturbation."
        )
    if not small:
        return adata, []
    keep = ~adata.obs[PERTURBATION_KEY].astype(str).isin(small).to_numpy()
    warnings.warn(
        f"Dropped {len(small)} perturbations with fewer than {min_cells} cells "
        f"({small[:10]}{' ...' if len(small) > 10 else ''}; {int((~keep).sum())} cells).",
        UserWarning,
        stacklevel=3,
    )
    return adata[keep].copy(), small


def set_label_columns(adata: AnnData, control: str) -> None:
    """Write ``obs["perturbation"]`` as a categorical and ``obs["n_targets"]`` (in place)."""
    labels = adata.obs[PERTURBATION_KEY].astype(str)
    n_targets = {lab: len(parse_label(lab, control)) for lab in pd.unique(labels)}
    adata.obs[PERTURBATION_KEY] = pd.Categorical(labels.to_numpy())
    adata.obs["n_targets"] = labels.map(n_targets).astype(np.int64).to_numpy()
