"""The prepared-screen contract shared by every component.

``lc.pp.prepare`` returns an AnnData that every downstream piece (models, baselines, metrics,
CLIPR, reports) reads through the accessors below:

- ``layers["counts"]``: raw UMI counts of the selected genes (cells × genes);
- ``X``: log1p of counts per 10k, library size over the selected genes (``float32``);
- ``obs["perturbation"]``: canonical labels (``"A"``, ``"A+B"``, control label);
- ``obs["n_targets"]``: number of target genes per cell's condition;
- ``var["perturbed"]``: whether a gene is targeted by any condition; perturbed genes come first;
- ``var["hvg_rank"]``: rank by normalized dispersion among the selected genes (0 = most variable);
- ``uns["lcdiff"]``: a dict recording every choice; at least ``control`` (the control label),
  ``perturbation_key`` (always ``"perturbation"``) and ``markers`` (label → top marker genes).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from lcdiff.data.labels import parse_label
from lcdiff.data.normalize import dense
from lcdiff.errors import NotPreparedError, UnknownPerturbationError

PERTURBATION_KEY = "perturbation"
UNS_KEY = "lcdiff"


def screen_info(screen: AnnData) -> dict:
    """The ``uns["lcdiff"]`` record of a prepared screen.

    Raises
    ------
    NotPreparedError
        If the AnnData did not come from ``lc.pp.prepare``.
    """
    info = screen.uns.get(UNS_KEY)
    if not isinstance(info, dict) or "control" not in info or PERTURBATION_KEY not in screen.obs:
        raise NotPreparedError(
            "This AnnData is not a prepared screen (no uns['lcdiff'] record or no "
            "obs['perturbation']); run screen = lc.pp.prepare(adata, perturbation_key=..., "
            "control=...) first."
        )
    return info


def control_label(screen: AnnData) -> str:
    """The control label of a prepared screen."""
    return str(screen_info(screen)["control"])


def conditions(screen: AnnData) -> list[str]:
    """Condition labels present in the screen, control first, then by (size, name)."""
    ctrl = control_label(screen)
    labels = set(screen.obs[PERTURBATION_KEY].astype(str).unique())
    rest = sorted(labels - {ctrl}, key=lambda lab: (len(parse_label(lab, ctrl)), lab))
    return ([ctrl] if ctrl in labels else []) + rest


def condition_mask(screen: AnnData, label: str) -> np.ndarray:
    """Boolean mask over cells of one condition (raises if the condition has no cells)."""
    mask = (screen.obs[PERTURBATION_KEY].astype(str) == label).to_numpy()
    if not mask.any():
        raise UnknownPerturbationError(
            f"No cells with perturbation {label!r} in this screen; known conditions include "
            f"{conditions(screen)[:10]}."
        )
    return mask


def condition_cells(screen: AnnData, label: str, layer: str | None = None) -> np.ndarray:
    """Dense ``[n_cells, n_genes]`` matrix of one condition (``layer=None`` means ``X``)."""
    mask = condition_mask(screen, label)
    mat = screen.X if layer is None else screen.layers[layer]
    return dense(mat[mask])


def target_indices(screen_or_genes, label: str, control: str | None = None) -> list[int]:
    """Column indices of a label's target genes (raises for genes not in the gene list)."""
    if isinstance(screen_or_genes, AnnData):
        genes = list(screen_or_genes.var_names)
        control = control_label(screen_or_genes) if control is None else control
    else:
        genes = list(screen_or_genes)
    index = {g: i for i, g in enumerate(genes)}
    targets = parse_label(label, control or "ctrl")
    missing = [g for g in targets if g not in index]
    if missing:
        raise UnknownPerturbationError(
            f"Perturbation {label!r} targets genes that are not modelled: {missing}. Only genes "
            "among the selected genes can be perturbed; include them when preparing the screen."
        )
    return [index[g] for g in targets]
