"""Export predictions and observations as the AnnData pair that Arc Institute's cell-eval reads.

cell-eval (``pip install cell-eval``, or ``pip install 'lcdiff[celleval]'``) compares a
predicted and a real AnnData with the same genes, a perturbation column and control cells in
both, ``X`` on the log1p scale. The pair written here:

- ``real.h5ad``: the observed cells of every predicted condition plus the screen's control
  cells (splits hold out perturbations, never control cells, so these are the training control);
- ``pred.h5ad``: the predicted cells of those conditions plus *the same* control cells (any
  control prediction in ``pred`` is replaced, so both files share one control reference);
- both with ``X`` = log1p CP10k (``float32``, dense), ``obs[pert_col]`` and identical genes.

Shift-based baselines (additive, mean, linear, PEPER) can predict slightly negative values on the
log1p scale; cell-eval rejects any negative entry, so ``clip_negative=True`` (default) sets them
to zero in the exported predictions and records how many in ``uns["lcdiff"]["n_clipped"]``.

Then::

    cell-eval run -ap pred.h5ad -ar real.h5ad --control-pert ctrl --pert-col perturbation -o ce/
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from lcdiff._io import atomic_write_h5ad, check_prediction
from lcdiff.data.labels import canonical_label
from lcdiff.data.normalize import dense
from lcdiff.data.screen import PERTURBATION_KEY, control_label
from lcdiff.errors import DataFormatError, OutputExistsError, UnknownPerturbationError

PRED_FILE = "pred.h5ad"
REAL_FILE = "real.h5ad"


def cell_eval_command(
    out: str | os.PathLike,
    control: str = "ctrl",
    pert_col: str = PERTURBATION_KEY,
    outdir: str | os.PathLike | None = None,
) -> list[str]:
    """The ``cell-eval run`` command line for a pair written by :func:`export_cell_eval`."""
    out = Path(out)
    cmd = [
        "cell-eval",
        "run",
        "-ap",
        str(out / PRED_FILE),
        "-ar",
        str(out / REAL_FILE),
        "--control-pert",
        control,
        "--pert-col",
        pert_col,
    ]
    if outdir is not None:
        cmd += ["-o", str(outdir)]
    return cmd


def export_cell_eval(
    pred: AnnData,
    screen: AnnData,
    out: str | os.PathLike,
    split=None,
    pert_col: str = PERTURBATION_KEY,
    force: bool = False,
    clip_negative: bool = True,
) -> tuple[Path, Path]:
    """Write ``pred.h5ad`` and ``real.h5ad`` for cell-eval into the folder ``out``.

    Parameters
    ----------
    pred
        Predictions (``LCD.predict`` or a baseline's ``predict``): ``obs["perturbation"]``,
        ``X`` log1p CP10k, the screen's genes.
    screen
        The prepared screen holding the observed cells of the predicted conditions.
    out
        Output folder (created).
    split
        Optional; if given it must list the control among its training conditions (a check
        that the control reference is the training control).
    pert_col
        Name of the perturbation column in both files (``--pert-col`` of cell-eval).
    force
        Overwrite existing ``pred.h5ad`` / ``real.h5ad``.
    clip_negative
        Set negative predicted values to 0 (cell-eval refuses negative log1p values).

    Returns
    -------
    (path of pred.h5ad, path of real.h5ad)

    Raises
    ------
    DataFormatError
        If the genes of ``pred`` and ``screen`` differ or ``pred`` has no perturbation column.
    UnknownPerturbationError
        If a predicted condition has no observed cells in ``screen``.
    OutputExistsError
        If an output file exists and ``force`` is false.
    """
    control = control_label(screen)
    if PERTURBATION_KEY not in pred.obs:
        raise DataFormatError(
            "The predictions have no obs['perturbation'] column; pass the AnnData returned by "
            "a model's predict()."
        )
    if list(map(str, pred.var_names)) != list(map(str, screen.var_names)):
        raise DataFormatError(
            "The predictions and the screen have different genes (var_names); predict with a "
            "model trained on this screen."
        )
    out = Path(out)
    pred_path, real_path = out / PRED_FILE, out / REAL_FILE
    existing = [str(p) for p in (pred_path, real_path) if p.exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{existing} exist already; pass force=True (--force) or choose another folder."
        )

    pred_labels = np.array(
        [canonical_label(str(lab), control) for lab in pred.obs[PERTURBATION_KEY]], dtype=object
    )
    keep = pred_labels != control
    labels = list(dict.fromkeys(pred_labels[keep]))
    screen_labels = screen.obs[PERTURBATION_KEY].astype(str).to_numpy()
    missing = [lab for lab in labels if not (screen_labels == lab).any()]
    if missing:
        raise UnknownPerturbationError(
            f"Predicted conditions {missing[:5]} have no observed cells in the screen; export "
            "only conditions the screen measured."
        )
    if split is not None and control not in {canonical_label(str(s), control) for s in split.train}:
        raise DataFormatError(f"split.train has no control cells ({control!r}).")
    control_cells = dense(screen.X[screen_labels == control]).astype(np.float32)
    if control_cells.shape[0] == 0:
        raise DataFormatError(f"The screen has no control cells ({control!r}).")

    observed = screen_labels != control
    observed &= np.isin(screen_labels, labels)
    real_x = np.concatenate([dense(screen.X[observed]).astype(np.float32), control_cells])
    real_obs = np.concatenate(
        [screen_labels[observed], np.full(control_cells.shape[0], control, dtype=object)]
    )
    pred_x = np.concatenate([dense(pred.X[keep]).astype(np.float32), control_cells])
    n_clipped = int((pred_x < 0).sum()) if clip_negative else 0
    if n_clipped:
        pred_x = np.maximum(pred_x, 0.0)
    pred_obs = np.concatenate(
        [pred_labels[keep], np.full(control_cells.shape[0], control, dtype=object)]
    )
    genes = list(map(str, screen.var_names))
    out.mkdir(parents=True, exist_ok=True)
    method = (pred.uns.get("lcdiff") or {}).get("method", "unknown")
    pred_member = _pair_member(pred_x, pred_obs, genes, pert_col, "pred", method)
    pred_member.uns["lcdiff"]["n_clipped"] = n_clipped
    check_prediction(pred_member, "The cell-eval prediction file")
    atomic_write_h5ad(pred_member, pred_path)
    atomic_write_h5ad(_pair_member(real_x, real_obs, genes, pert_col, "real", method), real_path)
    return pred_path, real_path


def _pair_member(x, labels, genes, pert_col, role, method) -> AnnData:
    categories = list(dict.fromkeys(labels))
    obs = pd.DataFrame(
        {pert_col: pd.Categorical(labels.astype(str), categories=categories)},
        index=[f"{role}_{i}" for i in range(x.shape[0])],
    )
    adata = AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns["lcdiff"] = {"role": role, "method": str(method), "X": "log1p_cp10k"}
    return adata
