"""Summary tables of a benchmark: mean ± SEM per method and metric, best and ties marked.

Follows lcd-evaluation §3.8: the unit of analysis is one test condition (values pooled over
folds); per method × metric the mean and the SEM (``ddof=0``, NaN omitted) are reported; the best
mean is marked, and so is every method whose values a two-sided Welch t-test cannot tell apart
from the best method's (p ≥ 0.05).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lcdiff.errors import ConfigError

#: Metrics shown in the headline tables (lcd-evaluation §3.8: ``benchmark_20`` and ``benchmark``).
HEADLINE_METRICS: tuple[str, ...] = ("mmd_20", "rmse_m_20", "pearson_systema")
BENCHMARK_20_METRICS: tuple[str, ...] = ("mmd_20", "ed_20", "rmse_m_20", "pearson_systema_20")
BENCHMARK_METRICS: tuple[str, ...] = ("mmd", "ed", "rmse_m", "pearson_systema")

# Metric-name prefixes whose larger values are better; every other metric is a distance/error.
_HIGHER_IS_BETTER_PREFIXES = ("pearson", "classify_", "causal_", "gi_cls_")

LONG_COLUMNS = ("metric", "method", "value", "condition", "fold")


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (correlations, AUROC, F1, ...)."""
    return str(metric).startswith(_HIGHER_IS_BETTER_PREFIXES)


def _check_long(long: pd.DataFrame) -> None:
    missing = [c for c in LONG_COLUMNS if c not in long.columns]
    if missing:
        raise ConfigError(
            f"The long table lacks column(s) {missing}; it needs {list(LONG_COLUMNS)} "
            "(as BenchmarkResult.long has)."
        )


def summary_table(
    long: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mean ± SEM per method and metric, with the best method and its statistical ties marked.

    Parameters
    ----------
    long
        Long table with columns ``metric, method, value, condition, fold`` (one row per method,
        metric and test condition).
    metrics
        Metrics to summarize (default: every metric in ``long``, in order of appearance).
    methods
        Methods and their row order (default: order of appearance).
    alpha
        Welch t-test level: a method is tied with the best when p ≥ ``alpha``.

    Returns
    -------
    DataFrame with one row per (method, metric): ``mean``, ``sem``, ``n`` (finite values),
    ``n_missing`` (NaN values, e.g. conditions the method could not predict), ``p_vs_best``,
    ``best`` (the best mean) and ``tied`` (best, or p ≥ ``alpha`` against the best; a NaN p, as
    for two constant samples, counts as a tie because the test cannot separate them).
    """
    _check_long(long)
    metrics = list(dict.fromkeys(long["metric"])) if metrics is None else list(metrics)
    methods = list(dict.fromkeys(long["method"])) if methods is None else list(methods)
    rows = []
    for metric in metrics:
        sub = long[long["metric"] == metric]
        values = {
            m: sub.loc[sub["method"] == m, "value"].to_numpy(dtype=np.float64) for m in methods
        }
        finite = {m: v[np.isfinite(v)] for m, v in values.items()}
        means = {m: (float(v.mean()) if v.size else np.nan) for m, v in finite.items()}
        best = _best_method(means, higher_is_better(metric))
        for m in methods:
            v = finite[m]
            if best is None or v.size == 0:
                p = np.nan
            elif m == best:
                p = 1.0
            else:
                p = _welch_p(v, finite[best])
            rows.append(
                {
                    "method": m,
                    "metric": metric,
                    "mean": means[m],
                    "sem": float(stats.sem(v, ddof=0)) if v.size > 1 else np.nan,
                    "n": int(v.size),
                    "n_missing": int(values[m].size - v.size),
                    "p_vs_best": p,
                    "best": m == best,
                    "tied": bool(v.size > 0 and best is not None and (np.isnan(p) or p >= alpha)),
                }
            )
    return pd.DataFrame(
        rows,
        columns=["method", "metric", "mean", "sem", "n", "n_missing", "p_vs_best", "best", "tied"],
    )


def _best_method(means: dict[str, float], higher: bool) -> str | None:
    valid = {m: v for m, v in means.items() if np.isfinite(v)}
    if not valid:
        return None
    return (max if higher else min)(valid, key=valid.get)


def _welch_p(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or b.size < 2:
        return np.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # scipy warns about precision loss for (nearly) constant samples; p is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.pvalue)


def _format_cell(row: pd.Series, metric: str) -> str:
    if not np.isfinite(row["mean"]):
        return "n/a"
    digits = 6 if metric.startswith("mmd") else 3
    text = f"{row['mean']:.{digits}f}"
    if np.isfinite(row["sem"]):
        text += f" ± {row['sem']:.{digits}f}"
    if row["best"]:
        text = f"**{text}**"
    if row["tied"]:
        text += " *"
    if row["n_missing"]:
        text += f" ({row['n_missing']} n/a)"
    return text


def wide_table(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Pivot a :func:`summary_table` to methods × metrics of formatted ``mean ± SEM`` strings.

    The best mean is bold (``**…**``) and every method tied with it carries ``*``; metrics use
    six decimals for MMD and three otherwise (as the reference tables).
    """
    metrics = list(dict.fromkeys(summary["metric"])) if metrics is None else list(metrics)
    methods = list(dict.fromkeys(summary["method"]))
    table = pd.DataFrame(index=pd.Index(methods, name="method"))
    for metric in metrics:
        sub = summary[summary["metric"] == metric].set_index("method")
        arrow = "↑" if higher_is_better(metric) else "↓"
        table[f"{metric} {arrow}"] = [
            _format_cell(sub.loc[m], metric) if m in sub.index else "n/a" for m in methods
        ]
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame (index as first column)."""
    header = [table.index.name or "", *map(str, table.columns)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx), *map(str, row.to_numpy())]) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(
    long: pd.DataFrame,
    tables: dict[str, Sequence[str]] | None = None,
    methods: Sequence[str] | None = None,
) -> str:
    """Markdown with one table per named metric group (default: headline, benchmark_20, benchmark).

    Metrics absent from ``long`` are skipped; a group with none present is left out.
    """
    tables = (
        {
            "headline": HEADLINE_METRICS,
            "benchmark_20": BENCHMARK_20_METRICS,
            "benchmark": BENCHMARK_METRICS,
        }
        if tables is None
        else tables
    )
    present = set(long["metric"])
    parts = []
    for title, metrics in tables.items():
        chosen = [m for m in metrics if m in present]
        if not chosen:
            continue
        summary = summary_table(long, chosen, methods)
        parts.append(f"### {title}\n\n" + to_markdown(wide_table(summary, chosen)))
    legend = (
        "Mean ± SEM over test conditions pooled over folds (SEM with ddof=0). **Bold**: best "
        "mean; `*`: best or not distinguishable from it (Welch two-sided t-test p ≥ 0.05); "
        "↓ lower is better, ↑ higher is better; 'n/a': conditions a method could not predict.\n"
    )
    return legend + "\n" + "\n".join(parts)
