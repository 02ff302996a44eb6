"""The ``lcdiff`` command line: help, consistent options, and one-line errors on bad input."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest

import lcdiff.cli as cli
from lcdiff.cli import main
from lcdiff.errors import OutputExistsError, OutputNotWritableError


def _stderr_line(capsys) -> str:
    """The single stderr line of a failed command (fails if there are more or a traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


def _raw_screen(n_per_condition: int = 30, n_genes: int = 12, seed: int = 0) -> anndata.AnnData:
    """A small raw count screen: ctrl, singles G00..G02 and two doubles."""
    rng = np.random.default_rng(seed)
    labels = ["ctrl", "G00", "G01", "G02", "G00+G01", "G01+G02"]
    counts = rng.poisson(5.0, (n_per_condition * len(labels), n_genes)).astype(np.float32)
    obs = pd.DataFrame({"perturbation": np.repeat(labels, n_per_condition)})
    obs.index = [f"c{i}" for i in range(len(obs))]
    adata = anndata.AnnData(counts, obs=obs)
    adata.var_names = [f"G{i:02d}" for i in range(n_genes)]
    return adata


# --- the command tree -------------------------------------------------------------------------
def _commands() -> dict:
    """Every leaf command by its full name (sub-groups such as ``simulate`` are descended)."""
    import typer.main

    cli._load_commands()
    found: dict = {}

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command

    walk(typer.main.get_command(cli.app), "")
    return found


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "fit", "predict"):
        assert name in out


@pytest.mark.parametrize("command", ["demo", "fit", "predict"])
def test_command_help_exits_zero_and_documents_options(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--force" in out and "--seed" in out


def test_all_commands_share_the_output_options():
    """Every command writes its output with -o/--out, refuses to overwrite without --force and
    takes --seed (all of them sample or split at random)."""
    commands = _commands()
    assert {"demo", "fit", "predict"} <= set(commands)
    for name, command in commands.items():
        if name.startswith("peers "):
            # environment management (install/list the GEARS and CPA virtualenvs): no result
            # file and nothing random; --prefix/--force are its own options
            assert command.help, f"'lcdiff {name}' has no help text"
            continue
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert "--out" in opts and "-o" in opts, f"'lcdiff {name}' lacks -o/--out"
        assert "--force" in opts, f"'lcdiff {name}' lacks --force"
        assert "--seed" in opts, f"'lcdiff {name}' lacks --seed"
        assert command.help, f"'lcdiff {name}' has no help text"


def test_unknown_command_and_missing_argument_are_usage_errors():
    assert main(["no-such-command"]) == 2
    assert main(["predict"]) == 2


def test_exit_code_of_typer_exit_is_kept(monkeypatch):
    import typer

    @cli.app.command("exit-three", hidden=True)
    def _exit_three() -> None:
        raise typer.Exit(3)

    try:
        assert main(["exit-three"]) == 3
    finally:
        cli.app.registered_commands = [
            c for c in cli.app.registered_commands if c.name != "exit-three"
        ]


# --- shared helpers ---------------------------------------------------------------------------
def test_check_output_refuses_existing_unless_force(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(OutputExistsError, match="--force"):
        cli.check_output(tmp_path / "x")
    assert cli.check_output(tmp_path / "x", force=True) == tmp_path / "x"
    assert cli.check_output(tmp_path / "new" / "deeper" / "y.h5ad") is not None
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_force_never_replaces_a_folder_lcdiff_did_not_write(tmp_path, monkeypatch):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExistsError, match="not written by lcdiff"):
        cli.check_output(precious, force=True, marker="report.html")
    (precious / "report.html").write_text("")  # an earlier run's output may be replaced
    assert cli.check_output(precious, force=True, marker="report.html") == precious
    (tmp_path / "empty").mkdir()
    assert cli.check_output(tmp_path / "empty", force=True, marker="report.html")
    monkeypatch.chdir(precious)
    for here in (".", str(tmp_path)):
        with pytest.raises(OutputExistsError, match="current folder"):
            cli.check_output(here, force=True, marker="report.html")


def test_fit_force_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("keep")
    data = cli.write_h5ad(_raw_screen(), tmp_path / "s.h5ad")
    assert main(["fit", str(data), "--force", "-o", str(tmp_path / "m")]) == 2
    assert "not written by lcdiff" in _stderr_line(capsys)
    assert (tmp_path / "m" / "notes.txt").read_text() == "keep"


def test_check_output_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputNotWritableError, match="not a folder"):
        cli.check_output(tmp_path / "file.txt" / "out")


def test_write_h5ad_is_atomic_and_replace_folder_swaps(tmp_path):
    adata = _raw_screen(n_per_condition=2)
    path = cli.write_h5ad(adata, tmp_path / "a.h5ad")
    assert anndata.read_h5ad(path).shape == adata.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stale.txt").write_text("stale")
    (tmp_path / ".new").mkdir()
    (tmp_path / ".new" / "fresh.txt").write_text("fresh")
    cli.replace_folder(tmp_path / ".new", tmp_path / "old")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["fresh.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad", "old"]


# --- bad input, one line each -----------------------------------------------------------------
def test_fit_missing_file(tmp_path, capsys):
    code = main(["fit", str(tmp_path / "nope.h5ad"), "-o", str(tmp_path / "m")])
    assert code == 2
    assert "does not exist" in _stderr_line(capsys)
    assert not (tmp_path / "m").exists()


def test_fit_wrong_format(tmp_path, capsys):
    bad = tmp_path / "table.h5ad"
    bad.write_text("gene,count\nA,1\n")
    assert main(["fit", str(bad), "-o", str(tmp_path / "m")]) == 2
    assert "Cannot read" in _stderr_line(capsys)


def test_fit_folder_instead_of_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path), "-o", str(tmp_path / "m")]) == 2
    assert "is a folder" in _stderr_line(capsys)


def test_fit_existing_output_without_force(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    data = cli.write_h5ad(_raw_screen(), tmp_path / "s.h5ad")
    assert main(["fit", str(data), "-o", str(tmp_path / "m")]) == 2
    assert "--force" in _stderr_line(capsys)


def test_fit_unwritable_output(tmp_path, capsys):
    data = cli.write_h5ad(_raw_screen(), tmp_path / "s.h5ad")
    assert main(["fit", str(data), "-o", str(data / "model")]) == 2
    assert "Cannot write output" in _stderr_line(capsys)


def test_fit_unknown_preset(tmp_path, capsys):
    data = cli.write_h5ad(_raw_screen(), tmp_path / "s.h5ad")
    assert main(["fit", str(data), "--preset", "huge", "-o", str(tmp_path / "m")]) == 2
    assert "huge" in _stderr_line(capsys)


def test_fit_unknown_control_label(tmp_path, capsys):
    data = cli.write_h5ad(_raw_screen(), tmp_path / "s.h5ad")
    code = main(
        ["fit", str(data), "--control", "NT", "--preset", "tiny", "-o", str(tmp_path / "m")]
    )
    assert code == 2
    assert "NT" in _stderr_line(capsys)
    assert not (tmp_path / "m").exists()


def test_fit_unknown_perturbation_key(tmp_path, capsys):
    data = cli.write_h5ad(_raw_screen(), tmp_path / "s.h5ad")
    code = main(
        [
            "fit",
            str(data),
            "--perturbation-key",
            "guide",
            "--preset",
            "tiny",
            "-o",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2
    assert "guide" in _stderr_line(capsys)


def test_predict_missing_model_folder(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "none"), "G00", "-o", str(tmp_path / "p.h5ad")]) == 2
    assert "does not exist" in _stderr_line(capsys)


def test_predict_output_must_be_h5ad(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "G00", "-o", str(tmp_path / "p.csv")]) == 2
    assert ".h5ad" in _stderr_line(capsys)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "fit", str(tmp_path / "nope.h5ad"), "-o", str(tmp_path / "m")])


# --- fit and predict on a tiny model ----------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model fitted with the CLI on a small raw screen (preset tiny)."""
    folder = tmp_path_factory.mktemp("cli-model")
    data = cli.write_h5ad(_raw_screen(), folder / "screen.h5ad")
    code = main(
        [
            "fit",
            str(data),
            "--preset",
            "tiny",
            "--min-cells",
            "20",
            "--quiet",
            "-o",
            str(folder / "model"),
        ]
    )
    assert code == 0
    return folder / "model"


def test_fit_writes_a_loadable_model(model_dir):
    from lcdiff.model.lcd import LCD

    model = LCD.load(model_dir)
    assert model.is_fitted and model.control == "ctrl"
    assert {"G00", "G01", "G02"} <= set(model.trained_targets)
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model", "screen.h5ad"]


def test_predict_writes_cells_of_every_label(model_dir, tmp_path):
    out = tmp_path / "pred.h5ad"
    code = main(["predict", str(model_dir), "G02+G00", "G01", "--n-cells", "7", "-o", str(out)])
    assert code == 0
    pred = anndata.read_h5ad(out)
    assert pred.n_obs == 14
    # labels are canonicalized ("G02+G00" -> "G00+G02"), an unseen combination
    assert pred.obs["perturbation"].value_counts().to_dict() == {"G00+G02": 7, "G01": 7}
    assert "counts" in pred.layers


def test_predict_existing_output_without_force(model_dir, tmp_path, capsys):
    out = tmp_path / "pred.h5ad"
    out.write_text("keep me")
    assert main(["predict", str(model_dir), "G01", "-o", str(out)]) == 2
    assert "--force" in _stderr_line(capsys)
    assert out.read_text() == "keep me"
    assert (
        main(["predict", str(model_dir), "G01", "--n-cells", "3", "-o", str(out), "--force"]) == 0
    )
    assert anndata.read_h5ad(out).n_obs == 3


def test_predict_unknown_gene(model_dir, tmp_path, capsys):
    out = tmp_path / "pred.h5ad"
    assert main(["predict", str(model_dir), "G01+NOTAGENE", "-o", str(out)]) == 2
    assert "NOTAGENE" in _stderr_line(capsys)
    assert not out.exists()


def test_predict_malformed_perturbation(model_dir, tmp_path, capsys):
    out = tmp_path / "pred.h5ad"
    assert main(["predict", str(model_dir), "G01++G02", "-o", str(out)]) == 2
    assert "G01++G02" in _stderr_line(capsys)


def test_predict_wrong_model_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "G01", "-o", str(tmp_path / "p.h5ad")]) == 2
    _stderr_line(capsys)


def test_predict_unwritable_output(model_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["predict", str(model_dir), "G01", "-o", str(blocker / "p.h5ad")]) == 2
    assert "Cannot write output" in _stderr_line(capsys)
