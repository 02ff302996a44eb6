"""End to end: wall time, peak memory and held-out quality of fit, predict and CLIPR, per stage.

Two datasets, each in a fresh subprocess (so one dataset's memory does not count for the other):

* ``toy``: ``lc.datasets.toy_screen()`` prepared with ``lc.pp.prepare`` (100 genes, 66
  conditions);
* ``sim1000``: ``lc.simulate.screen(n_genes=1000, ...)`` prepared (1000 genes), a modest number of
  conditions (see ``SIM_SETTINGS``).

Each screen is split with ``lc.pp.split(scheme="random", test_fraction=0.25, seed=0)`` (a quarter
of the doubles held out, every single in training) and LCD is fitted on the training conditions
only. Quality follows ``benchmarks/lcd_toy_heldout.py``: for every held-out double, the predicted
cells are compared with the observed ones on log1p CP10k restricted to that double's top-20
marker genes (``uns["lcdiff"]["markers"]``): MMD² (``lc.eval.mmd``, lower is better) and the RMSE
of the mean. The ``control`` and ``additive`` baselines (``lc.baselines``) are fitted on the same
split and predict the same doubles in the same process. As an in-sample check (does the model fit
what it was trained on?), the same metrics are computed for up to ``TRAIN_CHECK_LABELS`` training
singles (the targets of the held-out doubles; the additive baseline there is the observed cells).

Stages, timed in this order: ``data`` (build/simulate + prepare + split), ``stage_a`` (the noise
model, ``LCD._fit_noise``), ``standardize`` (the streamed standardizer pass between the stages),
``stage_b`` (the score model, ``LCD._fit_score``), ``predict`` (``--cells`` cells for each
held-out double), ``baselines`` (fit + predict of both baselines), ``predict_train`` (the
in-sample check: LCD and baselines on the training singles), ``clipr_paper``
(``lc.tl.clipr(model)``) and ``clipr_moments`` (``lc.tl.clipr(model, method="moments")``). Stage
A and B are timed by wrapping the model's private stage methods on the instance, the
standardizer around ``lcdiff.model.lcd.fit_standardizer`` (``fit`` itself is what runs). The
first call of each stage includes its JIT compilation. Peak memory per stage: the kernel's
resident-set high-water mark (``VmHWM``) is reset (``/proc/self/clear_refs`` = 5) before each
stage and read after it; the process peak is the larger of ``ru_maxrss`` and the stage peaks.
CPU seconds per stage (``time.process_time``, all threads) are recorded beside the wall time, since
the machine may be shared. The baseline, measured in the same
process, is the RSS after importing JAX and lcdiff and before any data exists.

The preset is ``fast-zinb`` with its full step counts by default; ``--noise-steps`` /
``--score-steps`` override them explicitly (for a quick check of the cost per step, which does
not depend on the step count; quality at reduced steps is not the preset's quality).

Run from the repository root::

    .venv/bin/python benchmarks/end_to_end.py
    .venv/bin/python benchmarks/end_to_end.py --datasets toy --preset fast
    .venv/bin/python benchmarks/end_to_end.py --datasets toy --preset tiny --cells 50 \
        --out /tmp/e2e_smoke        # smoke run of the whole pipeline

Writes ``benchmarks/results/end_to_end.{md,json}`` (rewritten after each dataset).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from lcdiff._io import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIM_SETTINGS = {
    "n_genes": 1000,
    "n_perturbed": 20,
    "n_doubles": 20,
    "cells_per_condition": 100,
    "control_cells": 400,
    "seed": 0,
}
SPLIT_SETTINGS = {"scheme": "random", "test_fraction": 0.25, "seed": 0}
BASELINES = ("control", "additive")
N_MARKERS = 20
PREDICT_CELLS = 1000
TRAIN_CHECK_LABELS = 5


# --------------------------------------------------------------------------------------------
# memory probes (Linux /proc)
# --------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class StageTimer:
    """Records wall time and peak RSS of named stages (in the order they run)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.peak_resettable = True

    def run(self, name: str, fn, *args, **kwargs):
        self.peak_resettable &= _reset_peak()
        rss_before = _status_mb("VmRSS")
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        self.rows.append(
            {
                "stage": name,
                "wall_s": wall,
                "cpu_s": cpu,
                "rss_before_mb": rss_before,
                "peak_rss_mb": _status_mb("VmHWM"),
                "rss_after_mb": _status_mb("VmRSS"),
            }
        )
        print(json.dumps(self.rows[-1]), file=sys.stderr, flush=True)
        return out


# --------------------------------------------------------------------------------------------
# one dataset (runs inside the subprocess)
# --------------------------------------------------------------------------------------------
def _load(dataset: str):
    """The prepared screen, its held-out split and the training part."""
    import lcdiff as lc

    if dataset == "toy":
        raw = lc.datasets.toy_screen()
    elif dataset == "sim1000":
        raw = lc.simulate.screen(**SIM_SETTINGS)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}; choose toy or sim1000")
    screen = lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl")
    split = lc.pp.split(screen, **SPLIT_SETTINGS)
    return screen, split, split.subset(screen, "train")


def _train_check_labels(heldout: list[str], trained: set[str]) -> list[str]:
    """Training singles targeted by the held-out doubles (first ``TRAIN_CHECK_LABELS``)."""
    singles = dict.fromkeys(g for lb in heldout for g in lb.split("+") if g in trained)
    return list(singles)[:TRAIN_CHECK_LABELS]


def _predict_all(model, screen, split, labels: list[str], n_cells: int) -> dict:
    predictions = {"LCD": model.predict(labels, n_cells=n_cells, seed=0)}
    predictions.update(_fit_predict_baselines(screen, split, labels, n_cells))
    return predictions


def _fit_predict_baselines(screen, split, labels: list[str], n_cells: int) -> dict:
    import lcdiff as lc

    return {
        name: lc.baselines.get(name).fit(screen, split).predict(labels, n_cells=n_cells, seed=0)
        for name in BASELINES
    }


def heldout_quality(screen, labels: list[str], predictions: dict) -> dict:
    """Per-double MMD² and RMSE of the mean on each double's top markers, and a summary.

    Parameters
    ----------
    screen : AnnData
        The prepared screen (all conditions; ``X`` is log1p CP10k).
    labels : list of str
        Held-out doubles.
    predictions : dict of str to AnnData
        Method name → predicted cells for ``labels`` (``obs["perturbation"]`` names the label).
    """
    import numpy as np

    import lcdiff as lc
    from lcdiff.data.screen import condition_cells

    markers = screen.uns["lcdiff"]["markers"]
    gene_index = {g: i for i, g in enumerate(screen.var_names)}
    rows = []
    for label in labels:
        cols = [gene_index[g] for g in markers[label][:N_MARKERS]]
        truth = condition_cells(screen, label)[:, cols]
        row = {"condition": label}
        for name, pred in predictions.items():
            mask = (pred.obs["perturbation"].astype(str) == label).to_numpy()
            cells = np.asarray(pred.X[mask])[:, cols]
            row[f"mmd_{name}"] = float(lc.eval.mmd(cells, truth))
            row[f"rmse_mean_{name}"] = float(lc.eval.rmse_mean(cells, truth))
        rows.append(row)
    summary = {
        name: {
            "mmd_mean": float(np.mean([r[f"mmd_{name}"] for r in rows])),
            "mmd_median": float(np.median([r[f"mmd_{name}"] for r in rows])),
            "rmse_mean_mean": float(np.mean([r[f"rmse_mean_{name}"] for r in rows])),
            **{
                f"wins_vs_{other}": int(sum(r[f"mmd_{name}"] < r[f"mmd_{other}"] for r in rows))
                for other in predictions
                if other != name
            },
        }
        for name in predictions
    }
    return {"n_markers": N_MARKERS, "summary": summary, "per_condition": rows}


def worker(
    dataset: str, preset: str, noise_steps: int | None, score_steps: int | None, n_cells: int
) -> dict:
    import jax

    import lcdiff as lc
    import lcdiff.model.lcd as lcd_module

    baseline_mb = _status_mb("VmRSS")  # after importing jax + lcdiff, before any data
    timer = StageTimer()
    screen, split, train = timer.run("data", _load, dataset)
    overrides = {"checkpoint_every": 10**9}
    if noise_steps is not None:
        overrides["noise_steps"] = noise_steps
    if score_steps is not None:
        overrides["score_steps"] = score_steps
    model = lc.LCD(train, preset=preset, seed=0, **overrides)

    # time the two training stages around the model's own stage methods; fit() is what runs
    # (and the streamed standardizer pass between them, a module-level function of lcd.py)
    fit_noise, fit_score = model._fit_noise, model._fit_score
    model._fit_noise = lambda *a, **k: timer.run("stage_a", fit_noise, *a, **k)
    model._fit_score = lambda *a, **k: timer.run("stage_b", fit_score, *a, **k)
    standardize = lcd_module.fit_standardizer
    lcd_module.fit_standardizer = lambda *a, **k: timer.run("standardize", standardize, *a, **k)
    try:
        start = time.perf_counter()
        model.fit(progress=False)
        fit_wall = time.perf_counter() - start
    finally:
        lcd_module.fit_standardizer = standardize
    fit_peak = max(r["peak_rss_mb"] for r in timer.rows[-3:])

    labels = list(split.test)
    predictions = {"LCD": timer.run("predict", model.predict, labels, n_cells=n_cells, seed=0)}
    predictions.update(
        timer.run("baselines", _fit_predict_baselines, screen, split, labels, n_cells)
    )
    train_labels = _train_check_labels(labels, set(model.train_labels))
    train_predictions = timer.run(
        "predict_train", _predict_all, model, screen, split, train_labels, n_cells
    )
    timer.run("clipr_paper", lc.tl.clipr, model)
    timer.run("clipr_moments", lc.tl.clipr, model, method="moments")
    c = model.config
    return {
        "dataset": dataset,
        "cells": int(screen.n_obs),
        "genes": int(screen.n_vars),
        "conditions": len(model.train_labels) + len(labels),
        "train_conditions": len(model.train_labels),
        "split": {**SPLIT_SETTINGS, "test": labels},
        "preset": preset,
        "noise_steps": c.noise_steps,
        "score_steps": c.score_steps,
        "mc_samples": c.mc_samples,
        "n_states": c.n_states,
        "score_batch_size": c.score_batch_size,
        "n_levels": c.n_levels,
        "predict": {"labels": labels, "cells_per_label": n_cells},
        "devices": jax.device_count(),
        "baseline_rss_mb": baseline_mb,
        "fit_wall_s": fit_wall,
        "fit_peak_rss_mb": fit_peak,
        "process_peak_rss_mb": max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            *(r["peak_rss_mb"] for r in timer.rows),
        ),
        "peak_per_stage_resettable": timer.peak_resettable,
        "stages": timer.rows,
        "quality": heldout_quality(screen, labels, predictions),
        "quality_train": heldout_quality(screen, train_labels, train_predictions),
    }


def measure(dataset: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", dataset, "--preset", args.preset]
    cmd += ["--cells", str(args.cells)]
    cmd += ["--noise-steps", str(args.noise_steps)] if args.noise_steps is not None else []
    cmd += ["--score-steps", str(args.score_steps)] if args.score_steps is not None else []
    start = time.perf_counter()
    result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"worker {dataset} failed (exit {result.returncode})")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["process_wall_s"] = time.perf_counter() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["toy", "sim1000"])
    parser.add_argument("--preset", default="fast-zinb")
    parser.add_argument("--noise-steps", type=int, default=None)
    parser.add_argument("--score-steps", type=int, default=None)
    parser.add_argument(
        "--cells",
        type=int,
        default=PREDICT_CELLS,
        help="predicted cells per held-out double (every method)",
    )
    parser.add_argument(
        "--out",
        default=str(RESULTS / "end_to_end"),
        help="output path without suffix; .md and .json are written",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other datasets' runs already in OUT.json (each run records its own command)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        row = worker(args.worker, args.preset, args.noise_steps, args.score_steps, args.cells)
        print(json.dumps(row))
        return
    command = "JAX_PLATFORMS=cpu .venv/bin/python benchmarks/end_to_end.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    record = {
        "benchmark": "end_to_end",
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "sim_settings": SIM_SETTINGS,
        "split_settings": SPLIT_SETTINGS,
        "runs": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.with_suffix(".json").exists():
        previous = json.loads(out.with_suffix(".json").read_text())
        for run in previous["runs"]:
            run.setdefault("command", previous["command"])
        record["runs"] = [r for r in previous["runs"] if r["dataset"] not in args.datasets]
    for dataset in args.datasets:
        record["runs"].append({"command": command, **measure(dataset, args)})
        atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2))
        atomic_write_text(out.with_suffix(".md"), _markdown(record))


def _cpu(row: dict) -> str:
    return f"{row['cpu_s']:.1f}" if "cpu_s" in row else "–"


def _mb(value) -> str:
    return "–" if value is None else f"{value:.0f}"


def _markdown(record: dict) -> str:
    lines = [
        "# End to end: fit, predict and CLIPR per stage, with held-out quality",
        "",
        f"Command: `{record['command']}` (each dataset below names its own command where it "
        "differs)",
        "",
        f"Machine: {record['machine']['platform']}, {record['machine']['cpus']} CPU cores "
        "(shared with other jobs: wall times are upper bounds). Each dataset runs in a fresh "
        "process. Peak RSS per stage = VmHWM reset before the stage. The first call of a stage "
        "includes its JIT compilation. Baseline = RSS after importing JAX and lcdiff.",
        "",
        f"Simulated screen: `lc.simulate.screen(**{record['sim_settings']})`, prepared.",
        "",
        f"Held-out doubles: `lc.pp.split(screen, **{record['split_settings']})`; LCD is fitted "
        "on the training conditions only, the `control` and `additive` baselines on the same "
        "split in the same process. Quality on log1p CP10k over each held-out double's top-20 "
        "marker genes (protocol of `benchmarks/lcd_toy_heldout.py`): MMD² (`lc.eval.mmd`) and "
        "RMSE of the mean, lower is better.",
        "",
    ]
    for run in record["runs"]:
        lines += [
            f"## {run['dataset']}: {run['cells']} cells × {run['genes']} genes, "
            f"{run['conditions']} conditions ({run['train_conditions']} for training, "
            f"{len(run['split']['test'])} held-out doubles)",
            "",
            *(
                [f"Command: `{run['command']}`", ""]
                if run.get("command", record["command"]) != record["command"]
                else []
            ),
            f"Preset `{run['preset']}` with noise_steps = {run['noise_steps']}, score_steps = "
            f"{run['score_steps']} (M = {run['mc_samples']}, n_states = {run['n_states']}, "
            f"score batch {run['score_batch_size']}, {run['n_levels']} levels); predict "
            f"{run['predict']['cells_per_label']} cells for each of "
            f"{len(run['predict']['labels'])} held-out doubles; {run['devices']} device(s). "
            "Baseline RSS "
            f"{run['baseline_rss_mb']:.0f} MB; process peak {run['process_peak_rss_mb']:.0f} MB; "
            f"fit {run['fit_wall_s']:.1f} s (peak {_mb(run['fit_peak_rss_mb'])} MB); whole "
            f"process {run['process_wall_s']:.1f} s.",
            "",
            "| stage | wall (s) | CPU (s) | peak RSS (MB) | RSS before → after (MB) |",
            "|---|---:|---:|---:|---|",
        ]
        for r in run["stages"]:
            lines.append(
                f"| {r['stage']} | {r['wall_s']:.1f} | {_cpu(r)} | {_mb(r['peak_rss_mb'])} | "
                f"{r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f} |"
            )
        lines += ["", "Held-out doubles:", "", *_quality_markdown(run["quality"])]
        if "quality_train" in run:
            lines += [
                "In-sample check, training singles (additive = the observed training cells):",
                "",
                *_quality_markdown(run["quality_train"]),
            ]
    return "\n".join(lines)


def _quality_markdown(quality: dict) -> list[str]:
    names = list(quality["summary"])
    n_test = len(quality["per_condition"])
    lines = [
        "| method | MMD² mean | MMD² median | RMSE of mean | "
        + " | ".join(f"MMD² below {n}" for n in BASELINES)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(BASELINES),
    ]
    for name in names:
        s = quality["summary"][name]
        wins = [
            "–" if other == name else f"{s[f'wins_vs_{other}']}/{n_test}" for other in BASELINES
        ]
        lines.append(
            f"| {name} | {s['mmd_mean']:.4f} | {s['mmd_median']:.4f} | "
            f"{s['rmse_mean_mean']:.4f} | " + " | ".join(wins) + " |"
        )
    lines += [
        "",
        "| condition | " + " | ".join(f"MMD² {n}" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for row in quality["per_condition"]:
        lines.append(
            f"| {row['condition']} | " + " | ".join(f"{row[f'mmd_{n}']:.4f}" for n in names) + " |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    main()
