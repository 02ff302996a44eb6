"""Achieved FLOP/s of stage-A and stage-B training steps, as a fraction of matmul peak.

The peak is measured in the same run: the best time of a jitted float32 [N, N] @ [N, N]
product (2·N³ FLOP, N = 2048 by default). A step's FLOP count is XLA's own count of the compiled
program (``compiled.cost_analysis()["flops"]``); the analytic matmul count (forward + backward
≈ 3 × forward, matrix products only) is reported next to it. Steps are the real ones used by
``LCD.fit``: stage A = :func:`lcdiff.model.noise.make_noise_step` (one generator on M prior
samples, the [B, 3d]·[3d, M] ZIP likelihood, lazy Adam), stage B =
:func:`lcdiff.model.streaming.make_stream_score_step` (batch of B states, DSM loss, AdamW) on a
one-device mesh. Median of ``--repeats`` timed steps after one compile call.

Points: ``fast`` (the fast preset's sizes, d = 100) and ``paper`` (d = 1000, stage A with
B = 64, M = 20,000, generator 64 wide; stage B with B = 8192, hidden 1024).

Run from the repository root::

    .venv/bin/python benchmarks/step_flops.py                  # fast + paper points
    .venv/bin/python benchmarks/step_flops.py --points fast    # quick

Writes ``benchmarks/results/step_flops.{md,json}`` (``--out PATH`` writes ``PATH.{md,json}``).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lcdiff._io import atomic_write_text
from lcdiff.model.config import make_config  # noqa: E402
from lcdiff.model.dsm import score_optimizer  # noqa: E402
from lcdiff.model.noise import init_noise_state, make_noise_step  # noqa: E402
from lcdiff.model.score import init_score_params, noise_levels  # noqa: E402
from lcdiff.model.sharding import device_mesh, put_replicated  # noqa: E402
from lcdiff.model.standardize import Standardizer  # noqa: E402
from lcdiff.model.streaming import CellStates, make_stream_score_step, stream_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
POINTS = {
    # name: preset, d, stage-A (B, M), stage-B (B, hidden)
    "fast": ("fast", 100, (64, 512), (512, 256)),
    "paper": ("paper", 1000, (64, 20000), (8192, 1024)),
}


def xla_flops(jitted, *args) -> float | None:
    """FLOPs of one call as counted by XLA for the compiled program (None if unavailable)."""
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is best effort on some backends
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    value = (cost or {}).get("flops")
    return float(value) if value else None


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median seconds of ``fn()`` after a first call, first-call seconds)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first


def matmul_peak(n: int, repeats: int) -> dict:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))
    best = min(_once(mm, a, b) for _ in range(repeats))
    return {"n": n, "seconds": best, "flops_per_s": 2.0 * n**3 / best}


def _once(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def stage_a(preset: str, d: int, b: int, m: int, repeats: int) -> dict:
    config = make_config(
        preset, noise_batch_size=b, mc_samples=m, noise_steps=1000, noise_warmup=10
    )
    n_cond = 4
    rng = np.random.default_rng(0)
    sizes = np.full(n_cond, 200, np.int32)
    cells = rng.poisson(2.0, size=(int(sizes.sum()), d)).astype(np.float32)
    data = (
        jnp.asarray(cells),
        jnp.asarray(np.arange(n_cond, dtype=np.int32) * 200),
        jnp.asarray(sizes),
        jnp.full((d,), 2.0, jnp.float32),
    )
    key = jax.random.PRNGKey(0)
    step = make_noise_step(config)
    state = init_noise_state(jax.random.PRNGKey(1), n_cond, d, config)
    flops = xla_flops(step, state, data, key)
    holder = {"state": state}

    def run():
        holder["state"], loss = step(holder["state"], data, key)
        return loss

    seconds, first = timed(run, repeats)
    h, wh = config.generator_hidden, config.generator_wide_hidden
    gen_fwd = m * (
        h * h * (1 + 2 * config.generator_layers)
        + h * d
        + 2 * d * wh * config.generator_wide_layers
    )
    analytic = 3 * 2 * (gen_fwd + b * 3 * d * m)
    return {
        "stage": "A",
        "B": b,
        "M": m,
        "d": d,
        "generator_hidden": h,
        "seconds": seconds,
        "first_call_s": first,
        "xla_flops": flops,
        "analytic_matmul_flops": analytic,
    }


def stage_b(preset: str, d: int, b: int, hidden: int, repeats: int) -> dict:
    config = make_config(
        preset, score_batch_size=b, score_hidden=hidden, embed_dim=hidden, noise_model=None
    )
    mesh = device_mesh(1)
    rng = np.random.default_rng(0)
    cells = [rng.normal(size=(2000, d)).astype(np.float32) for _ in range(4)]
    targets = np.zeros((4, d), np.float32)
    targets[1:, :3] = np.eye(3)
    sigmas = noise_levels(config.sigma_min, config.sigma_max, config.n_levels)
    data = stream_data(
        CellStates(cells), Standardizer.fit(cells), targets, targets.any(0), sigmas, mesh
    )
    params = init_score_params(jax.random.PRNGKey(0), d, hidden, hidden, config.score_layers)
    state = put_replicated(
        {"params": params, "opt": score_optimizer(config).init(params), "step": np.int32(0)}, mesh
    )
    key = jax.random.PRNGKey(0)
    step = make_stream_score_step(config, "cells", mesh)
    flops = xla_flops(step, state, data, key)
    holder = {"state": state}

    def run():
        holder["state"], loss = step(holder["state"], data, key)
        return loss

    seconds, first = timed(run, repeats)
    fwd = b * (d * hidden + hidden * hidden * (config.score_layers - 1) + hidden * d)
    return {
        "stage": "B",
        "B": b,
        "d": d,
        "hidden": hidden,
        "layers": config.score_layers,
        "seconds": seconds,
        "first_call_s": first,
        "xla_flops": flops,
        "analytic_matmul_flops": 3 * 2 * fwd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument(
        "--out",
        default=str(RESULTS / "step_flops"),
        help="output path without suffix; .md and .json are written there",
    )
    args = parser.parse_args()
    platforms = os.environ.get("JAX_PLATFORMS", "cpu")
    script = "benchmarks/step_flops.py"
    command = f"JAX_PLATFORMS={platforms} .venv/bin/python {script} " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    peak = matmul_peak(args.matmul_n, args.repeats)
    print(f"matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.points:
        preset, d, (ab, am), (bb, bh) = POINTS[name]
        reps = args.repeats if name != "paper" else max(2, args.repeats // 2)
        for row in (stage_a(preset, d, ab, am, reps), stage_b(preset, d, bb, bh, reps)):
            row["point"] = name
            counted = row["xla_flops"] or row["analytic_matmul_flops"]
            row["achieved_flops_per_s"] = counted / row["seconds"]
            row["fraction_of_peak"] = row["achieved_flops_per_s"] / peak["flops_per_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    # peak again at the end: the machine is shared, so report the spread
    peak_end = matmul_peak(args.matmul_n, args.repeats)
    record = {
        "benchmark": "step_flops",
        "command": command,
        "device": str(jax.devices()[0]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "matmul_peak": peak,
        "matmul_peak_end": peak_end,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2))
    atomic_write_text(out.with_suffix(".md"), _markdown(record))
    print(_markdown(record))


def _markdown(r: dict) -> str:
    p, pe = r["matmul_peak"], r["matmul_peak_end"]
    lines = [
        "# Training-step FLOP/s vs matmul peak",
        "",
        f"Command: `{r['command']}`  ",
        f"Device: {r['device']} ({r['machine']['cpus']} CPU cores, shared with other jobs). "
        f"Matmul peak: float32 {p['n']}² @ {p['n']}², best of the repeats: "
        f"{p['flops_per_s'] / 1e9:.1f} GFLOP/s at the start, "
        f"{pe['flops_per_s'] / 1e9:.1f} GFLOP/s at the end of the run.",
        "FLOPs per step: XLA's count of the compiled step (analytic matmul count beside it).",
        "",
        "| point | stage | sizes | s/step | XLA GFLOP/step | analytic GFLOP/step | GFLOP/s "
        "| fraction of peak |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        if row["stage"] == "A":
            sizes = f"B={row['B']}, M={row['M']}, d={row['d']}, h={row['generator_hidden']}"
        else:
            sizes = f"B={row['B']}, d={row['d']}, H={row['hidden']}, L={row['layers']}"
        xla = "—" if row["xla_flops"] is None else f"{row['xla_flops'] / 1e9:.2f}"
        lines.append(
            f"| {row['point']} | {row['stage']} | {sizes} | {row['seconds']:.4f} | {xla} | "
            f"{row['analytic_matmul_flops'] / 1e9:.2f} | "
            f"{row['achieved_flops_per_s'] / 1e9:.1f} | {row['fraction_of_peak']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
