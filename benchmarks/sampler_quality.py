"""Held-out MMD against score evaluations per cell, for the paper's sampler and cheaper ones.

Problem with exact ground truth: the 5-gene Gaussian family of ``tests/test_model_gaussian.py``
(conditions N(μ_S, Σ), combinations add shifts; the double ``G1+G3`` is held out of training),
``noise_model=None``. One score model is trained once with the paper's noise levels (30 levels,
σ from 10 to 0.01); every sampler below then uses that same model, and quality is the MMD²
(``lcdiff.eval.mmd``) between 500 sampled cells and 1000 fresh exact cells of each evaluated
condition (held-out ``G1+G3``, training ``G2`` and ``ctrl``), repeated over sampler seeds.

Samplers (all end at the same final noise level σ_min = 0.01; no final denoising step):

- ``ald L×T``: annealed Langevin as in ``LCD.predict`` (start N(0, I); T Euler–Maruyama steps
  per level with η_i = dt·(σ_i/σ_min)²). The paper schedule is L = 30, T = 500, dt = 1e-6;
  cheaper ones use fewer steps (dt scaled by 500/T so each level lasts as long) and/or every
  other level (L = 15, the model's level embeddings of those levels); ``fast preset`` is the
  fast preset's own schedule (its levels and steps at its anneal_dt; now 30 × 20 at 2.5e-5,
  the same as ``ald 30×20``).
- ``pf-heun L``: the probability-flow ODE of the variance-exploding diffusion,
  dx/dσ = −σ·s(x, σ), from x ~ N(0, (1 + σ_max²)I), Heun steps between consecutive levels
  (2 evaluations per step).
- ``pc L×(1+C)``: reverse-diffusion predictor between levels plus C Langevin corrector steps at
  each level with signal-to-noise ratio 0.16 (Song et al. 2021).

Run from the repository root::

    .venv/bin/python benchmarks/sampler_quality.py

Writes ``benchmarks/results/sampler_quality.{md,json}`` (``--out PATH`` writes ``PATH.{md,json}``).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lcdiff.eval import mmd  # noqa: E402
from lcdiff.model.config import make_config  # noqa: E402
from lcdiff.model.lcd import LCD  # noqa: E402
from lcdiff.model.score import condition_injections, level_embeddings, score_from_parts  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lcdiff._io import atomic_write_text
from test_model_gaussian import HELDOUT, GaussianFamily  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
EVAL_LABELS = [HELDOUT, "G2", "ctrl"]
TRAIN = dict(
    noise_model=None, score_steps=6000, score_hidden=64, embed_dim=16, score_batch_size=512,
    score_lr=3e-3, weight_decay=0.01, n_levels=30, sigma_min=0.01, sigma_max=10.0,
    anneal_dt=1e-6, anneal_steps=500,
)  # fmt: skip
PAPER_DT, PAPER_STEPS = 1e-6, 500


def _parts(params, seen, targets, n_levels):
    inject = jax.tree.map(lambda a: a[:, None], condition_injections(params, seen, targets))
    return inject, level_embeddings(params, n_levels)


@partial(jax.jit, static_argnames=("steps", "n_levels"))
def ald(params, seen, targets, sigmas, temb, etas, key, z0, steps, n_levels):
    """Annealed Langevin over the given levels; z0 [k, n, d]."""
    inject, _ = _parts(params, seen, targets, n_levels)

    def level_body(z, inputs):
        sigma, eta, te, k_level = inputs

        def step_body(z, k):
            z = z + eta * score_from_parts(params, z, sigma, te, inject)
            return z + jnp.sqrt(2 * eta) * jax.random.normal(k, z.shape), None

        z, _ = jax.lax.scan(step_body, z, jax.random.split(k_level, steps))
        return z, None

    keys = jax.random.split(key, sigmas.shape[0])
    z, _ = jax.lax.scan(level_body, z0, (sigmas, etas, temb, keys))
    return z


@partial(jax.jit, static_argnames=("n_levels",))
def pf_heun(params, seen, targets, sigmas, temb, key, z_shape_ref, n_levels):
    """Probability-flow ODE, Heun steps from sigmas[0] to sigmas[-1]."""
    inject, _ = _parts(params, seen, targets, n_levels)
    z = jax.random.normal(key, z_shape_ref.shape) * jnp.sqrt(1.0 + sigmas[0] ** 2)

    def body(z, inputs):
        s0, s1, t0, t1 = inputs
        d0 = -s0 * score_from_parts(params, z, s0, t0, inject)
        trial = z + (s1 - s0) * d0
        d1 = -s1 * score_from_parts(params, trial, s1, t1, inject)
        return z + (s1 - s0) * 0.5 * (d0 + d1), None

    z, _ = jax.lax.scan(body, z, (sigmas[:-1], sigmas[1:], temb[:-1], temb[1:]))
    return z


@partial(jax.jit, static_argnames=("correctors", "n_levels"))
def pc(params, seen, targets, sigmas, temb, key, z_shape_ref, correctors, n_levels, snr=0.16):
    """Reverse-diffusion predictor + Langevin corrector (VE SDE)."""
    inject, _ = _parts(params, seen, targets, n_levels)
    k0, key = jax.random.split(key)
    z = jax.random.normal(k0, z_shape_ref.shape) * jnp.sqrt(1.0 + sigmas[0] ** 2)
    next_sigmas = jnp.concatenate([sigmas[1:], sigmas[-1:]])

    def body(z, inputs):
        s0, s1, te, k = inputs
        kc, kp = jax.random.split(k)
        for kk in jax.random.split(kc, correctors):  # corrector at this level
            g = score_from_parts(params, z, s0, te, inject)
            noise = jax.random.normal(kk, z.shape)
            # norms averaged over a condition's chains, as in Song et al. (per-chain ratios
            # explode where the score is near zero)
            g_norm = jnp.linalg.norm(g, axis=-1, keepdims=True).mean(axis=-2, keepdims=True)
            n_norm = jnp.linalg.norm(noise, axis=-1, keepdims=True).mean(axis=-2, keepdims=True)
            eps = 2 * (snr * n_norm / jnp.maximum(g_norm, 1e-12)) ** 2
            z = z + eps * g + jnp.sqrt(2 * eps) * noise
        # zero at the last level (the predictor stops at σ_min); clipped because a fused
        # multiply-add can leave σ² − σ² slightly negative, and its square root NaN
        var = jnp.maximum(s0**2 - s1**2, 0.0)
        g = score_from_parts(params, z, s0, te, inject)
        z = z + var * g + jnp.sqrt(var) * jax.random.normal(kp, z.shape)
        return z, None

    keys = jax.random.split(key, sigmas.shape[0])
    z, _ = jax.lax.scan(body, z, (sigmas, next_sigmas, temb, keys))
    return z


def schedules() -> list[dict]:
    out = [{"name": "ald 30×500 (paper)", "kind": "ald", "stride": 1, "steps": 500}]
    out += [{"name": f"ald 30×{t}", "kind": "ald", "stride": 1, "steps": t} for t in (100, 50, 20)]
    out += [{"name": f"ald 15×{t}", "kind": "ald", "stride": 2, "steps": t} for t in (100, 20)]
    # the fast preset's own schedule (its levels are every stride-th of the paper's 30)
    fast = make_config("fast")
    stride = TRAIN["n_levels"] // fast.n_levels
    out.append({"name": f"ald {fast.n_levels}×{fast.anneal_steps} (fast preset)", "kind": "ald",
                "stride": stride, "steps": fast.anneal_steps, "dt": fast.anneal_dt})  # fmt: skip
    out += [{"name": "pf-heun 30", "kind": "pf", "stride": 1},
            {"name": "pf-heun 15", "kind": "pf", "stride": 2},
            {"name": "pc 30×(1+1)", "kind": "pc", "stride": 1, "correctors": 1},
            {"name": "pc 30×(1+3)", "kind": "pc", "stride": 1, "correctors": 3},
            {"name": "pc 15×(1+3)", "kind": "pc", "stride": 2, "correctors": 3}]  # fmt: skip
    return out


def level_subset(n_levels: int, stride: int) -> np.ndarray:
    """Every ``stride``-th level, always ending at the smallest σ."""
    return np.arange(n_levels - 1, -1, -stride)[::-1]


def run_schedule(model: LCD, spec: dict, seed: int, n_cells: int) -> tuple[np.ndarray, int, float]:
    """Samples [k, n, d] in X space, score evaluations per cell, seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, masks = model._query(EVAL_LABELS)
    params = model._score_params
    n_levels = model.config.n_levels
    idx = level_subset(n_levels, spec["stride"])
    sigmas = jnp.asarray(model.sigmas[idx])
    temb = level_embeddings(params, n_levels)[idx]
    seen, targets = jnp.asarray(model._seen), jnp.asarray(masks)
    key = jax.random.PRNGKey(seed)
    shape = jnp.zeros((len(EVAL_LABELS), n_cells, len(model.genes)))
    t0 = time.perf_counter()
    if spec["kind"] == "ald":
        steps = spec["steps"]
        dt = spec.get("dt", PAPER_DT * PAPER_STEPS / steps)
        etas = jnp.asarray(dt * (np.asarray(sigmas) / model.sigmas[-1]) ** 2, jnp.float32)
        z0 = jax.random.normal(jax.random.fold_in(key, 1), shape.shape)
        z = ald(params, seen, targets, sigmas, temb, etas, key, z0, steps=steps,
                n_levels=n_levels)  # fmt: skip
        evals = len(idx) * steps
    elif spec["kind"] == "pf":
        z = pf_heun(params, seen, targets, sigmas, temb, key, shape, n_levels=n_levels)
        evals = 2 * (len(idx) - 1)
    else:
        c = spec["correctors"]
        z = pc(params, seen, targets, sigmas, temb, key, shape, correctors=c, n_levels=n_levels)
        evals = len(idx) * (1 + c)
    z = np.asarray(jax.block_until_ready(z))
    return model._standardizer.inverse(z), evals, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument(
        "--out",
        default=str(RESULTS / "sampler_quality"),
        help="output path without suffix; .md and .json are written there",
    )
    args = parser.parse_args()
    platforms = os.environ.get("JAX_PLATFORMS", "cpu")
    script = "benchmarks/sampler_quality.py"
    command = f"JAX_PLATFORMS={platforms} .venv/bin/python {script} " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    family = GaussianFamily(0)
    t0 = time.perf_counter()
    model = LCD(family.screen(1000), preset="tiny", seed=0, **TRAIN).fit(progress=False)
    fit_s = time.perf_counter() - t0
    print(f"fit {fit_s:.1f} s", flush=True)
    truth = {lab: family.sample(lab, 1000) for lab in EVAL_LABELS}
    floor = [float(np.mean([mmd(family.sample(lab, args.cells), truth[lab])
                            for lab in EVAL_LABELS])) for _ in range(args.seeds)]  # fmt: skip
    rows = []
    for spec in schedules():
        per_seed, secs = [], []
        for seed in range(args.seeds):
            x, evals, sec = run_schedule(model, spec, seed, args.cells)
            scores = {lab: float(mmd(x[i], truth[lab])) for i, lab in enumerate(EVAL_LABELS)}
            per_seed.append(scores)
            secs.append(sec)
        heldout = [s[HELDOUT] for s in per_seed]
        mean_all = [float(np.mean(list(s.values()))) for s in per_seed]
        row = {
            "schedule": spec["name"], "spec": spec, "evals_per_cell": evals,
            "mmd_heldout_mean": float(np.mean(heldout)), "mmd_heldout_sd": float(np.std(heldout)),
            "mmd_all_mean": float(np.mean(mean_all)), "mmd_all_sd": float(np.std(mean_all)),
            "per_seed": per_seed, "seconds_median": float(np.median(secs)),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_seed"}), flush=True)
    paper = rows[0]
    for row in rows:
        row["evals_reduction"] = paper["evals_per_cell"] / row["evals_per_cell"]
    record = {
        "benchmark": "sampler_quality",
        "command": command,
        "device": str(jax.devices()[0]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "training": TRAIN,
        "fit_seconds": fit_s,
        "eval_labels": EVAL_LABELS,
        "heldout": HELDOUT,
        "cells": args.cells,
        "seeds": args.seeds,
        "exact_vs_exact_mmd": floor,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2))
    atomic_write_text(out.with_suffix(".md"), _markdown(record))
    print(_markdown(record))


def _markdown(r: dict) -> str:
    floor = r["exact_vs_exact_mmd"]
    lines = [
        "# Sampler quality vs score evaluations per cell",
        "",
        f"Command: `{r['command']}`  ",
        f"Device: {r['device']} ({r['machine']['cpus']} CPU cores, shared). 5-gene Gaussian "
        f"family, one score model (30 levels, σ 10 → 0.01, fitted in {r['fit_seconds']:.0f} s) "
        f"shared by every sampler; MMD² (`lcdiff.eval.mmd`) of {r['cells']} sampled vs 1000 "
        f"exact cells, mean ± sd over {r['seeds']} sampler seeds. `all` = mean over "
        f"{', '.join(r['eval_labels'])} (held out: {r['heldout']}). Exact-vs-exact floor "
        f"(same sample sizes): {1e4 * np.mean(floor):.2f} ± {1e4 * np.std(floor):.2f} ×10⁻⁴.",
        "MMD² columns are ×10⁻⁴.",
        "",
        "| sampler | score evals / cell | × fewer than paper | held-out MMD² | all MMD² "
        "| s (3 conditions × cells) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['schedule']} | {row['evals_per_cell']} | {row['evals_reduction']:.0f} | "
            f"{1e4 * row['mmd_heldout_mean']:.2f} ± {1e4 * row['mmd_heldout_sd']:.2f} | "
            f"{1e4 * row['mmd_all_mean']:.2f} ± {1e4 * row['mmd_all_sd']:.2f} | "
            f"{row['seconds_median']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
