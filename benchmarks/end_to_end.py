"""End to end: wall time and peak memory of fit (stage A, stage B), predict and CLIPR, per stage.

Two datasets, each in a fresh subprocess (so one dataset's memory does not count for the other):

* ``toy``: ``lc.datasets.toy_screen()`` prepared with ``lc.pp.prepare`` (100 genes, 66
  conditions), fitted on every condition;
* ``sim1000``: ``lc.simulate.screen(n_genes=1000, ...)`` prepared (1000 genes), a modest number of
  conditions (see ``SIM_SETTINGS``).

Stages, timed in this order: ``data`` (build/simulate + prepare), ``stage_a`` (the noise model,
``LCD._fit_noise``), ``standardize`` (the streamed standardizer pass between the stages),
``stage_b`` (the score model, ``LCD._fit_score``), ``predict`` (``n_cells`` cells for each of
``PREDICT_LABELS`` conditions), ``clipr_paper`` (``lc.tl.clipr(model)``) and ``clipr_moments``
(``lc.tl.clipr(model, method="moments")``). Stage A and B are timed by wrapping the model's private
stage methods on the instance, the standardizer around ``lcdiff.model.lcd.fit_standardizer``
(``fit`` itself is what runs). The first call of each stage includes its JIT compilation.
Peak memory per stage: the kernel's resident-set
high-water mark (``VmHWM``) is reset (``/proc/self/clear_refs`` = 5) before each stage and read
after it; the process peak is ``ru_maxrss``. The baseline, measured in the same process, is the
RSS after importing JAX and lcdiff and before any data exists.

The preset is ``fast-zinb`` by default; ``--noise-steps``/``--score-steps`` override its step
counts (the 1000-gene run uses reduced steps by default so that it fits in a few minutes on two
shared CPU cores; the cost per step does not depend on the step count; quality is not measured
here).

Run from the repository root::

    .venv/bin/python benchmarks/end_to_end.py
    .venv/bin/python benchmarks/end_to_end.py --datasets toy --preset fast

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

from lcdiff._io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
SIM_SETTINGS = {
    "n_genes": 1000,
    "n_perturbed": 20,
    "n_doubles": 20,
    "cells_per_condition": 100,
    "control_cells": 400,
    "seed": 0,
}
#: step overrides per dataset when none are given on the command line (None = the preset's)
DEFAULT_STEPS = {"toy": (None, None), "sim1000": (1500, 1000)}
PREDICT_LABELS = 5
PREDICT_CELLS = 500


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
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        wall = time.perf_counter() - start
        self.rows.append({
            "stage": name,
            "wall_s": wall,
            "rss_before_mb": rss_before,
            "peak_rss_mb": _status_mb("VmHWM"),
            "rss_after_mb": _status_mb("VmRSS"),
        })
        print(json.dumps(self.rows[-1]), file=sys.stderr, flush=True)
        return out


# --------------------------------------------------------------------------------------------
# one dataset (runs inside the subprocess)
# --------------------------------------------------------------------------------------------
def _load(dataset: str):
    import lcdiff as lc

    if dataset == "toy":
        raw = lc.datasets.toy_screen()
    elif dataset == "sim1000":
        raw = lc.simulate.screen(**SIM_SETTINGS)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}; choose toy or sim1000")
    return lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl")


def worker(dataset: str, preset: str, noise_steps: int | None, score_steps: int | None) -> dict:
    import jax

    import lcdiff as lc
    import lcdiff.model.lcd as lcd_module

    baseline_mb = _status_mb("VmRSS")  # after importing jax + lcdiff, before any data
    timer = StageTimer()
    screen = timer.run("data", _load, dataset)
    overrides = {"checkpoint_every": 10**9}
    if noise_steps is not None:
        overrides["noise_steps"] = noise_steps
    if score_steps is not None:
        overrides["score_steps"] = score_steps
    model = lc.LCD(screen, preset=preset, seed=0, **overrides)

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

    labels = [lb for lb in model.train_labels if "+" in lb][:PREDICT_LABELS]
    timer.run("predict", model.predict, labels, n_cells=PREDICT_CELLS, seed=0)
    timer.run("clipr_paper", lc.tl.clipr, model)
    timer.run("clipr_moments", lc.tl.clipr, model, method="moments")
    c = model.config
    return {
        "dataset": dataset,
        "cells": int(screen.n_obs),
        "genes": int(screen.n_vars),
        "conditions": len(model.train_labels),
        "preset": preset,
        "noise_steps": c.noise_steps,
        "score_steps": c.score_steps,
        "mc_samples": c.mc_samples,
        "n_states": c.n_states,
        "score_batch_size": c.score_batch_size,
        "n_levels": c.n_levels,
        "predict": {"labels": labels, "cells_per_label": PREDICT_CELLS},
        "devices": jax.device_count(),
        "baseline_rss_mb": baseline_mb,
        "fit_wall_s": fit_wall,
        "fit_peak_rss_mb": fit_peak,
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_per_stage_resettable": timer.peak_resettable,
        "stages": timer.rows,
    }


def measure(dataset: str, args) -> dict:
    steps = DEFAULT_STEPS[dataset]
    noise = args.noise_steps if args.noise_steps is not None else steps[0]
    score = args.score_steps if args.score_steps is not None else steps[1]
    cmd = [sys.executable, __file__, "--worker", dataset, "--preset", args.preset]
    cmd += ["--noise-steps", str(noise)] if noise is not None else []
    cmd += ["--score-steps", str(score)] if score is not None else []
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
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.preset, args.noise_steps, args.score_steps)))
        return
    command = "JAX_PLATFORMS=cpu .venv/bin/python benchmarks/end_to_end.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    record = {
        "benchmark": "end_to_end",
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "sim_settings": SIM_SETTINGS,
        "runs": [],
    }
    RESULTS.mkdir(exist_ok=True)
    for dataset in args.datasets:
        record["runs"].append(measure(dataset, args))
        atomic_write_text(RESULTS / "end_to_end.json", json.dumps(record, indent=2))
        atomic_write_text(RESULTS / "end_to_end.md", _markdown(record))


def _mb(value) -> str:
    return "–" if value is None else f"{value:.0f}"


def _markdown(record: dict) -> str:
    lines = [
        "# End to end: fit, predict and CLIPR per stage",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {record['machine']['platform']}, {record['machine']['cpus']} CPU cores "
        "(shared with other jobs: wall times are upper bounds). Each dataset runs in a fresh "
        "process. Peak RSS per stage = VmHWM reset before the stage. The first call of a stage "
        "includes its JIT compilation. Baseline = RSS after importing JAX and lcdiff.",
        "",
        f"Simulated screen: `lc.simulate.screen(**{record['sim_settings']})`, prepared.",
        "",
    ]
    for run in record["runs"]:
        lines += [
            f"## {run['dataset']}: {run['cells']} cells × {run['genes']} genes, "
            f"{run['conditions']} conditions",
            "",
            f"Preset `{run['preset']}` with noise_steps = {run['noise_steps']}, score_steps = "
            f"{run['score_steps']} (M = {run['mc_samples']}, n_states = {run['n_states']}, "
            f"score batch {run['score_batch_size']}, {run['n_levels']} levels); predict "
            f"{run['predict']['cells_per_label']} cells for each of "
            f"{len(run['predict']['labels'])} doubles; {run['devices']} device(s). Baseline RSS "
            f"{run['baseline_rss_mb']:.0f} MB; process peak {run['process_peak_rss_mb']:.0f} MB; "
            f"fit {run['fit_wall_s']:.1f} s (peak {_mb(run['fit_peak_rss_mb'])} MB); whole "
            f"process {run['process_wall_s']:.1f} s.",
            "",
            "| stage | wall (s) | peak RSS (MB) | RSS before → after (MB) |",
            "|---|---:|---:|---|",
        ]
        for r in run["stages"]:
            lines.append(
                f"| {r['stage']} | {r['wall_s']:.1f} | {_mb(r['peak_rss_mb'])} | "
                f"{r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
