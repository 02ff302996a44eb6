"""Peak host memory of an LCD fit + predict against the number of training conditions.

Stage B streams its states (:mod:`lcdiff.model.streaming`): a step regenerates just the
``score_batch_size`` states it uses from the stage-A generators, and the standardizer is fitted
one condition at a time. The baseline, measured in the same run, is the previous fit path: after
the same stage A it materializes every condition's ``n_states`` states in one array
(``noise.sample_all_states``), fits ``Standardizer.fit`` on it and builds the padded standardized
``[conditions, n_states, genes]`` array that stage B used to hold; it stops there (no stage B).

Every point runs in fresh subprocesses (``--repeats``, median reported). Reported: the process's
peak resident set size (the largest phase peak: the whole worker runs in phases) and, per phase
(stage A, standardizer, stage B, predict; the baseline's phases: stage A, all states,
standardizer, padded array), the peak RSS increment: the high-water mark ``VmHWM``, reset through
``/proc/self/clear_refs`` before the phase (the ``StageTimer`` of ``benchmarks/end_to_end.py``),
minus the RSS when the phase starts. Stage A's increment is split into the exact bytes of its
per-condition arrays (generator parameters, their Adam moments and the last-visit step, from the
state's shapes: inherent, one generator per condition) and the rest. Memory that a phase frees
mostly stays in the process (the allocator keeps it) and is reused by later phases, so an
increment counts what a phase needs beyond that.

The simulated screens have 64 genes, a control of 50 cells and 8 cells per perturbed condition
(singles, then doubles), so the input itself is small (2000 conditions: 16k cells × 64 genes,
4 MB); ``n_states`` = 1000 states per condition. The tiny preset is used with 20 stage-A and 20
stage-B steps (memory, not quality, is measured); the prediction is 5 labels × 200 cells.

Run from the repository root::

    .venv/bin/python benchmarks/memory_conditions.py
    .venv/bin/python benchmarks/memory_conditions.py --conditions 100 500 --repeats 1  # quicker

Writes ``benchmarks/results/memory_conditions.{md,json}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from end_to_end import StageTimer, _status_mb  # noqa: E402  (benchmarks/ is on sys.path)
from lcdiff._io import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_GENES = 64
N_STATES = 1000
CONTROL_CELLS = 50
CELLS = 8
OVERRIDES = {"n_states": N_STATES, "noise_steps": 20, "score_steps": 20, "checkpoint_every": 1000}
PREDICT_LABELS = ["G00", "G01+G02", "ctrl", "G03", "G04+G05"]
PREDICT_CELLS = 200
#: phases of each mode, in the order they run
PHASES = {
    "streamed": ["stage_a", "standardize", "stage_b", "predict"],
    "materialized": ["stage_a", "all_states", "standardize", "padded"],
}
#: Text under the tables: what changed and how this was measured (issue 8, item 4).
NOTES = """\
**Stage B and predict are flat in the number of conditions**: their increments do not grow (they
shrink a little, since they reuse memory that a larger stage A freed). The standardizer pass
holds one condition at a time.

**Stage A** holds one generator per condition; its parameters and Adam moments (the bytes above)
are the inherent per-condition memory. Before this change (stage-A code of commit 47194c7; same
benchmark, median of 3: `PYTHONPATH` pointing at a copy of `src/` with that commit's
`model/noise.py` and `model/sharding.py`) the streamed path peaked at 674 / 692 / 820 MB at
100 / 500 / 2000 conditions, with stage-A increments of 271 / 314 / 441 MB: from 100 to 2000
conditions stage A grew by 91.7 KB per condition, 22.8 KB of it the per-condition arrays and
68.9 KB other (process peak +78.3 KB per condition). The other part was three avoidable copies of
the stacked state, all in stage A:

1. The jitted step (which donates its state) computed the drawn condition's parameter update
   from the old stacked Adam moments, which XLA fused into the in-place write of the parameters;
   the in-place write of the moments could then not be ordered after that read, so XLA copied all
   conditions' moments every step (`memory_analysis()` of the compiled step at 2000 conditions:
   23.6 MB of temporaries, now 0.25 MB). The step now writes the moments first and reads the
   condition's row back from the written array (the same values; tested in
   `tests/test_model_noise.py`).
2. `sharding.put_replicated` copied the freshly initialized state through host memory. XLA cannot
   donate such an external buffer, so the first step allocated a second full state; jax arrays
   now go through `jax.device_put`, which keeps a buffer that already lies on the device (and
   gives the step the mesh sharding from the first call, so the step compiles once, not twice).
3. `noise.init_noise_state` ran one `jax.vmap` over all conditions' keys, whose temporaries (the
   random draws) peaked at about 1.5 extra copies of all generators; the generators are now
   written 256 conditions per donated, in-place call into the preallocated stacked arrays (the
   same parameters bit for bit, tested).

Not copies: `np.asarray` of the trained generators is a zero-copy view on CPU, and stage B's
`device_put` of those views is zero-copy as well (checked with `np.shares_memory`); `run_stage`
keeps no reference to the previous state (the divergence check reads the loss, and the new state
before a checkpoint), so donation leaves kill/resume and the kept checkpoint unchanged (tests in
`tests/test_model_lcd.py`, 1 vs 4 devices in `tests/test_sharding.py`). What stage A still holds
per condition besides its arrays: the training counts (8 cells × 64 genes × 4 B = 2 KB per
condition here, as the model's per-condition list, concatenated for the step and, at most, that
array's device copy). Cross-check free of allocator noise: the JAX arrays alive during the
stage-A steps (sum of `nbytes` over `jax.live_arrays()` after every step) are 24.8 KiB per
condition at both 100 and 2000 conditions, i.e. the 22.8 KiB of per-condition arrays plus the
2 KiB of training counts on the device, and the compiled step's temporaries are 0.25 MB whatever
the number of conditions. The RSS "other" of stage A is noisier than that: the same configuration
varies by tens of MB from run to run (allocator arenas, compilation; single runs in the JSON),
which at 1900 extra conditions is ±10 to 20 KB per condition of the growth above.

The materialized baseline's process peak is the largest phase peak as well (its standardizer pass
holds float64 copies of all states)."""


def simulated_screen(n_conditions: int, seed: int = 0):
    """A prepared-screen-like AnnData with ``n_conditions`` conditions (control included)."""
    import anndata as ad
    import pandas as pd

    from lcdiff.data.normalize import log1p_cp10k

    genes = [f"G{i:02d}" for i in range(N_GENES)]
    pairs = [f"{a}+{b}" for i, a in enumerate(genes) for b in genes[i + 1 :]]
    labels = ["ctrl", *genes, *pairs][:n_conditions]
    if len(labels) < n_conditions:
        raise SystemExit(f"at most {len(labels)} conditions with {N_GENES} genes")
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 2.0, N_GENES) + 0.5
    blocks, obs = [], []
    for label in labels:
        rate = base.copy()
        for g in [] if label == "ctrl" else label.split("+"):
            rate[genes.index(g)] *= 3.0
        n = CONTROL_CELLS if label == "ctrl" else CELLS
        blocks.append(rng.poisson(rate, (n, N_GENES)))
        obs += [label] * n
    counts = np.concatenate(blocks).astype(np.float32)
    screen = ad.AnnData(
        X=log1p_cp10k(counts),
        obs=pd.DataFrame({"perturbation": obs}, index=[f"c{i}" for i in range(len(obs))]),
        var=pd.DataFrame(index=genes),
    )
    screen.layers["counts"] = counts
    screen.uns["lcdiff"] = {"control": "ctrl", "perturbation_key": "perturbation", "markers": {}}
    return screen


def generator_bytes_per_condition(model) -> dict:
    """Exact bytes per condition of stage A's per-condition arrays, from the state's shapes.

    ``init_noise_state`` is traced with ``jax.eval_shape`` (no memory), so the numbers are the
    ones of the arrays the fit trains: the stacked generator parameters (``gen``), their lazy-Adam
    second moments (``nu_gen``) and the last-visit step (``last_visit``), each divided by the
    number of conditions (their leading axis).
    """
    import jax

    from lcdiff.model.noise import init_noise_state

    m, d = len(model.train_labels), len(model.genes)
    shapes = jax.eval_shape(lambda: init_noise_state(jax.random.PRNGKey(0), m, d, model.config))

    def per_condition(tree) -> int:
        total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))
        assert total % m == 0, "per-condition arrays must have the condition axis first"
        return total // m

    params = per_condition(shapes["gen"])
    moments = per_condition(shapes["nu_gen"])
    visits = per_condition(shapes["last_visit"])
    return {
        "params": params,
        "adam_moments": moments,
        "last_visit": visits,
        "total": params + moments + visits,
    }


def worker(n_conditions: int, mode: str) -> dict:
    """One measurement (runs inside the subprocess): peak RSS per phase and of the process."""
    import jax

    import lcdiff.model.lcd as lcd_module
    from lcdiff.model.lcd import LCD

    baseline_mb = _status_mb("VmRSS")  # after importing JAX and lcdiff, before any data
    timer = StageTimer()
    screen = timer.run("data", simulated_screen, n_conditions)
    start = time.perf_counter()
    model = timer.run("model", LCD, screen, preset="tiny", seed=0, **OVERRIDES)
    if mode == "streamed":
        # wrap the model's own stage methods (as benchmarks/end_to_end.py does); fit() runs
        fit_noise, fit_score = model._fit_noise, model._fit_score
        model._fit_noise = lambda *a, **k: timer.run("stage_a", fit_noise, *a, **k)
        model._fit_score = lambda *a, **k: timer.run("stage_b", fit_score, *a, **k)
        standardize = lcd_module.fit_standardizer
        lcd_module.fit_standardizer = lambda *a, **k: timer.run("standardize", standardize, *a, **k)
        try:
            model.fit(progress=False)
        finally:
            lcd_module.fit_standardizer = standardize
        timer.run("predict", model.predict, PREDICT_LABELS, n_cells=PREDICT_CELLS)
    else:  # the previous path: stage A, then one array of all conditions' states
        from lcdiff.model.noise import sample_all_states
        from lcdiff.model.standardize import Standardizer

        c = model.config
        key = jax.random.PRNGKey(model.seed)
        k_noise, k_states, _ = jax.random.split(key, 3)
        fingerprint = {"config": c.training_fingerprint(), "seed": 0, "data": ""}
        noise = timer.run("stage_a", model._fit_noise, k_noise, None, False, fingerprint, False)
        states = timer.run(
            "all_states", sample_all_states, noise["gen"], k_states, c.n_states, c.generator_hidden
        )
        standardizer = timer.run("standardize", Standardizer.fit, states, control_index=0)

        def padded_standardized():
            padded = np.zeros(states.shape, np.float32)
            for i, s in enumerate(states):
                padded[i] = standardizer.transform(s)
            return padded

        assert np.isfinite(timer.run("padded", padded_standardized)).all()
    wall = time.perf_counter() - start
    return {
        "conditions": n_conditions,
        "mode": mode,
        # every step of the worker runs inside a phase, so the process peak is the largest phase
        # peak (ru_maxrss cannot be used: clear_refs resets it together with VmHWM)
        "peak_rss_mb": max(p["peak_rss_mb"] for p in timer.rows),
        "baseline_rss_mb": baseline_mb,
        "wall_s": wall,
        "peak_per_phase_resettable": timer.peak_resettable,
        "phases": timer.rows,
        "per_condition_bytes": generator_bytes_per_condition(model),
    }


def measure_once(n_conditions: int, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", str(n_conditions), mode],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"worker {n_conditions} {mode} failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    for phase in row["phases"]:  # peak increment of the phase over the RSS it started from
        phase["increment_mb"] = phase["peak_rss_mb"] - phase["rss_before_mb"]
    return row


def measure(n_conditions: int, mode: str, repeats: int) -> dict:
    """Median over ``repeats`` fresh processes of every number (RSS varies by a few tens of MB
    from run to run: allocator arenas, compilation); the single runs are kept under ``runs``."""
    runs = [measure_once(n_conditions, mode) for _ in range(repeats)]
    row = json.loads(json.dumps(runs[0]))
    for key in ("peak_rss_mb", "baseline_rss_mb", "wall_s"):
        row[key] = float(np.median([r[key] for r in runs]))
    for i, phase in enumerate(row["phases"]):
        for key in ("wall_s", "rss_before_mb", "peak_rss_mb", "rss_after_mb", "increment_mb"):
            phase[key] = float(np.median([r["phases"][i][key] for r in runs]))
    row["peak_per_phase_resettable"] = all(r["peak_per_phase_resettable"] for r in runs)
    row["repeats"] = repeats
    row["runs"] = [
        {"peak_rss_mb": r["peak_rss_mb"], **{p["stage"]: p["increment_mb"] for p in r["phases"]}}
        for r in runs
    ]
    row["states_array_mb"] = n_conditions * N_STATES * N_GENES * 4 / 2**20
    return row


def phase(row: dict, name: str) -> dict:
    return next(p for p in row["phases"] if p["stage"] == name)


def stage_a_split(row: dict) -> dict:
    """Stage A's peak increment split into per-condition model state (inherent) and the rest."""
    inherent = row["conditions"] * row["per_condition_bytes"]["total"] / 2**20
    increment = phase(row, "stage_a")["increment_mb"]
    return {"increment_mb": increment, "inherent_mb": inherent, "other_mb": increment - inherent}


def growth_per_condition(rows: list[dict]) -> dict | None:
    """KB per extra condition of each phase increment, between the fewest and most conditions."""
    streamed = sorted((r for r in rows if r["mode"] == "streamed"), key=lambda r: r["conditions"])
    if len(streamed) < 2:
        return None
    lo, hi = streamed[0], streamed[-1]
    extra = hi["conditions"] - lo["conditions"]

    def kb(a_mb: float, b_mb: float) -> float:
        return (b_mb - a_mb) * 1024 / extra

    out = {"from": lo["conditions"], "to": hi["conditions"]}
    for name in PHASES["streamed"]:
        out[name] = kb(phase(lo, name)["increment_mb"], phase(hi, name)["increment_mb"])
    for part in ("inherent_mb", "other_mb"):
        out[f"stage_a_{part[:-3]}"] = kb(stage_a_split(lo)[part], stage_a_split(hi)[part])
    out["process_peak"] = kb(lo["peak_rss_mb"], hi["peak_rss_mb"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--modes", nargs="+", default=list(PHASES), choices=list(PHASES))
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per row (median)")
    parser.add_argument("--worker", nargs=2, metavar=("CONDITIONS", "MODE"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1])))
        return
    command = "JAX_PLATFORMS=cpu .venv/bin/python benchmarks/memory_conditions.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    rows = []
    for m in args.conditions:
        for mode in args.modes:
            rows.append(measure(m, mode, args.repeats))
            print(json.dumps({k: rows[-1][k] for k in ("conditions", "mode", "runs")}), flush=True)
    record = {
        "benchmark": "memory_conditions",
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "genes": N_GENES,
        "n_states": N_STATES,
        "cells_per_condition": CELLS,
        "control_cells": CONTROL_CELLS,
        "overrides": OVERRIDES,
        "repeats": args.repeats,
        "predict": {"labels": PREDICT_LABELS, "cells_per_label": PREDICT_CELLS},
        "rows": rows,
        "growth_kb_per_condition": growth_per_condition(rows),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "memory_conditions.json", json.dumps(record, indent=2))
    atomic_write_text(RESULTS / "memory_conditions.md", _markdown(record))


def _markdown(record: dict) -> str:
    rows = record["rows"]
    lines = [
        "# Peak memory vs number of training conditions",
        "",
        f"Command: `{record['command']}`",
        "",
        f"{record['genes']} genes, {record['n_states']} states per condition, "
        f"{record['cells_per_condition']} cells per perturbed condition; tiny preset "
        f"({record['overrides']}). Every number is the median over {record['repeats']} fresh "
        "processes (single runs in the JSON). `streamed` = the current "
        f"`LCD.fit` + `predict` ({len(record['predict']['labels'])} labels × "
        f"{record['predict']['cells_per_label']} cells); `materialized` = the previous path up to "
        "stage B's input (stage A, all states in one array, standardizer, padded standardized "
        "array), without stage B training. Process peak = the largest phase peak (the worker runs "
        "in phases: data, model construction, then those below; between them only `fit`'s setup "
        "runs, whose first JAX call starts the CPU client, about 50 MB); a phase's increment = its "
        "peak RSS (VmHWM, reset through `/proc/self/clear_refs` before the phase) minus the RSS "
        "when it started.",
        "",
        "| conditions | mode | process peak RSS (MB) | wall (s) | "
        "one [m, n_states, d] f32 array (MB) |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['conditions']} | {r['mode']} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.1f} | "
            f"{r['states_array_mb']:.0f} |"
        )
    streamed = [r for r in rows if r["mode"] == "streamed"]
    if streamed:
        b = streamed[0]["per_condition_bytes"]
        lines += [
            "",
            "## Streamed: peak increment per phase (MB)",
            "",
            f"Per-condition model state of stage A, from the state's array shapes: generator "
            f"parameters {b['params']} B + lazy-Adam second moments {b['adam_moments']} B + "
            f"last-visit step {b['last_visit']} B = **{b['total']} B per condition** (the "
            "inherent part: the paper's model has one generator per training condition).",
            "",
            "| conditions | stage A | of which params + Adam state (inherent) | stage A other | "
            "standardize | stage B | predict | RSS after fit (MB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in streamed:
            split = stage_a_split(r)
            lines.append(
                f"| {r['conditions']} | {split['increment_mb']:.1f} | {split['inherent_mb']:.1f} | "
                f"{split['other_mb']:.1f} | {phase(r, 'standardize')['increment_mb']:.1f} | "
                f"{phase(r, 'stage_b')['increment_mb']:.1f} | "
                f"{phase(r, 'predict')['increment_mb']:.1f} | "
                f"{phase(r, 'stage_b')['rss_after_mb']:.0f} |"
            )
    growth = record["growth_kb_per_condition"]
    if growth:
        lines += [
            "",
            f"Growth per extra condition ({growth['from']} → {growth['to']} conditions, KB): "
            f"stage A {growth['stage_a']:.1f} (params + Adam state {growth['stage_a_inherent']:.1f}"
            f", other {growth['stage_a_other']:.1f}); standardize {growth['standardize']:.1f}; "
            f"stage B {growth['stage_b']:.1f}; predict {growth['predict']:.1f}; process peak "
            f"{growth['process_peak']:.1f}.",
        ]
    materialized = [r for r in rows if r["mode"] == "materialized"]
    if materialized:
        names = PHASES["materialized"]
        lines += [
            "",
            "## Materialized baseline: peak increment per phase (MB)",
            "",
            "| conditions | " + " | ".join(names) + " |",
            "|---:|" + "---:|" * len(names),
        ]
        for r in materialized:
            cells = " | ".join(f"{phase(r, n)['increment_mb']:.1f}" for n in names)
            lines.append(f"| {r['conditions']} | {cells} |")
    lines += ["", NOTES, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
