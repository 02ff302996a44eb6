"""``lcdiff clipr MODEL_DIR -o effects.csv``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lcdiff as lc
import lcdiff.cli.clipr as clipr_cli
from lcdiff.cli import main
from lcdiff.errors import InputNotFoundError


@pytest.fixture
def oracle_dir(tmp_path, monkeypatch):
    """A model folder whose 'load' returns an exactly linear oracle (no training needed)."""
    rng = np.random.default_rng(0)
    d = 6
    drift = rng.normal(size=(d, d)) * 0.3 - 2.0 * np.eye(d)
    model = lc.causal.LinearSDEOracle(
        drift, rng.normal(size=d), rng.uniform(5, 10, d), [f"G{i}" for i in range(d)]
    )
    folder = tmp_path / "model"
    folder.mkdir()

    def fake_load(path):
        if path != folder:
            raise InputNotFoundError(f"no model at {path}")
        return model

    monkeypatch.setattr(clipr_cli, "load_model", fake_load)
    return folder, model


def test_cli_writes_the_causal_matrix(oracle_dir, tmp_path):
    folder, model = oracle_dir
    out = tmp_path / "effects.csv"
    assert main(["clipr", str(folder), "--tikhonov", "0", "-o", str(out)]) == 0
    effects = pd.read_csv(out, index_col=0)
    assert list(effects.index) == model.genes == list(effects.columns)
    np.testing.assert_allclose(effects.to_numpy(), model.a.T, atol=1e-6)
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left nothing behind


def test_cli_refuses_to_overwrite_without_force(oracle_dir, tmp_path, capsys):
    folder, _ = oracle_dir
    out = tmp_path / "effects.csv"
    out.write_text("keep me")
    assert main(["clipr", str(folder), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["clipr", str(folder), "-o", str(out), "--force"]) == 0
    assert out.read_text() != "keep me"


def test_cli_moments_method(oracle_dir, tmp_path):
    folder, model = oracle_dir
    out = tmp_path / "m.csv"
    assert main(["clipr", str(folder), "--method", "moments", "-o", str(out)]) == 0
    assert pd.read_csv(out, index_col=0).shape == (6, 6)
    assert (
        main(
            [
                "clipr",
                str(folder),
                "--method",
                "moments",
                "--moments-from",
                "samples",
                "--n-cells",
                "300",
                "-o",
                str(out),
                "--force",
            ]
        )
        == 0
    )


def test_cli_reference_control(oracle_dir, tmp_path, capsys):
    folder, model = oracle_dir
    out = tmp_path / "effects.csv"
    assert (
        main(["clipr", str(folder), "--tikhonov", "0", "--reference", "control", "-o", str(out)])
        == 0
    )
    assert "drift at the control" in capsys.readouterr().out
    np.testing.assert_allclose(pd.read_csv(out, index_col=0).to_numpy(), model.a.T, atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reference", "middle"], "--reference must be one of ('origin', 'control')"),
        (["--method", "moments", "--reference", "control"], "--method paper only"),
        (["--method", "magic"], "--method"),
        (["--solver", "lasso"], "--solver"),
        (["--method", "moments", "--moments-from", "guess"], "moments_from"),
    ],
)
def test_cli_rejects_bad_options(oracle_dir, tmp_path, capsys, args, message):
    folder, _ = oracle_dir
    out = tmp_path / "e.csv"
    assert main(["clipr", str(folder), *args, "-o", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_cli_rejects_a_missing_model_dir_and_a_non_csv_output(tmp_path, capsys):
    out = tmp_path / "e.csv"
    assert main(["clipr", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    (tmp_path / "m").mkdir()
    assert main(["clipr", str(tmp_path / "m"), "-o", str(tmp_path / "e.txt")]) == 2
    assert ".csv" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_a_saved_lcd(tmp_path):
    data = lc.simulate.linear_sde(6, 6, "er", cells_per_condition=60, seed=0)
    model = lc.LCD(data, preset="tiny", noise_model=None).fit(progress=False)
    model.save(tmp_path / "model")
    out = tmp_path / "effects.csv"
    assert main(["clipr", str(tmp_path / "model"), "-o", str(out)]) == 0
    effects = pd.read_csv(out, index_col=0)
    np.testing.assert_allclose(
        effects.to_numpy(), lc.tl.clipr(model).to_numpy(), rtol=1e-5, atol=1e-6
    )
