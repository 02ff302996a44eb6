"""Time per stage-A (noise model) training step: matrix form vs the B×M×d form.

Both variants run the same jitted step (:func:`lcdiff.model.noise.make_noise_step`: one
condition's generator on M prior samples, the ZIP log-likelihood of B cells under every sample,
the tempered log-mean-exp loss, gradients, clipping and the lazy Adam update) on the same inputs
in the same process; only the likelihood differs:

- ``matrix``: ℓ = [x, 1−z, z]·[log λ, −λ, log P(0|λ)]ᵀ + const, a [B, 3d]·[3d, M] product;
- ``direct``: the elementwise ZIP over a [B, M, d] tensor.

The direct form is run only where its estimated peak memory (about 8 B·M·d float32 buffers for
forward and backward) fits in half of the machine's free memory; otherwise it is reported as
skipped with the estimate. Points: the fast preset on the toy screen, a mid-sized point, and the
paper's (B = 64, M = 20,000, d = 1000).

Run from the repository root::

    .venv/bin/python benchmarks/noise_model_step.py
    .venv/bin/python benchmarks/noise_model_step.py --points cpu   # quick

Writes ``benchmarks/results/noise_model_step.{md,json}``.
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

from lcdiff.model.config import make_config  # noqa: E402
from lcdiff.model.noise import init_noise_state, make_noise_step  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
POINTS = {
    # name: (B, M, d, generator preset, conditions)
    "cpu": (64, 512, 100, "fast", 8),
    "mid": (64, 5000, 300, "paper", 4),
    "paper": (64, 20000, 1000, "paper", 2),
}


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return 8 * 2**30


def time_step(step, state, data, key, repeats: int) -> tuple[list[float], float, dict]:
    t0 = time.perf_counter()
    state, loss = step(state, data, key)
    jax.block_until_ready(loss)
    first = time.perf_counter() - t0  # compile + one step
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, loss = step(state, data, key)
        jax.block_until_ready((state, loss))
        times.append(time.perf_counter() - t0)
    return times, first, state


def run_point(name: str, repeats: int) -> dict:
    b, m, d, preset, n_cond = POINTS[name]
    config = make_config(
        preset, mc_samples=m, noise_batch_size=b, noise_steps=1000, noise_warmup=10
    )
    rng = np.random.default_rng(0)
    sizes = np.full(n_cond, 200, np.int32)
    cells = rng.poisson(2.0, size=(int(sizes.sum()), d)).astype(np.float32)
    offsets = np.arange(n_cond, dtype=np.int32) * 200
    data = (
        jnp.asarray(cells),
        jnp.asarray(offsets),
        jnp.asarray(sizes),
        jnp.ones((d,), jnp.float32) * 2.0,
    )
    key = jax.random.PRNGKey(0)
    row = {
        "point": name,
        "B": b,
        "M": m,
        "d": d,
        "generator": preset,
        "conditions": n_cond,
        "generator_hidden": config.generator_hidden,
    }
    direct_bytes = 8 * b * m * d * 4
    row["direct_estimated_peak_gb"] = direct_bytes / 2**30
    for form in ("matrix", "direct"):
        if form == "direct" and direct_bytes > 0.5 * available_bytes():
            row[f"{form}_s"] = None
            row[f"{form}_note"] = (
                f"skipped: needs about {direct_bytes / 2**30:.0f} GB, "
                f"{available_bytes() / 2**30:.0f} GB available"
            )
            continue
        state = init_noise_state(jax.random.PRNGKey(1), n_cond, d, config)
        step = make_noise_step(config, form)
        times, first, _ = time_step(step, state, data, key, repeats)
        row[f"{form}_s"] = statistics.median(times)
        row[f"{form}_times_s"] = times
        row[f"{form}_first_call_s"] = first
        print(
            f"{name:6s} {form:6s} median {statistics.median(times):.4f} s/step "
            f"(first call {first:.1f} s)",
            flush=True,
        )
    if row.get("direct_s"):
        row["direct_over_matrix"] = row["direct_s"] / row["matrix_s"]
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "noise_model_step"))
    args = parser.parse_args(argv)
    rows = [
        run_point(p, args.repeats if p != "paper" else max(2, args.repeats // 2))
        for p in args.points
    ]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    result = {
        "command": command,
        "device": str(jax.devices()[0]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    return result


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def _markdown(result: dict) -> str:
    lines = [
        "# Stage-A step time: matrix form vs B×M×d form",
        "",
        f"Command: `{result['command']}`  ",
        f"Device: {result['device']} ({result['machine']['cpus']} CPU cores, shared with other "
        "jobs); median seconds per full training step (generator, likelihood, loss, gradients, "
        "lazy Adam), same inputs, same process.",
        "",
        "| point | B | M | d | generator | matrix s/step | direct s/step | direct / matrix "
        "| note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ratio = r.get("direct_over_matrix")
        lines.append(
            f"| {r['point']} | {r['B']} | {r['M']} | {r['d']} | {r['generator']} "
            f"(h={r['generator_hidden']}) | {_fmt(r['matrix_s'])} | {_fmt(r.get('direct_s'))} | "
            f"{'—' if ratio is None else f'{ratio:.1f}×'} | {r.get('direct_note', '')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
