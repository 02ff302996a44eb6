"""``lcdiff simulate linear|screen``: files, seeds, refusal of existing outputs, typed errors."""

from __future__ import annotations

import anndata
import numpy as np

from lcdiff.cli import EXIT_BAD_INPUT, main
from lcdiff.data.simulate import linear_sde


def test_simulate_linear_writes_the_same_system_as_the_api(tmp_path, capsys):
    out = tmp_path / "lin.h5ad"
    args = ["simulate", "linear", "-d", "12", "-p", "4", "--graph", "sfo"]
    args += ["--cells-per-condition", "7", "--seed", "3", "-o", str(out)]
    assert main(args) == 0
    assert "35 cells × 12 genes, 5 conditions" in capsys.readouterr().out
    written = anndata.read_h5ad(out)
    expected = linear_sde(12, 4, graph="sfo", cells_per_condition=7, seed=3)
    np.testing.assert_array_equal(written.X, expected.X)
    np.testing.assert_array_equal(written.varp["causal_matrix"], expected.varp["causal_matrix"])
    assert written.uns["lcdiff"]["control"] == "ctrl"
    # No temporary files are left next to the output.
    assert [p.name for p in tmp_path.iterdir()] == ["lin.h5ad"]


def test_simulate_refuses_existing_output_without_force(tmp_path, capsys):
    out = tmp_path / "lin.h5ad"
    base = ["simulate", "linear", "-d", "5", "-p", "2", "--cells-per-condition", "3"]
    assert main([*base, "--seed", "1", "-o", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*base, "--seed", "2", "-o", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "exists already" in err and "--force" in err
    assert out.read_bytes() == before  # untouched
    assert main([*base, "--seed", "2", "-o", str(out), "--force"]) == 0
    again = anndata.read_h5ad(out)
    np.testing.assert_array_equal(again.X, linear_sde(5, 2, cells_per_condition=3, seed=2).X)


def test_simulate_screen_writes_raw_counts_with_ground_truth(tmp_path, capsys):
    out = tmp_path / "screen.h5ad"
    args = ["simulate", "screen", "--n-genes", "20", "--n-perturbed", "5", "--n-doubles", "3"]
    args += ["--cells-per-condition", "20", "--observation", "zip", "--seed", "4", "-o", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "non-additive doubles:" in printed and "of 3" in printed
    ad = anndata.read_h5ad(out)
    assert ad.n_vars == 20 and np.all(ad.X == np.round(ad.X))
    assert ad.obs["perturbation"].nunique() == 1 + 5 + 3
    assert ad.uns["simulation"]["observation"] == "zip"
    assert ad.varp["causal_matrix"].shape == (20, 20)


def test_simulate_bad_arguments_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "x.h5ad"
    bad = [
        ["simulate", "linear", "-d", "5", "-p", "9", "-o", str(out)],
        ["simulate", "linear", "-d", "5", "-p", "2", "--graph", "tree", "-o", str(out)],
        ["simulate", "screen", "--n-genes", "20", "--n-perturbed", "10", "-o", str(out)],
        ["simulate", "screen", "--observation", "poisson", "-o", str(out)],
        ["simulate", "linear", "-d", "5", "-p", "2", "-o", str(tmp_path / "x.csv")],
    ]
    for argv in bad:
        assert main(argv) == EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_simulate_usage_errors_are_nonzero(tmp_path):
    assert main(["simulate", "linear", "-d", "5"]) != 0  # missing -o
    assert main(["simulate", "linear", "-d", "1", "-o", str(tmp_path / "a.h5ad")]) != 0
    assert main(["simulate", "nonsense"]) != 0
