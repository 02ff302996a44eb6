"""The benchmark runner: every method, every fold, every held-out condition, every metric.

For each fold the runner builds the split (``lc.pp.split``), fits every method on the split's
training conditions, predicts the held-out conditions (``n_cells`` cells each) and scores them
against all observed cells with :func:`lcdiff.eval.metrics.condition_metrics`, using the
training control cells as reference, the mean of the training perturbation means as centroid,
each condition's marker genes (``_20`` metrics) and the screen's HVG ranks (lcd-evaluation §3).

Nothing is dropped silently: a condition a method cannot predict, and every condition of a
method that failed, gets NaN rows with a ``reason``; failures are also warned about and listed
in :attr:`BenchmarkResult.failures`, and the remaining methods and folds still run.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from lcdiff._io import atomic_output, atomic_write_text
from lcdiff.data.labels import canonical_label
from lcdiff.data.normalize import dense
from lcdiff.data.screen import PERTURBATION_KEY, control_label, screen_info
from lcdiff.errors import ConfigError, OutputExistsError, SplitError
from lcdiff.eval.tables import HEADLINE_METRICS, summary_markdown, summary_table

DEFAULT_METHODS: tuple[str, ...] = (
    "control",
    "pooled",
    "additive",
    "mean",
    "linear",
    "peper",
    "lcd",
)
LONG_COLUMNS = ["metric", "method", "value", "condition", "fold", "reason"]
FAILURE_COLUMNS = ["fold", "method", "stage", "error"]
#: Metrics drawn as per-condition boxplots by :meth:`BenchmarkResult.save`.
PLOT_METRICS: tuple[str, ...] = (
    "mmd_20",
    "mmd",
    "rmse_m_20",
    "rmse_m",
    "pearson_systema_20",
    "pearson_systema",
)


class BenchmarkFailureWarning(UserWarning):
    """A fold or a method failed during a benchmark; the rest still ran."""


@dataclass
class BenchmarkResult:
    """What :func:`benchmark` measured.

    Attributes
    ----------
    long
        One row per (metric, method, condition, fold): columns ``metric, method, value,
        condition, fold, reason`` (``reason`` is empty for measured values and says why for NaN
        values).
    failures
        One row per failed step: ``fold, method, stage, error`` (``stage`` is ``split``, ``fit``,
        ``predict`` or ``metrics``).
    timings
        Seconds spent per fold and method: ``fold, method, fit_s, predict_s, metrics_s``.
    splits
        Fold → the split as JSON (``Split.to_json()``), so the exact held-out sets are on record.
    config
        The arguments of the run.
    predictions
        ``(fold, method)`` → predicted AnnData, when ``keep_predictions=True``.
    """

    long: pd.DataFrame
    failures: pd.DataFrame
    timings: pd.DataFrame
    splits: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    predictions: dict[tuple[str, str], AnnData] = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.long["method"])) if len(self.long) else []

    @property
    def summary(self) -> pd.DataFrame:
        """:func:`lcdiff.eval.tables.summary_table` over every metric."""
        return summary_table(self.long, methods=self.methods)

    def table(self, metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
        """Methods × metrics of formatted ``mean ± SEM`` strings (best bold, ties ``*``)."""
        from lcdiff.eval.tables import wide_table

        present = [m for m in metrics if m in set(self.long["metric"])]
        return wide_table(summary_table(self.long, present, self.methods), present)

    def markdown(self) -> str:
        """The summary tables as Markdown (headline, benchmark_20, benchmark) plus failures."""
        text = summary_markdown(self.long, methods=self.methods)
        if len(self.failures):
            text += "\n### failures\n\n"
            for row in self.failures.itertuples():
                text += f"- fold {row.fold}, {row.method}, {row.stage}: {row.error}\n"
        return text

    def save(self, out: str | os.PathLike, force: bool = False, plots: bool = True) -> Path:
        """Write ``long.csv``, ``summary.csv``, ``summary.md``, ``failures.csv``,
        ``timings.csv``, ``config.json``, ``splits.json`` and (``plots``) ``boxplots.png``.

        Raises
        ------
        OutputExistsError
            If ``out`` exists and is not empty, unless ``force``.
        """
        out = Path(out)
        _check_out(out, force)
        check_tables(self.long, self.summary, self.timings)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "long.csv", self.long.to_csv(index=False))
        atomic_write_text(out / "summary.csv", self.summary.to_csv(index=False))
        atomic_write_text(out / "summary.md", "# Benchmark summary\n\n" + self.markdown())
        atomic_write_text(out / "failures.csv", self.failures.to_csv(index=False))
        atomic_write_text(out / "timings.csv", self.timings.to_csv(index=False))
        atomic_write_text(out / "config.json", json.dumps(self.config, indent=2, default=str))
        atomic_write_text(out / "splits.json", json.dumps(self.splits, indent=2))
        if plots and len(self.long):
            from lcdiff.plot.benchmark import benchmark_boxplots

            metrics = [m for m in PLOT_METRICS if m in set(self.long["metric"])]
            if metrics:
                fig = benchmark_boxplots(self.long, metrics=metrics, methods=self.methods)
                with atomic_output(out / "boxplots.png", suffix=".png") as tmp:
                    fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
        return out


def check_tables(long: pd.DataFrame, summary: pd.DataFrame, timings: pd.DataFrame) -> None:
    """Refuse tables with values that are non-finite without a reason.

    A long-table value may be NaN only with a ``reason`` (a condition a method could not
    predict, a failed step); a summary mean only where the method has no finite value
    (``n == 0``); timings must be finite where present.

    Raises
    ------
    NonFiniteOutputError
        Naming the metric, method and condition of the first offending value.
    """
    from lcdiff.errors import NonFiniteOutputError

    values = pd.to_numeric(long["value"], errors="coerce").to_numpy(dtype=np.float64)
    reasons = long["reason"].fillna("").astype(str).str.strip().to_numpy()
    bad = np.isinf(values) | (np.isnan(values) & (reasons == ""))
    if bad.any():
        row = long.iloc[int(np.flatnonzero(bad)[0])]
        raise NonFiniteOutputError(
            f"The benchmark table has {int(bad.sum())} non-finite values without a reason (e.g. "
            f"{row['metric']} of {row['method']} on {row['condition']!r}, fold {row['fold']}: "
            f"{row['value']}); nothing was written."
        )
    if len(summary) and {"mean", "n"} <= set(summary.columns):
        mean = summary["mean"].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(mean) & (summary["n"].to_numpy() > 0)
        if bad.any():
            row = summary.iloc[int(np.flatnonzero(bad)[0])]
            raise NonFiniteOutputError(
                f"The benchmark summary has a non-finite mean {row['metric']} for "
                f"{row['method']} over {row['n']} values; nothing was written."
            )
    numeric = timings.select_dtypes("number").to_numpy(dtype=np.float64) if len(timings) else []
    if np.isinf(numeric).any():
        raise NonFiniteOutputError(
            "The benchmark timings hold infinite values; nothing was written."
        )


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(
            f"Output {str(out)!r} exists and is a file; give a folder path (or remove it)."
        )
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(
            f"Output folder {str(out)!r} exists and is not empty; pass force=True (--force) to "
            "overwrite, or choose another folder."
        )


# --- per-fold context -------------------------------------------------------------------------
@dataclass
class FoldContext:
    """Everything a fold's metrics need, computed once and shared by every method."""

    fold: str
    split: object
    test: list[str]
    control_cells: np.ndarray  # [n_ctrl, d] training control
    centroid: np.ndarray  # [d] mean of training perturbation means
    true_cells: dict[str, np.ndarray]
    markers: dict[str, np.ndarray | None]
    hvg_rank: np.ndarray | None
    true_de: dict[str, object]


def marker_indices(screen: AnnData, label: str) -> np.ndarray | None:
    """Column indices of a condition's marker genes (``uns["lcdiff"]["markers"]``), or None.

    Markers may be stored as gene names or as integer column indices.
    """
    markers = screen_info(screen).get("markers")
    if markers is None or label not in markers:
        return None
    entries = np.asarray(markers[label]).ravel()
    if entries.size == 0:
        return None
    if np.issubdtype(entries.dtype, np.integer):
        return entries.astype(np.int64)
    index = {g: i for i, g in enumerate(map(str, screen.var_names))}
    idx = [index[str(g)] for g in entries if str(g) in index]
    return np.asarray(idx, dtype=np.int64) if idx else None


def fold_context(screen: AnnData, split, fold) -> FoldContext:
    """Training control, centroid, observed test cells, markers and DE tests of one split."""
    from lcdiff.eval.baselines import training_data
    from lcdiff.eval.metrics import de_test

    control = control_label(screen)
    data = training_data(screen, split)
    test = [canonical_label(str(lab), control) for lab in split.test]
    labels = screen.obs[PERTURBATION_KEY].astype(str).to_numpy()
    missing = [lab for lab in test if not (labels == lab).any()]
    if missing:
        raise SplitError(
            f"Test conditions {missing[:5]} of fold {fold} have no cells in the screen; build "
            "the split from the same screen."
        )
    if not test:
        raise SplitError(f"Fold {fold} has no test conditions; nothing to evaluate.")
    true_cells = {lab: dense(screen.X[labels == lab]).astype(np.float32) for lab in test}
    hvg = screen.var["hvg_rank"].to_numpy() if "hvg_rank" in screen.var else None
    return FoldContext(
        fold=str(fold),
        split=split,
        test=test,
        control_cells=data.control_cells,
        centroid=data.centroid,
        true_cells=true_cells,
        markers={lab: marker_indices(screen, lab) for lab in test},
        hvg_rank=hvg,
        true_de={lab: de_test(cells, data.control_cells) for lab, cells in true_cells.items()},
    )


# --- the runner -------------------------------------------------------------------------------
def benchmark(
    screen: AnnData,
    methods: Sequence = DEFAULT_METHODS,
    scheme: str = "paper",
    folds: Sequence = (1, 2),
    lcd_preset: str = "auto",
    out: str | os.PathLike | None = None,
    progress: bool = True,
    seed: int = 0,
    *,
    n_cells: int = 1000,
    splits: Sequence | None = None,
    split_options: dict | None = None,
    method_options: dict[str, dict] | None = None,
    keep_predictions: bool = False,
    force: bool = False,
) -> BenchmarkResult:
    """Fit every method on every fold and score its predictions of the held-out conditions.

    Parameters
    ----------
    screen
        A prepared screen (``lc.pp.prepare``).
    methods
        Method names (``lc.baselines.get``) or unfitted method objects with ``fit(screen,
        split)``, ``predict(labels, n_cells, seed)`` and ``cannot_predict(label)``.
    scheme
        Split scheme passed to ``lc.pp.split`` (``"paper"``, ``"random"``, ``"custom"``).
    folds
        Fold identifiers passed to ``lc.pp.split`` (e.g. ``[1, 2]``, ``"val"``).
    lcd_preset
        Preset of the ``"lcd"`` method (default ``"auto"``, sized to each fold's training screen).
    out
        Folder to write the results to (see :meth:`BenchmarkResult.save`); None writes nothing.
    progress
        Show a progress bar over folds × methods.
    seed
        Seed of the splits, of every method and of the predictions.
    n_cells
        Predicted cells per held-out condition (the reference uses 1000).
    splits
        Ready-made splits (objects with ``train``/``test`` label sequences), used instead of
        ``lc.pp.split``; ``folds`` then only names them (default ``1..len(splits)``).
    split_options
        Extra keyword arguments of ``lc.pp.split`` (e.g. ``n_val``, ``test``).
    method_options
        Method name → constructor keyword arguments (e.g. ``{"peper": {"steps": 500}}``).
    keep_predictions
        Keep every predicted AnnData in :attr:`BenchmarkResult.predictions`.
    force
        Overwrite a non-empty ``out`` folder.

    Returns
    -------
    BenchmarkResult
    """
    from tqdm.auto import tqdm

    screen_info(screen)  # refuse an unprepared screen before any work
    if out is not None:
        _check_out(Path(out), force)
    if not methods:
        raise ConfigError("No methods to benchmark; pass e.g. methods=['additive', 'lcd'].")
    if int(n_cells) < 2:
        raise ConfigError(f"n_cells must be at least 2 (metrics need two cells), got {n_cells}.")
    method_options = dict(method_options or {})
    if splits is not None:
        folds = (
            list(folds)
            if folds is not None and len(folds) == len(splits)
            else list(range(1, len(splits) + 1))
        )
    folds = list(folds)
    method_names = [_method_name(m) for m in methods]
    if len(set(method_names)) != len(method_names):
        raise ConfigError(f"Duplicate method names in {method_names}.")

    rows: list[dict] = []
    pending_nan: list[tuple[str, str, str, str]] = []  # (method, condition, fold, reason)
    failures: list[dict] = []
    timings: list[dict] = []
    split_json: dict[str, str] = {}
    predictions: dict[tuple[str, str], AnnData] = {}

    def fail(fold, method, stage, exc) -> str:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        failures.append({"fold": str(fold), "method": method, "stage": stage, "error": error})
        warnings.warn(
            f"benchmark: fold {fold}, {method}: {stage} failed ({error}); continuing.",
            BenchmarkFailureWarning,
            stacklevel=3,
        )
        return f"{stage} failed: {error}"

    bar = tqdm(total=len(folds) * len(methods), disable=not progress, desc="benchmark")
    try:
        for i, fold in enumerate(folds):
            try:
                split = (
                    splits[i]
                    if splits is not None
                    else _make_split(screen, scheme, fold, seed, split_options)
                )
                context = fold_context(screen, split, fold)
            except Exception as exc:  # noqa: BLE001 - a failed fold must not stop the others
                fail(fold, "*", "split", exc)
                bar.update(len(methods))
                continue
            split_json[str(fold)] = _split_to_json(split)
            for spec, name in zip(methods, method_names, strict=True):
                bar.set_postfix_str(f"fold {fold}: {name}")
                timing = {
                    "fold": str(fold),
                    "method": name,
                    "fit_s": np.nan,
                    "predict_s": np.nan,
                    "metrics_s": np.nan,
                }
                timings.append(timing)
                _run_method(
                    spec,
                    name,
                    screen,
                    context,
                    lcd_preset,
                    seed,
                    int(n_cells),
                    method_options.get(name, {}),
                    rows,
                    pending_nan,
                    fail,
                    timing,
                    predictions if keep_predictions else None,
                )
                bar.update(1)
    finally:
        bar.close()

    long = _assemble_long(rows, pending_nan)
    result = BenchmarkResult(
        long=long,
        failures=pd.DataFrame(failures, columns=FAILURE_COLUMNS),
        timings=pd.DataFrame(
            timings, columns=["fold", "method", "fit_s", "predict_s", "metrics_s"]
        ),
        splits=split_json,
        config={
            "methods": method_names,
            "scheme": scheme if splits is None else "given",
            "folds": [str(f) for f in folds],
            "lcd_preset": lcd_preset,
            "seed": int(seed),
            "n_cells": int(n_cells),
            "split_options": split_options or {},
            "method_options": method_options,
            "n_genes": int(screen.n_vars),
            "n_cells_screen": int(screen.n_obs),
        },
        predictions=predictions,
    )
    if out is not None:
        result.save(out, force=force)
    return result


def _method_name(spec) -> str:
    if isinstance(spec, str):
        from lcdiff.eval.baselines import ALIASES

        return ALIASES.get(spec.lower(), spec.lower())
    name = getattr(spec, "name", None)
    if not name:
        raise ConfigError(f"Method object {spec!r} needs a 'name' attribute.")
    return str(name)


def _make_method(spec, name: str, lcd_preset: str, seed: int, options: dict):
    if not isinstance(spec, str):
        return copy.deepcopy(spec)  # a fresh, unfitted copy per fold
    from lcdiff.eval.baselines import get

    kwargs = {"seed": seed, **options}
    if name == "lcd":
        kwargs.setdefault("preset", lcd_preset)
    return get(name, **kwargs)


def _make_split(screen, scheme, fold, seed, options):
    from lcdiff.pp import split as make_split

    return make_split(screen, scheme=scheme, fold=fold, seed=seed, **(options or {}))


def _split_to_json(split) -> str:
    if hasattr(split, "to_json"):
        return split.to_json()
    return json.dumps({"train": list(split.train), "test": list(split.test)})


def _run_method(
    spec,
    name,
    screen,
    ctx: FoldContext,
    lcd_preset,
    seed,
    n_cells,
    options,
    rows,
    pending_nan,
    fail,
    timing,
    predictions,
) -> None:
    from lcdiff.eval.metrics import condition_metrics

    def all_nan(reason: str) -> None:
        pending_nan.extend((name, lab, ctx.fold, reason) for lab in ctx.test)

    start = time.perf_counter()
    try:
        method = _make_method(spec, name, lcd_preset, seed, options)
        method.fit(screen, ctx.split)
    except Exception as exc:  # noqa: BLE001 - reported, the other methods still run
        all_nan(fail(ctx.fold, name, "fit", exc))
        return
    timing["fit_s"] = time.perf_counter() - start

    start = time.perf_counter()
    try:
        reasons = {lab: method.cannot_predict(lab) for lab in ctx.test}
        predictable = [lab for lab in ctx.test if reasons[lab] is None]
        pred = method.predict(predictable, n_cells=n_cells, seed=seed) if predictable else None
    except Exception as exc:  # noqa: BLE001
        all_nan(fail(ctx.fold, name, "predict", exc))
        return
    timing["predict_s"] = time.perf_counter() - start
    peer = getattr(method, "peer_timings", None)
    if peer:  # a peer (GEARS, CPA) trains in its own process when asked to predict
        timing["fit_s"] += peer["fit_s"]
        timing["predict_s"] = max(timing["predict_s"] - peer["fit_s"], 0.0)
    for lab, reason in reasons.items():
        if reason is not None:
            pending_nan.append((name, lab, ctx.fold, f"cannot predict: {reason}"))
    if pred is None:
        return
    if predictions is not None:
        predictions[(ctx.fold, name)] = pred

    start = time.perf_counter()
    pred_labels = pred.obs[PERTURBATION_KEY].astype(str).to_numpy()
    for lab in predictable:
        try:
            cells = dense(pred.X[pred_labels == lab])
            values = condition_metrics(
                cells,
                ctx.true_cells[lab],
                control=ctx.control_cells,
                centroid=ctx.centroid,
                markers=ctx.markers[lab],
                hvg_rank=ctx.hvg_rank,
                true_de=ctx.true_de[lab],
            )
        except Exception as exc:  # noqa: BLE001
            pending_nan.append((name, lab, ctx.fold, fail(ctx.fold, name, "metrics", exc)))
            continue
        rows.extend(
            {
                "metric": metric,
                "method": name,
                "value": float(value),
                "condition": lab,
                "fold": ctx.fold,
                "reason": "" if np.isfinite(value) else "undefined for this prediction",
            }
            for metric, value in values.items()
        )
    timing["metrics_s"] = time.perf_counter() - start


def _assemble_long(rows: list[dict], pending_nan: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """Measured rows plus NaN rows (one per metric) for every condition that has a reason."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows)) or list(HEADLINE_METRICS)
    nan_rows = [
        {
            "metric": metric,
            "method": method,
            "value": np.nan,
            "condition": cond,
            "fold": fold,
            "reason": reason,
        }
        for method, cond, fold, reason in pending_nan
        for metric in metrics
    ]
    long = pd.DataFrame(rows + nan_rows, columns=LONG_COLUMNS)
    long["value"] = long["value"].astype(np.float64)
    return long
