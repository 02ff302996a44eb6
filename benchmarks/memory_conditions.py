"""Peak host memory of an LCD fit + predict against the number of training conditions.

Stage B streams its states (:mod:`lcdiff.model.streaming`): a step regenerates just the
``score_batch_size`` states it uses from the stage-A generators, and the standardizer is fitted
one condition at a time. The baseline, measured in the same run, is the previous fit path: after
the same stage A it materializes every condition's ``n_states`` states in one array
(``noise.sample_all_states``), fits ``Standardizer.fit`` on it and builds the padded standardized
``[conditions, n_states, genes]`` array that stage B used to hold; it stops there (no stage B).

Every point runs in a fresh subprocess, whose peak resident set size (``ru_maxrss``) is reported.
The simulated screens have 64 genes, a control of 50 cells and 8 cells per perturbed condition
(singles, then doubles), so the input itself is small (2000 conditions: 16k cells × 64 genes,
4 MB); ``n_states`` = 1000 states per condition. The tiny preset is used with 20 stage-A and 20
stage-B steps (memory, not quality, is measured); the prediction is 5 labels × 200 cells.

Run from the repository root::

    .venv/bin/python benchmarks/memory_conditions.py
    .venv/bin/python benchmarks/memory_conditions.py --conditions 100 500   # quicker

Writes ``benchmarks/results/memory_conditions.{md,json}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from lcdiff._io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
N_GENES = 64
N_STATES = 1000
CONTROL_CELLS = 50
CELLS = 8
OVERRIDES = {"n_states": N_STATES, "noise_steps": 20, "score_steps": 20, "checkpoint_every": 1000}


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


def worker(n_conditions: int, mode: str) -> dict:
    """One measurement (runs inside the subprocess)."""
    import jax

    from lcdiff.model.lcd import LCD

    screen = simulated_screen(n_conditions)
    start = time.perf_counter()
    model = LCD(screen, preset="tiny", seed=0, **OVERRIDES)
    if mode == "streamed":
        model.fit(progress=False)
        model.predict(["G00", "G01+G02", "ctrl", "G03", "G04+G05"], n_cells=200)
    else:  # the previous path: stage A, then one array of all conditions' states
        from lcdiff.model.noise import sample_all_states
        from lcdiff.model.standardize import Standardizer

        c = model.config
        key = jax.random.PRNGKey(model.seed)
        k_noise, k_states, _ = jax.random.split(key, 3)
        fingerprint = {"config": c.training_fingerprint(), "seed": 0, "data": ""}
        noise = model._fit_noise(k_noise, None, False, fingerprint, False)
        states = sample_all_states(noise["gen"], k_states, c.n_states, c.generator_hidden)
        standardizer = Standardizer.fit(states, control_index=0)
        padded = np.zeros(states.shape, np.float32)
        for i, s in enumerate(states):
            padded[i] = standardizer.transform(s)
        assert np.isfinite(padded).all()
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"conditions": n_conditions, "mode": mode, "peak_rss_mb": peak_kb / 1024, "wall_s": wall}


def measure(n_conditions: int, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", str(n_conditions), mode],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"worker {n_conditions} {mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", type=int, nargs="+", default=[100, 500, 2000])
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
        for mode in ("streamed", "materialized"):
            row = measure(m, mode)
            row["states_array_mb"] = m * N_STATES * N_GENES * 4 / 2**20
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "benchmark": "memory_conditions",
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "genes": N_GENES,
        "n_states": N_STATES,
        "cells_per_condition": CELLS,
        "control_cells": CONTROL_CELLS,
        "overrides": OVERRIDES,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "memory_conditions.json", json.dumps(record, indent=2))
    atomic_write_text(RESULTS / "memory_conditions.md", _markdown(record))


def _markdown(record: dict) -> str:
    lines = [
        "# Peak memory vs number of training conditions",
        "",
        f"Command: `{record['command']}`",
        "",
        f"{record['genes']} genes, {record['n_states']} states per condition, "
        f"{record['cells_per_condition']} cells per perturbed condition; tiny preset "
        f"({record['overrides']}). Peak RSS of a fresh process per row (`ru_maxrss`). "
        "`streamed` = the current `LCD.fit` + `predict` (5 labels × 200 cells); `materialized` = "
        "the previous path up to stage B's input (stage A, all states in one array, standardizer, "
        "padded standardized array), without stage B training.",
        "",
        "| conditions | mode | peak RSS (MB) | wall (s) | one [m, n_states, d] f32 array (MB) |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['conditions']} | {r['mode']} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.1f} | "
            f"{r['states_array_mb']:.0f} |"
        )
    lines += [
        "",
        "Stage B adds no per-condition memory in the streamed path (an earlier probe at 2000 "
        "conditions, VmHWM after each phase, saw +1 MB for the streamed standardizer pass, "
        "+29 MB for stage B and +1 MB for predict, all after stage A). Stage A holds one small "
        "generator per condition (11 KB of parameters each at these sizes, plus the same again "
        "for the Adam moments). `noise.init_noise_state` builds all generators with one "
        "`jax.vmap(init_generator)` over the per-condition keys (bit-identical to initializing "
        "each condition separately, tested); it used to build each generator separately and "
        "stack them, which cost about 0.3 MB of peak per condition (1493 MB streamed at 2000 "
        "conditions before the change).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
