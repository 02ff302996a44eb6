"""cell-eval interoperability: the exported AnnData pair and (slow) a real cell-eval run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import anndata
import numpy as np
import pytest

from lcdiff.errors import DataFormatError, OutputExistsError, UnknownPerturbationError
from lcdiff.eval.baselines import AdditiveBaseline
from lcdiff.eval.export import cell_eval_command, export_cell_eval
from test_baselines import doubles_split, make_screen


@pytest.fixture(scope="module")
def setup():
    screen = make_screen(cells_per_condition=40)
    split = doubles_split(screen, n_test=3)
    pred = AdditiveBaseline().fit(screen, split).predict(list(split.test), n_cells=50)
    return screen, split, pred


def test_export_writes_matching_pair(setup, tmp_path):
    screen, split, pred = setup
    pred_path, real_path = export_cell_eval(pred, screen, tmp_path / "ce", split=split)
    p, r = anndata.read_h5ad(pred_path), anndata.read_h5ad(real_path)
    assert list(p.var_names) == list(r.var_names) == list(screen.var_names)
    n_ctrl = int((screen.obs["perturbation"] == "ctrl").sum())
    assert (p.obs["perturbation"] == "ctrl").sum() == (r.obs["perturbation"] == "ctrl").sum()
    assert (r.obs["perturbation"] == "ctrl").sum() == n_ctrl
    assert set(p.obs["perturbation"]) == set(r.obs["perturbation"]) == {"ctrl", *split.test}
    for lab in split.test:
        observed = np.asarray(screen.X[(screen.obs["perturbation"] == lab).to_numpy()])
        np.testing.assert_array_equal(
            np.asarray(r.X[(r.obs["perturbation"] == lab).to_numpy()]), observed
        )
        assert (p.obs["perturbation"] == lab).sum() == min(50, n_ctrl)  # distinct control cells
    # both control blocks are the same cells, so both files share one reference
    np.testing.assert_array_equal(
        np.asarray(p.X[(p.obs["perturbation"] == "ctrl").to_numpy()]),
        np.asarray(r.X[(r.obs["perturbation"] == "ctrl").to_numpy()]),
    )
    assert p.X.dtype == np.float32 and r.uns["lcdiff"]["role"] == "real"
    # negative log1p predictions (additive shifts) are clipped, and counted
    raw = np.asarray(pred.X)
    assert p.uns["lcdiff"]["n_clipped"] == int((raw < 0).sum())
    assert np.asarray(p.X).min() >= 0


def test_export_custom_column_and_refusals(setup, tmp_path):
    screen, split, pred = setup
    out = tmp_path / "ce"
    pred_path, _ = export_cell_eval(pred, screen, out, pert_col="target_gene")
    assert "target_gene" in anndata.read_h5ad(pred_path).obs
    with pytest.raises(OutputExistsError, match="force"):
        export_cell_eval(pred, screen, out)
    export_cell_eval(pred, screen, out, force=True)
    with pytest.raises(DataFormatError, match="genes"):
        export_cell_eval(pred[:, :10].copy(), screen, tmp_path / "x")
    unknown = pred.copy()
    unknown.obs["perturbation"] = "g00+g99"
    with pytest.raises(UnknownPerturbationError, match="g99"):
        export_cell_eval(unknown, screen, tmp_path / "y")


def test_command_names_cell_eval_flags(tmp_path):
    cmd = cell_eval_command(tmp_path, control="ctrl", pert_col="perturbation", outdir="res")
    assert cmd[:2] == ["cell-eval", "run"]
    assert cmd[cmd.index("-ap") + 1].endswith("pred.h5ad")
    assert cmd[cmd.index("-ar") + 1].endswith("real.h5ad")
    assert cmd[cmd.index("--control-pert") + 1] == "ctrl"
    assert cmd[cmd.index("--pert-col") + 1] == "perturbation"


@pytest.mark.slow
def test_cell_eval_runs_on_an_export(setup, tmp_path):
    if importlib.util.find_spec("cell_eval") is None:
        pytest.skip("cell-eval is not installed (pip install 'lcdiff[celleval]')")
    screen, split, pred = setup
    export_cell_eval(pred, screen, tmp_path / "ce", split=split)
    outdir = tmp_path / "results"
    cmd = cell_eval_command(tmp_path / "ce", outdir=outdir) + ["--profile", "minimal"]
    # the console script may not be on PATH inside a virtual environment: run its module
    cmd = [sys.executable, "-m", "cell_eval", *cmd[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = list(outdir.glob("*results*.csv"))
    assert results, f"no results CSV in {sorted(p.name for p in outdir.iterdir())}"
