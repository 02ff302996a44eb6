"""Does the ``fast`` sampler schedule reach narrow targets in many genes, given the exact score?

Isolates the sampler from the score network: annealed Langevin with a preset's noise levels and
step sizes (``lcdiff.model.sampler.step_sizes``), started from N(0, I) like ``LCD.predict``, but
driven by the exact score of an isotropic Gaussian N(μ, v·I) perturbed at each level,
s(z, σ) = −(z − μ) / (v + σ²). If the sampled per-gene sd and mean match the target, a wrong
spread in LCD's predictions comes from the learned score, not from the schedule. Written while
diagnosing the 1000-gene failure in ``results/end_to_end.md`` (standardized states there have sd
0.18–0.54; LCD's predictions came out at ≈ 1.3).

Run from the repository root::

    .venv/bin/python benchmarks/sampler_exact_score.py            # fast preset, d = 1000
    .venv/bin/python benchmarks/sampler_exact_score.py --preset paper --genes 100

Writes ``benchmarks/results/sampler_exact_score.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from lcdiff._io import atomic_write_text
from lcdiff.model.config import make_config
from lcdiff.model.lcd import noise_levels
from lcdiff.model.sampler import step_sizes

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = [(0.18, 0.0), (0.5, 0.3), (1.0, 0.0), (2.0, -1.0)]  # (sd, mean) in standardized space


def sample(preset: str, d: int, n: int, sd: float, mean: float, seed: int) -> np.ndarray:
    """``[n, d]`` chains after the preset's annealed Langevin schedule with the exact score."""
    c = make_config(preset)
    sigmas = noise_levels(c.sigma_min, c.sigma_max, c.n_levels)
    etas = step_sizes(sigmas, c.anneal_dt)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    for sigma, eta in zip(sigmas, etas, strict=True):
        for _ in range(c.anneal_steps):
            score = -(z - mean) / (sd**2 + sigma**2)
            z = z + eta * score + np.sqrt(2 * eta) * rng.normal(size=z.shape)
    return z


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "sampler_exact_score"))
    args = parser.parse_args(argv)
    c = make_config(args.preset)
    rows = []
    for sd, mean in TARGETS:
        z = sample(args.preset, args.genes, args.chains, sd, mean, args.seed)
        rows.append({"target_sd": sd, "target_mean": mean,
                     "sampled_sd": float(z.std(axis=0).mean()),
                     "sampled_mean": float(z.mean())})  # fmt: skip
    command = ".venv/bin/python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/sampler_exact_score.py", *(argv or sys.argv[1:])]
    )
    record = {"command": command, "preset": args.preset, "genes": args.genes,
              "chains": args.chains, "levels": c.n_levels, "steps_per_level": c.anneal_steps,
              "anneal_dt": c.anneal_dt, "rows": rows}  # fmt: skip
    lines = [
        "# Sampler schedule with the exact score: per-gene sd and mean reached",
        "",
        f"Command: `{command}`  ",
        f"Preset `{args.preset}`: {c.n_levels} levels × {c.anneal_steps} steps at anneal_dt "
        f"{c.anneal_dt:g}; {args.genes} genes, {args.chains} chains from N(0, I); exact score of "
        "N(μ, sd²·I) at each level. Sampled sd = mean over genes of the per-gene sd.",
        "",
        "| target sd | target mean | sampled sd | sampled mean |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['target_sd']} | {r['target_mean']} | {r['sampled_sd']:.3f} | "
              f"{r['sampled_mean']:.3f} |" for r in rows]  # fmt: skip
    out = Path(args.out)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2))
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return record


if __name__ == "__main__":
    main()
