"""Per-condition boxplots of a benchmark's headline metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lcdiff.errors import ConfigError

DEFAULT_METRICS: tuple[str, ...] = ("mmd_20", "rmse_m_20", "pearson_systema")


def benchmark_boxplots(
    result,
    metrics: Sequence[str] = DEFAULT_METRICS,
    methods: Sequence[str] | None = None,
    ncols: int = 3,
) -> Figure:
    """One panel per metric: a box per method over the held-out conditions (all folds pooled).

    Parameters
    ----------
    result
        A :class:`lcdiff.eval.benchmark.BenchmarkResult` or its ``long`` DataFrame
        (columns ``metric, method, value, condition, fold``).
    metrics
        Metrics to draw, one panel each (metrics absent from the table raise).
    methods
        Methods and their order (default: order of appearance).
    ncols
        Panels per row.

    Returns
    -------
    matplotlib Figure (not attached to pyplot; save it with ``fig.savefig``).

    Raises
    ------
    ConfigError
        If a metric is not in the table or the table is empty.
    """
    long: pd.DataFrame = getattr(result, "long", result)
    if len(long) == 0:
        raise ConfigError("The benchmark table is empty; nothing to plot.")
    present = set(long["metric"])
    missing = [m for m in metrics if m not in present]
    if missing:
        raise ConfigError(
            f"Metric(s) {missing} are not in the benchmark table; available include "
            f"{sorted(present)[:12]}."
        )
    methods = list(dict.fromkeys(long["method"])) if methods is None else list(methods)
    ncols = max(1, min(int(ncols), len(metrics)))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(max(3.2, 0.55 * len(methods) + 1.2) * ncols, 3.4 * nrows))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        sub = long[long["metric"] == metric]
        data = []
        for m in methods:
            v = sub.loc[sub["method"] == m, "value"].to_numpy(dtype=np.float64)
            data.append(v[np.isfinite(v)])
        positions = np.arange(1, len(methods) + 1)
        nonempty = [i for i, v in enumerate(data) if v.size]
        if nonempty:
            ax.boxplot(
                [data[i] for i in nonempty],
                positions=positions[nonempty],
                widths=0.6,
                showfliers=True,
                flierprops={"markersize": 2},
            )
        ax.set_xticks(positions)
        ax.set_xticklabels(methods, rotation=45, ha="right")
        ax.set_xlim(0.4, len(methods) + 0.6)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
