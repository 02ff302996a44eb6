"""Outputs a user can trust (issue 17): model integrity, finite outputs, reproducible sampling,
command-line messages in command-line terms, and what ``fit`` trained on.

One module-scoped fit through the command line (tiny preset, a few steps) serves most tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from lcdiff.cli import main
from lcdiff.errors import (
    LcdiffError,
    ModelFileError,
    NonFiniteOutputError,
    OutputExistsError,
    UnknownPerturbationError,
    cli_text,
)

QUICK = ["--preset", "tiny", "--set", "noise_steps=3", "--set", "score_steps=3"]
GENES = [f"G{i:02d}" for i in range(14)]


def _raw_screen(control: str = "NT", seed: int = 0) -> anndata.AnnData:
    """Raw counts: control, singles, a double, 'unassigned' cells, a label targeting an
    unmeasured gene and a condition with too few cells."""
    rng = np.random.default_rng(seed)
    sizes = {
        control: 60,
        "G00": 40,
        "G01": 40,
        "G00+G01": 40,
        "unassigned": 25,
        "XYZ1": 40,  # not a measured gene
        "G02": 6,  # too few cells
    }
    blocks, labels = [], []
    for label, n in sizes.items():
        rate = np.full(len(GENES), 4.0)
        for g in label.split("+"):
            if g in GENES:
                rate[GENES.index(g)] *= 3.0
        blocks.append(rng.poisson(rate, (n, len(GENES))))
        labels += [label] * n
    obs = pd.DataFrame({"guide_target": labels}, index=[f"c{i}" for i in range(len(labels))])
    return anndata.AnnData(
        np.concatenate(blocks).astype(np.float32), obs=obs, var=pd.DataFrame(index=GENES)
    )


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def fitted_cli(tmp_path_factory):
    """(raw .h5ad path, model folder, fit stdout, fit stderr) of one command-line fit."""
    folder = tmp_path_factory.mktemp("trust")
    data = folder / "raw.h5ad"
    _raw_screen().write_h5ad(data)
    model = folder / "model"
    capture = pytest.MonkeyPatch()
    import io

    out, err = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", out)
    capture.setattr(sys, "stderr", err)
    try:
        code = main(
            [
                "fit",
                str(data),
                "--perturbation-key",
                "guide_target",
                "--control",
                "NT",
                "--min-cells",
                "20",
                *QUICK,
                "-q",
                "-o",
                str(model),
            ]
        )
    finally:
        capture.undo()
    assert code == 0, err.getvalue()
    return data, model, out.getvalue(), err.getvalue()


@pytest.fixture
def model_copy(fitted_cli, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(fitted_cli[1], folder)
    return folder


# --- Found 1: the whole model folder is protected ------------------------------------------------
def _edit(folder: Path, change) -> None:
    record = json.loads((folder / "lcd.json").read_text())
    change(record)
    (folder / "lcd.json").write_text(json.dumps(record, indent=2))


def _swap_genes(r):
    r["genes"][0], r["genes"][1] = r["genes"][1], r["genes"][0]


def _set_anneal_dt(r):
    r["config"]["anneal_dt"] = 10.0


def _rename_label(r):
    r["train_labels"][1] = "G13"


def _drop_seed(r):
    del r["seed"]


def _add_entry(r):
    r["note"] = "edited"


def _change_control(r):
    r["control"] = "ctrl"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_swap_genes, "genes changed"),
        (_set_anneal_dt, "config.anneal_dt changed"),
        (_rename_label, "train_labels changed"),
        (_drop_seed, "seed removed"),
        (_add_entry, "note added"),
        (_change_control, "control changed"),
    ],
)
def test_each_tampering_of_lcd_json_is_refused(model_copy, change, named):
    from lcdiff.model.lcd import LCD

    LCD.load(model_copy)  # as saved: loads
    _edit(model_copy, change)
    with pytest.raises(ModelFileError, match=re.escape(named)):
        LCD.load(model_copy)


def test_tampered_model_is_refused_on_the_command_line(model_copy, tmp_path, capsys):
    _edit(model_copy, _set_anneal_dt)
    out = tmp_path / "pred.h5ad"
    assert main(["predict", str(model_copy), "G00", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    (line,) = _lines(err, "error:")
    assert "config.anneal_dt changed" in line and "--anneal-dt" in line
    assert "predict(" not in line  # command-line terms only
    assert not out.exists()


def test_mixed_up_arrays_are_refused(model_copy, tmp_path):
    from lcdiff.model import io as model_io
    from lcdiff.model.lcd import LCD

    # a record re-checksummed by hand but with one gene too many: the arrays disagree
    record = json.loads((model_copy / "lcd.json").read_text())
    record["genes"] = [*record["genes"], "EXTRA"]
    record["checksums"] = model_io.record_checksums(record)
    (model_copy / "lcd.json").write_text(json.dumps(record))
    with pytest.raises(ModelFileError):
        LCD.load(model_copy)


def test_save_refuses_a_non_empty_folder_unless_forced(fitted_cli, tmp_path):
    from lcdiff.model.lcd import LCD

    model = LCD.load(fitted_cli[1])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not empty"):
        model.save(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    model.save(foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(OutputExistsError, match="saved model already"):
        model.save(foreign)
    model.save(tmp_path / "fresh")  # a new folder needs no force
    assert LCD.load(tmp_path / "fresh").genes == model.genes


def test_sampler_settings_are_changed_at_predict_time(fitted_cli):
    from lcdiff.model.lcd import LCD

    model = LCD.load(fitted_cli[1])
    base = model.predict(["G00"], n_cells=6, seed=1)
    assert base.uns["lcdiff"]["sampler"]["model_defaults"]
    same = model.predict(["G00"], n_cells=6, seed=1, anneal_steps=model.config.anneal_steps)
    np.testing.assert_array_equal(base.obsm["lcd_state"], same.obsm["lcd_state"])
    other = model.predict(["G00"], n_cells=6, seed=1, anneal_steps=2, anneal_dt=1e-4)
    assert other.uns["lcdiff"]["sampler"] == {
        "anneal_steps": 2,
        "anneal_dt": 1e-4,
        "n_levels": model.config.n_levels,
        "model_defaults": False,
    }
    assert not np.allclose(base.obsm["lcd_state"], other.obsm["lcd_state"])
    with pytest.raises(LcdiffError, match="anneal_dt must be a positive number"):
        model.predict(["G00"], n_cells=2, anneal_dt=-1.0)


# --- Found 2: non-finite output is never written ----------------------------------------------
def test_diverging_sampler_is_refused_and_nothing_written(fitted_cli, tmp_path, capsys):
    from lcdiff.model.lcd import LCD

    model = LCD.load(fitted_cli[1])
    with pytest.raises(NonFiniteOutputError, match="diverged"):
        model.predict(["G00"], n_cells=4, anneal_dt=1e12)
    out = tmp_path / "pred.h5ad"
    code = main(["predict", str(fitted_cli[1]), "G00", "--anneal-dt", "1e12", "-o", str(out)])
    assert code == 2
    (line,) = _lines(capsys.readouterr().err, "error:")
    assert "NaN or infinite" in line and "--anneal-dt" in line
    assert not out.exists()


def test_writers_refuse_non_finite_values(fitted_cli, tmp_path):
    from lcdiff._io import check_finite
    from lcdiff.cli import write_h5ad
    from lcdiff.eval.benchmark import check_tables
    from lcdiff.model.lcd import LCD

    pred = LCD.load(fitted_cli[1]).predict(["G00", "G01"], n_cells=3)
    pred.layers["counts"][4, 2] = np.nan
    path = tmp_path / "p.h5ad"
    with pytest.raises(NonFiniteOutputError, match=r"layers\['counts'\].*'G01'"):
        write_h5ad(pred, path)
    assert not path.exists()
    effects = pd.DataFrame(np.eye(3), index=list("abc"), columns=list("abc"))
    check_finite(effects, "The CLIPR effect matrix")
    effects.iloc[0, 1] = np.inf
    with pytest.raises(NonFiniteOutputError, match="The CLIPR effect matrix"):
        check_finite(effects, "The CLIPR effect matrix")
    long = pd.DataFrame(
        {
            "metric": ["mmd", "mmd"],
            "method": ["lcd", "linear"],
            "value": [0.1, np.nan],
            "condition": ["A+B", "A+B"],
            "fold": ["1", "1"],
            "reason": ["", "cannot predict: gene not modelled"],
        }
    )
    summary = pd.DataFrame({"method": ["lcd"], "metric": ["mmd"], "mean": [0.1], "n": [1]})
    check_tables(long, summary, pd.DataFrame())  # NaN with a reason is an honest "n/a"
    long.loc[1, "reason"] = ""
    with pytest.raises(NonFiniteOutputError, match="mmd of linear on 'A\\+B'"):
        check_tables(long, summary, pd.DataFrame())


def test_clipr_cli_refuses_non_finite_effects(fitted_cli, tmp_path, monkeypatch, capsys):
    import importlib

    clipr_module = importlib.import_module("lcdiff.causal.clipr")  # lcdiff.causal re-exports clipr

    def broken(model, **kwargs):
        frame = pd.DataFrame(np.full((2, 2), np.nan), index=["a", "b"], columns=["a", "b"])
        return frame

    monkeypatch.setattr(clipr_module, "clipr", broken)
    out = tmp_path / "effects.csv"
    assert main(["clipr", str(fitted_cli[1]), "-o", str(out)]) == 2
    (line,) = _lines(capsys.readouterr().err, "error:")
    assert "The CLIPR effect matrix" in line and "NaN" in line
    assert not out.exists()


# --- Found 3: the same cells for any device count and chunk size ----------------------------------
FOUR_DEVICES = textwrap.dedent(
    """
    import dataclasses, sys
    import jax
    import numpy as np
    from lcdiff.model.lcd import LCD

    assert jax.device_count() == 4, jax.devices()
    model = LCD.load(sys.argv[1])
    out = {}
    for devices in (1, 4):
        for chunk in (1, 3):
            model.config = dataclasses.replace(model.config, devices=devices,
                                               condition_chunk_size=chunk)
            pred = model.predict(sys.argv[3].split(","), n_cells=7, seed=11)
            out[f"state_{devices}_{chunk}"] = pred.obsm["lcd_state"]
            out[f"counts_{devices}_{chunk}"] = pred.layers["counts"]
    np.savez(sys.argv[2], **out)
    """
)


def test_one_and_four_devices_and_chunk_sizes_give_identical_cells(fitted_cli, tmp_path):
    from lcdiff.model.lcd import LCD

    labels = ["G00+G01", "NT", "G01", "G00", "G01+G03"]
    path = tmp_path / "four.npz"
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES, str(fitted_cli[1]), str(path), ",".join(labels)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    four = dict(np.load(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # G03 was never perturbed in training
        here = LCD.load(fitted_cli[1]).predict(labels, n_cells=7, seed=11)
    for key, value in four.items():
        reference = here.obsm["lcd_state"] if key.startswith("state") else here.layers["counts"]
        np.testing.assert_array_equal(value, reference, err_msg=key)  # bit-identical
    # a label's cells do not depend on the other labels queried with it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = LCD.load(fitted_cli[1]).predict(["G01"], n_cells=7, seed=11)
    rows = here.obs["perturbation"].to_numpy() == "G01"
    np.testing.assert_array_equal(alone.layers["counts"], here.layers["counts"][rows])
    np.testing.assert_array_equal(alone.obsm["lcd_state"], here.obsm["lcd_state"][rows])


# --- Found 4: command-line messages speak command line -------------------------------------------
def _cli_messages(capsys, argv) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    for line in lines:  # one line per message, no source paths
        assert line.startswith(("error: ", "warning: ")), err
        assert not re.search(r"\.py:\d+", line), line
    return code, lines


@pytest.mark.parametrize(
    ("extra", "modify", "flag"),
    [
        (["--perturbation-key", "nope"], None, "--perturbation-key"),
        (["--perturbation-key", "guide_target", "--control", "ctrl"], None, "--control"),
        (["--perturbation-key", "guide_target", "--min-cells", "500"], None, "--min-cells"),
        (["--perturbation-key", "guide_target", "--layer", "raw"], None, "--layer"),
        (["--perturbation-key", "guide_target"], "lognorm", "--layer counts"),
        (
            ["--perturbation-key", "guide_target", "--min-cells", "20", "--n-genes", "1"],
            None,
            "--n-genes",
        ),
        (["--preset", "huge"], None, "--preset"),
        (["--set", "score_stepz=3"], None, "--set"),
    ],
)
def test_each_cli_error_names_the_flag(fitted_cli, tmp_path, capsys, extra, modify, flag):
    data = fitted_cli[0]
    if modify == "lognorm":
        adata = anndata.read_h5ad(data)
        adata.layers["counts"] = adata.X.copy()
        adata.X = np.log1p(adata.X)
        data = tmp_path / "lognorm.h5ad"
        adata.write_h5ad(data)
    argv = ["fit", str(data), "--control", "NT", *extra, "-o", str(tmp_path / "m")]
    code, lines = _cli_messages(capsys, argv)
    errors = _lines("\n".join(lines), "error:")
    assert code == 2 and len(errors) == 1, lines
    assert flag in errors[0], errors[0]
    for api in ("perturbation_key=", "control=", "layer=", "n_genes", "lc.pp.", "min_cells_per"):
        assert api not in errors[0], errors[0]


def test_warnings_use_flags_and_no_source_paths(fitted_cli, tmp_path, capsys):
    # 14 genes and a score network narrower than that: the rank warning, with its CLI fix
    argv = [
        "fit",
        str(fitted_cli[0]),
        "--perturbation-key",
        "guide_target",
        "--control",
        "NT",
        "--min-cells",
        "20",
        *QUICK,
        "--set",
        "score_hidden=8",
        "-q",
        "-o",
        str(tmp_path / "m"),
    ]
    code, lines = _cli_messages(capsys, argv)
    assert code == 0
    warned = _lines("\n".join(lines), "warning:")
    rank = [line for line in warned if "units wide" in line]
    assert len(rank) == 1 and "--set score_hidden=14" in rank[0] and "--n-genes" in rank[0]
    assert not any("lc.pp." in line or "n_genes=" in line for line in warned)


def test_cli_text_translates_keyword_arguments():
    assert cli_text("or fewer genes (lc.pp.prepare(..., n_genes=...)).") == (
        "or fewer genes (--n-genes N)."
    )
    assert cli_text('pass layer="counts".') == "pass --layer counts."
    assert cli_text("Pass control=<the label>.") == "Pass --control <the label>."
    assert cli_text("pass force=True to replace") == "pass --force to replace"
    assert cli_text("model.control=3 stays") == "model.control=3 stays"


def test_help_lists_every_preset_and_prints_no_bool(capsys):
    from lcdiff.model.config import PRESETS

    for command in ("fit", "demo", "benchmark"):
        assert main([command, "--help"]) == 0
        out = " ".join(re.sub(r"-\s*\n\s*", "-", capsys.readouterr().out).split())
        assert "<bool>" not in out
        for preset in PRESETS:
            assert preset in out, (command, preset)


# --- Found 5: what fit trained on, and labels at predict time -----------------------------------
def test_fit_reports_and_stores_kept_and_dropped_labels(fitted_cli):
    from lcdiff.model.lcd import LCD

    _, folder, out, err = fitted_cli
    assert "Training on 4 conditions: the control 'NT' and 3 perturbation(s)" in out
    assert "Not trained on 3 label(s) of the screen:" in out
    assert "not a perturbation: unassigned (cells without an assigned guide)" in out
    assert "targets a gene that is not measured: XYZ1" in out
    assert "too few cells: G02 (6 < 20)" in out
    # 'unassigned' is not called a label targeting unmeasured genes
    for line in _lines(err, "warning:"):
        if "unassigned" in line:
            assert "genes that" not in line, line
    model = LCD.load(folder)
    assert model.dropped_labels == {
        "G02": "too few cells (6 < 20)",
        "XYZ1": "targets a gene that is not measured",
        "unassigned": "not a perturbation (cells without an assigned guide)",
    }
    assert json.loads((folder / "lcd.json").read_text())["dropped_labels"] == model.dropped_labels


def test_predict_canonicalises_labels_and_says_so(fitted_cli, tmp_path, capsys):
    out = tmp_path / "p.h5ad"
    assert main(["predict", str(fitted_cli[1]), "G01+G00", "--n-cells", "3", "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "'G01+G00' is predicted as 'G00+G01'" in stdout
    pred = anndata.read_h5ad(out)
    assert set(pred.obs["perturbation"]) == {"G00+G01"}
    assert dict(pred.uns["lcdiff"]["renamed_labels"]) == {"G01+G00": "G00+G01"}


def test_predicting_another_control_label_names_the_models_control(fitted_cli, tmp_path, capsys):
    from lcdiff.model.lcd import LCD

    with pytest.raises(UnknownPerturbationError, match="control label is 'NT'"):
        LCD.load(fitted_cli[1]).predict(["ctrl"], n_cells=2)
    out = tmp_path / "p.h5ad"
    assert main(["predict", str(fitted_cli[1]), "ctrl", "-o", str(out)]) == 2
    (line,) = _lines(capsys.readouterr().err, "error:")
    assert "'NT'" in line and "not modelled" not in line


# --- property test: malformed AnnData → works or a typed lcdiff error ---------------------------
def _malformed(rng: np.random.Generator) -> tuple[anndata.AnnData | object, dict]:
    """A random screen with one or more defects; returns it with prepare's keyword arguments."""
    n_genes = int(rng.integers(0, 12)) if rng.random() < 0.1 else 12
    labels = ["ctrl"] * 30 + ["G00"] * 25 + ["G01"] * 25 + ["G00+G01"] * 20
    x = rng.poisson(5.0, (len(labels), n_genes)).astype(np.float64)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    var = pd.DataFrame(index=[f"G{i:02d}" for i in range(n_genes)])
    kwargs = {"n_genes": None, "min_cells_per_perturbation": int(rng.choice([5, 20, 200]))}
    defects = rng.choice(
        [
            "dtype_int",
            "dtype_float32",
            "dtype_object",
            "dtype_bool",
            "non_integer",
            "huge",
            "inf",
            "nan",
            "negative",
            "dup_genes",
            "dup_cells",
            "missing_obs",
            "nan_label",
            "empty_condition",
            "only_control",
            "no_cells",
            "sparse",
            "whitespace_label",
            "all_zero",
            "not_anndata",
            "unknown_layer",
            "numeric_labels",
        ],
        size=int(rng.integers(1, 4)),
        replace=False,
    )
    defects = sorted(defects, key=lambda d: d in ("sparse", "not_anndata"))  # these go last
    for defect in defects:
        if defect == "dtype_int":
            x = x.astype(np.int64)
        elif defect == "dtype_float32":
            x = x.astype(np.float32)
        elif defect == "dtype_object":
            x = x.astype(object)
        elif defect == "dtype_bool":
            x = x > 4
        elif defect == "non_integer" and x.size:
            x = np.asarray(x, np.float64) + 0.5
        elif defect == "huge" and x.size:
            x = np.asarray(x, np.float64)
            x[rng.integers(0, x.shape[0]), rng.integers(0, x.shape[1])] = float(
                rng.choice([1e9, 1e30, 1e300])
            )
        elif defect in ("inf", "nan", "negative") and x.size:
            x = np.asarray(x, np.float64)
            x[0, 0] = {"inf": np.inf, "nan": np.nan, "negative": -3.0}[defect]
        elif defect == "dup_genes" and n_genes > 2:
            var.index = [var.index[1], *var.index[1:]]
        elif defect == "dup_cells":
            obs.index = ["same"] * len(obs)
        elif defect == "missing_obs":
            obs = obs.drop(columns="perturbation")
        elif defect == "nan_label" and "perturbation" in obs:
            obs.loc[obs.index[3], "perturbation"] = np.nan
        elif defect == "empty_condition" and "perturbation" in obs:
            obs["perturbation"] = pd.Categorical(
                obs["perturbation"], categories=[*pd.unique(obs["perturbation"]), "G05"]
            )
        elif defect == "only_control" and "perturbation" in obs:
            obs["perturbation"] = "ctrl"
        elif defect == "no_cells":
            x, obs = x[:0], obs.iloc[:0]
        elif defect == "sparse":
            x = sp.csr_matrix(np.asarray(x, np.float64))
        elif defect == "whitespace_label" and "perturbation" in obs:
            obs["perturbation"] = obs["perturbation"].replace({"G00+G01": "G00 +G01"})
        elif defect == "all_zero":
            x = np.zeros((len(obs), n_genes))
        elif defect == "unknown_layer":
            kwargs["layer"] = "counts"
        elif defect == "numeric_labels" and "perturbation" in obs:
            obs["perturbation"] = np.arange(len(obs)) % 3
    if "not_anndata" in defects:
        return np.asarray(x if not sp.issparse(x) else x.toarray()), kwargs
    return anndata.AnnData(X=x, obs=obs, var=var), kwargs


def test_malformed_screens_work_or_raise_a_typed_error():
    """Random malformed AnnData to prepare (and, where it works, fit): each either works or
    raises an lcdiff.errors exception, never anything else."""
    from lcdiff.data.preprocess import prepare
    from lcdiff.model.lcd import LCD

    rng = np.random.default_rng(17)
    outcomes = {"prepared": 0, "refused": 0, "fitted": 0}
    fits_left = 2  # fitting compiles per shape: a few suffice
    for case in range(30):
        adata, kwargs = _malformed(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                screen = prepare(adata, **kwargs)
            except LcdiffError:
                outcomes["refused"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - the property under test
                pytest.fail(f"case {case}: prepare raised {type(exc).__name__}: {exc}")
            outcomes["prepared"] += 1
            if fits_left == 0:
                continue
            fits_left -= 1
            try:
                model = LCD(screen, preset="tiny", noise_steps=2, score_steps=2)
                model.fit(progress=False)
                outcomes["fitted"] += 1
            except LcdiffError:
                pass
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"case {case}: fit raised {type(exc).__name__}: {exc}")
    assert outcomes["refused"] >= 5 and outcomes["prepared"] >= 3, outcomes
    assert outcomes["fitted"] >= 1, outcomes
