"""Benchmark runner, summary tables, plots and the ``lcdiff benchmark`` command."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest

import lcdiff as lc
from lcdiff.cli import main
from lcdiff.errors import ConfigError, NotPreparedError, OutputExistsError
from lcdiff.eval.baselines import AdditiveBaseline
from lcdiff.eval.benchmark import BenchmarkFailureWarning, benchmark
from lcdiff.eval.tables import higher_is_better, summary_markdown, summary_table, wide_table
from test_baselines import SimpleSplit, doubles_split, make_screen

HAS_SPLITS = importlib.util.find_spec("lcdiff.data.splits") is not None


class Picky(AdditiveBaseline):
    """Additive, but refuses one condition (to check NaN rows with a reason)."""

    name = "picky"

    def __init__(self, refuse: str, seed: int = 0):
        super().__init__(seed)
        self.refuse = refuse

    def cannot_predict(self, label):
        return "refused on purpose" if label == self.refuse else None


class Broken(AdditiveBaseline):
    name = "broken"

    def _fit(self, data):
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def screen():
    return make_screen(cells_per_condition=50)


@pytest.fixture(scope="module")
def splits(screen):
    first = doubles_split(screen, n_test=4)
    labels = lc.data.screen.conditions(screen)
    doubles = [lab for lab in labels if "+" in lab]
    test = tuple(doubles[4:8])
    second = SimpleSplit(train=tuple(lab for lab in labels if lab not in test), test=test, fold=2)
    return [first, second]


@pytest.fixture(scope="module")
def result(screen, splits):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = benchmark(
            screen,
            methods=[
                "control",
                "pooled",
                "additive",
                "mean",
                "linear",
                Picky(refuse=splits[0].test[0]),
                Broken(),
            ],
            splits=splits,
            progress=False,
            n_cells=100,
            keep_predictions=True,
        )
    res.caught = [w for w in caught if issubclass(w.category, BenchmarkFailureWarning)]
    return res


def test_long_table_has_every_method_condition_and_fold(result, splits):
    long = result.long
    assert list(long.columns) == ["metric", "method", "value", "condition", "fold", "reason"]
    for method in ["control", "pooled", "additive", "mean", "linear", "picky", "broken"]:
        for fold, split in zip(["1", "2"], splits, strict=True):
            sub = long[(long["method"] == method) & (long["fold"] == fold)]
            assert set(sub["condition"]) == set(split.test), (method, fold)
    metrics = set(long["metric"])
    assert {"mmd_20", "rmse_m_20", "pearson_systema", "mmd", "ed", "mmd_hvg_0-5"} <= metrics


def test_unpredictable_condition_and_failed_method_become_nan_rows_with_reasons(result, splits):
    long = result.long
    refused = long[
        (long["method"] == "picky")
        & (long["condition"] == splits[0].test[0])
        & (long["fold"] == "1")
    ]
    assert len(refused) == len(set(long["metric"]))
    assert refused["value"].isna().all()
    assert refused["reason"].str.contains("refused on purpose").all()
    others = long[(long["method"] == "picky") & (long["condition"] != splits[0].test[0])]
    measured = others["value"].notna()
    assert measured.any() and (others.loc[measured, "reason"] == "").all()
    # a metric that is undefined for a prediction (NaN) says so: no NaN without a reason
    assert (others.loc[~measured, "reason"] == "undefined for this prediction").all()
    broken = long[long["method"] == "broken"]
    assert broken["value"].isna().all() and broken["reason"].str.contains("boom").all()
    assert set(result.failures["method"]) == {"broken"}
    assert set(result.failures["stage"]) == {"fit"}
    assert len(result.caught) == 2  # one warning per fold


def test_additive_wins_on_additive_truth(result):
    summary = result.summary
    rmse = summary[summary["metric"] == "rmse_m"].set_index("method")
    assert rmse["best"].idxmax() in {"additive", "picky", "linear"}
    assert rmse.loc["additive", "mean"] < rmse.loc["mean", "mean"]
    assert rmse.loc["additive", "mean"] < rmse.loc["control", "mean"]
    assert not rmse.loc["control", "tied"]
    mmd = summary[summary["metric"] == "mmd_20"].set_index("method")
    assert mmd.loc["additive", "mean"] < mmd.loc["pooled", "mean"]
    assert rmse.loc["broken", "n"] == 0 and rmse.loc["broken", "n_missing"] == 8
    assert rmse.loc["picky", "n_missing"] == 1


def test_predictions_kept_and_splits_recorded(result, splits):
    pred = result.predictions[("1", "additive")]
    assert set(pred.obs["perturbation"].astype(str)) == set(splits[0].test)
    # Up to 100 distinct control cells per condition (never duplicated; see sample_rows).
    per_label = pred.obs["perturbation"].astype(str).value_counts()
    assert per_label.nunique() == 1 and 0 < per_label.iloc[0] <= 100
    assert set(result.splits) == {"1", "2"}
    assert set(result.timings["method"]) >= {"additive", "broken"}


def test_save_writes_tables_and_plots_and_refuses_to_overwrite(result, tmp_path):
    out = result.save(tmp_path / "bench")
    for name in [
        "long.csv",
        "summary.csv",
        "summary.md",
        "failures.csv",
        "timings.csv",
        "config.json",
        "splits.json",
        "boxplots.png",
    ]:
        assert (out / name).is_file(), name
    long = pd.read_csv(out / "long.csv")
    assert len(long) == len(result.long)
    md = (out / "summary.md").read_text()
    assert "mmd_20" in md and "**" in md and "additive" in md and "boom" in md
    assert (out / "boxplots.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputExistsError, match="force"):
        result.save(out)
    result.save(out, force=True, plots=False)


def test_failed_fold_is_reported_and_the_others_still_run(screen, splits):
    bad = SimpleSplit(train=splits[0].train, test=("NOT+THERE",), fold=3)
    with pytest.warns(BenchmarkFailureWarning, match="split"):
        res = benchmark(
            screen, methods=["additive"], splits=[bad, splits[1]], progress=False, n_cells=50
        )
    assert list(res.failures["stage"]) == ["split"]
    assert set(res.long["fold"]) == {"2"}


def test_runner_refuses_bad_input(screen, splits, tmp_path):
    raw = screen.copy()
    del raw.uns["lcdiff"]
    with pytest.raises(NotPreparedError):
        benchmark(raw, methods=["additive"], splits=splits, progress=False)
    with pytest.raises(ConfigError):
        benchmark(screen, methods=[], splits=splits, progress=False)
    with pytest.raises(ConfigError, match="Duplicate"):
        benchmark(screen, methods=["salt", "additive"], splits=splits, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputExistsError):
        benchmark(
            screen, methods=["additive"], splits=splits, out=tmp_path / "full", progress=False
        )


# --- tables -----------------------------------------------------------------------------------
def _long(values: dict[str, list[float]], metric: str) -> pd.DataFrame:
    rows = [
        {"metric": metric, "method": m, "value": v, "condition": f"c{i}", "fold": "1"}
        for m, vals in values.items()
        for i, v in enumerate(vals)
    ]
    return pd.DataFrame(rows)


def test_summary_mean_sem_best_and_welch_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.1, 30)
    b = a + rng.normal(0.0, 0.1, 30) + 0.01  # indistinguishable from a
    c = rng.normal(3.0, 0.1, 30)  # clearly worse for a distance
    long = _long({"a": list(a), "b": list(b), "c": list(c)}, "mmd_20")
    s = summary_table(long).set_index("method")
    np.testing.assert_allclose(s.loc["a", "mean"], a.mean())
    np.testing.assert_allclose(s.loc["a", "sem"], a.std(ddof=0) / np.sqrt(30))
    assert s.loc["a", "best"] and not s.loc["b", "best"]
    assert s.loc["b", "tied"] and not s.loc["c", "tied"]
    assert s.loc["c", "p_vs_best"] < 1e-10
    # for a correlation, larger is better: c wins
    s2 = summary_table(_long({"a": list(a), "c": list(c)}, "pearson_systema")).set_index("method")
    assert s2.loc["c", "best"] and not s2.loc["a", "tied"]


def test_summary_ignores_nan_but_counts_it():
    long = _long({"a": [1.0, 2.0, np.nan], "b": [np.nan, np.nan, np.nan]}, "rmse_m")
    s = summary_table(long).set_index("method")
    assert s.loc["a", "n"] == 2 and s.loc["a", "n_missing"] == 1
    assert np.isnan(s.loc["b", "mean"]) and not s.loc["b", "tied"]
    table = wide_table(summary_table(long))
    assert table.loc["b", "rmse_m ↓"] == "n/a"
    assert "(1 n/a)" in table.loc["a", "rmse_m ↓"]


def test_markdown_and_direction():
    assert higher_is_better("pearson_systema_20") and higher_is_better("classify_de_f1")
    assert not higher_is_better("mmd_20") and not higher_is_better("rmse_m")
    long = _long({"a": [0.1, 0.2, 0.15], "b": [0.5, 0.6, 0.55]}, "mmd_20")
    md = summary_markdown(long)
    assert "| a | **0.150000 ± 0.023570** * |" in md
    with pytest.raises(ConfigError, match="column"):
        summary_table(long.drop(columns=["fold"]))


def test_boxplot_figure(result):
    fig = lc.pl.benchmark_boxplots(result, metrics=["mmd_20", "rmse_m"])
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][:2] == ["control", "pooled"]
    with pytest.raises(ConfigError, match="nope"):
        lc.pl.benchmark_boxplots(result, metrics=["nope"])


# --- command line -----------------------------------------------------------------------------
def test_cli_refuses_missing_file_wrong_format_and_existing_output(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "none.h5ad"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not an h5ad")
    assert main(["benchmark", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "h5ad" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert main(["benchmark", str(bad), "-o", str(tmp_path / "exists")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["benchmark", str(bad), "-o", str(tmp_path / "o2"), "--methods", "magic"]) == 2
    assert "magic" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_SPLITS, reason="lc.pp.split (lcdiff.data.splits) not available yet")
def test_cli_runs_on_a_prepared_screen(tmp_path, capsys):
    screen = make_screen(cells_per_condition=40)
    path = tmp_path / "screen.h5ad"
    screen.write_h5ad(path)
    out = tmp_path / "bench"
    code = main(
        [
            "benchmark",
            str(path),
            "-o",
            str(out),
            "--methods",
            "control,additive",
            "--folds",
            "1",
            "--scheme",
            "paper",
            "--n-val",
            "3",
            "--n-folds",
            "4",
            "--n-cells",
            "50",
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "summary.md").is_file() and (out / "long.csv").is_file()
    assert "additive" in captured.out
    expected = lc.pp.split(screen, scheme="paper", fold=1, n_val=3, n_folds=4).test
    long = pd.read_csv(out / "long.csv")
    assert set(long["condition"]) == set(expected)


# --- with the real splitter and LCD -----------------------------------------------------------
@pytest.mark.skipif(not HAS_SPLITS, reason="lc.pp.split (lcdiff.data.splits) not available yet")
def test_paper_scheme_through_lc_pp_split(screen):
    res = benchmark(
        screen,
        methods=["additive", "mean"],
        scheme="paper",
        folds=[1, 2],
        split_options={"n_val": 3, "n_folds": 4},
        progress=False,
        n_cells=50,
    )
    assert len(res.failures) == 0, res.failures
    for fold in ["1", "2"]:
        expected = set(lc.pp.split(screen, scheme="paper", fold=int(fold), n_val=3, n_folds=4).test)
        assert set(res.long.loc[res.long["fold"] == fold, "condition"]) == expected
    assert set(res.splits) == {"1", "2"}


@pytest.mark.slow  # ~45 s on two shared cores (JIT compilation of the tiny LCD)
@pytest.mark.skipif(importlib.util.find_spec("lcdiff.model.lcd") is None, reason="no LCD yet")
def test_lcd_runs_in_the_benchmark_with_the_tiny_preset(screen, splits):
    res = benchmark(
        screen,
        methods=["additive", "lcd"],
        splits=splits[:1],
        lcd_preset="tiny",
        progress=False,
        n_cells=50,
    )
    assert len(res.failures) == 0, res.failures
    lcd = res.long[res.long["method"] == "lcd"]
    assert set(lcd["condition"]) == set(splits[0].test)
    assert lcd.loc[lcd["metric"] == "mmd", "value"].notna().all()
