"""Equal quality at fewer score evaluations: the ``fast`` stage B + sampler against the paper's.

Question (issue 8): do the ``fast`` preset's score-model training and sampler reach the held-out
MMD of the paper's noise schedule and sampler, within the run-to-run spread, with at least 10×
fewer score evaluations per predicted cell?

Protocol, on the embedded toy screen (``lc.datasets.toy_screen()`` → ``lc.pp.prepare``), split as
``benchmarks/lcd_toy_heldout.py`` does (``scheme="random"``, a quarter of the doubles held out,
split seed 0). For each seed:

1. Stage A (the noise model) is fitted once with ``--preset`` (default ``fast-zinb``; ``fast`` and
   ``fast-zinb`` have the same stage B and sampler). The arms below reuse it through
   ``LCD.fit(noise_model_from=...)``, so they differ only in stage B and the sampler.
2. ``paper schedule`` (the reference): stage B with the paper's 30 noise levels (σ 10 → 0.01)
   and ``--paper-steps`` training steps (default 16,000; the preset's 256-wide network, see
   below), sampled with the paper's annealed Langevin schedule (30 levels × 500 steps,
   anneal_dt 1e-6: 15,000 evaluations per cell), and with cheaper schedules of the same model
   (fewer steps per level; anneal_dt scaled by 500/T so each level lasts as long).
3. ``fast preset``: the preset's own stage B, sampled with its own schedule. When the preset
   trains exactly like the reference (same fingerprint) the reference model is reused.
4. ``previous fast preset``: the fast stage B and sampler as they were before this benchmark
   (15 levels, 4,000 steps, 15 × 40 steps at anneal_dt 2e-5), for comparison.

Quality: for each held-out double, MMD² (``lc.eval.mmd``) and RMSE of the mean between
``--cells`` predicted and the observed cells on the double's top-20 marker genes (log1p CP10k);
averaged over the doubles, then mean ± sd over seeds (the run-to-run spread: stage A, stage B
and sampler randomness all change with the seed). The additive and control baselines are
scored on the same split for scale.

What this does not test: the paper's full training budget (a 1024-wide score network, batches of
8,192, 50,000 steps; 250,000 stage-A steps with 20,000 Monte-Carlo samples). On two CPU cores
that is days of compute; the paper-schedule arm keeps the paper's noise schedule and sampler,
which is what fixes the number of score evaluations per cell.

Run from the repository root::

    .venv/bin/python benchmarks/fast_vs_paper.py                       # 3 seeds, ~30-60 min
    .venv/bin/python benchmarks/fast_vs_paper.py --seeds 0 --cells 50 --paper-steps 500  # smoke

Writes ``benchmarks/results/fast_vs_paper.{md,json}`` (after every seed, so a partial run
leaves its finished seeds behind).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import lcdiff as lc  # noqa: E402
from lcdiff._io import atomic_write_text  # noqa: E402
from lcdiff.model.config import make_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import heldout_quality  # noqa: E402  (the protocol of lcd_toy_heldout.py)

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_LEVELS, PAPER_STEPS, PAPER_DT = 30, 500, 1e-6

# (arm, model, steps per level); the paper-schedule model's cheaper samplers scale anneal_dt by
# PAPER_STEPS / steps so that each level lasts as long as in the paper's schedule.
SAMPLERS = [
    ("paper schedule, sampler 30×500 (paper)", "paper", 500),
    ("paper schedule, sampler 30×50", "paper", 50),
    ("paper schedule, sampler 30×20", "paper", 20),
    ("fast preset (its own sampler)", "fast", None),
    ("previous fast preset (15 levels, 4000 steps, 15×40)", "previous", None),
]
# The fast preset's stage B and sampler before this benchmark changed them (kept for comparison).
PREVIOUS_FAST = {"n_levels": 15, "score_steps": 4000, "anneal_steps": 40, "anneal_dt": 2e-5}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast-zinb", help="Preset of stage A and of 'fast'.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cells", type=int, default=250, help="Predicted cells per double.")
    parser.add_argument("--paper-steps", type=int, default=16_000)
    parser.add_argument("--out", default=str(RESULTS / "fast_vs_paper"))
    return parser.parse_args(argv)


def with_sampler(model: lc.LCD, steps: int | None) -> lc.LCD:
    """The model with ``steps`` Langevin steps per level (None: its own schedule)."""
    if steps is not None:
        c = model.config
        base_dt = PAPER_DT if c.n_levels == PAPER_LEVELS else c.anneal_dt
        base_steps = PAPER_STEPS if c.n_levels == PAPER_LEVELS else c.anneal_steps
        model.config = dataclasses.replace(
            c, anneal_steps=steps, anneal_dt=base_dt * base_steps / steps
        )
    return model


def score_predictions(screen, test, pred) -> dict:
    """Mean over held-out doubles of MMD² and RMSE of the mean on the top-20 markers."""
    quality = heldout_quality(screen, test, {"method": pred})
    return {
        "mmd_20": quality["summary"]["method"]["mmd_mean"],
        "rmse_mean_20": quality["summary"]["method"]["rmse_mean_mean"],
        "per_double_mmd": [row["mmd_method"] for row in quality["per_condition"]],
    }


def run_seed(seed: int, args, screen, train, split, test) -> dict:
    out: dict = {"seed": seed, "rows": {}, "timings": {}}
    t0 = time.perf_counter()
    fast = lc.LCD(train, preset=args.preset, seed=seed).fit(progress=False)
    out["timings"]["stage A + fast stage B"] = time.perf_counter() - t0
    paper_overrides = dict(n_levels=PAPER_LEVELS, score_steps=args.paper_steps,
                           anneal_steps=PAPER_STEPS, anneal_dt=PAPER_DT)  # fmt: skip
    paper = lc.LCD(train, preset=args.preset, seed=seed, **paper_overrides)
    if paper.config.training_fingerprint() == fast.config.training_fingerprint():
        # the fast preset trains exactly like the reference: the same model, other sampler
        # (a shallow copy; with_sampler replaces the copy's config, never mutates it)
        paper_config, paper = paper.config, copy.copy(fast)
        paper.config = paper_config
        out["fast_trains_like_reference"] = True
    else:
        t0 = time.perf_counter()
        paper.fit(progress=False, noise_model_from=fast)
        out["timings"]["paper-schedule stage B"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    previous = lc.LCD(train, preset=args.preset, seed=seed, **PREVIOUS_FAST)
    previous.fit(progress=False, noise_model_from=fast)
    out["timings"]["previous-fast stage B"] = time.perf_counter() - t0
    models = {"fast": fast, "paper": paper, "previous": previous}
    for name, which, steps in SAMPLERS:
        model = with_sampler(models[which], steps)
        c = model.config
        t0 = time.perf_counter()
        pred = model.predict(test, n_cells=args.cells, seed=seed)
        wall = time.perf_counter() - t0
        row = score_predictions(screen, test, pred)
        row.update(evals_per_cell=c.n_levels * c.anneal_steps, predict_s=wall,
                   anneal_dt=c.anneal_dt, score_steps=c.score_steps)  # fmt: skip
        out["rows"][name] = row
        print(f"seed {seed} | {name}: MMD² {row['mmd_20']:.5f} ({wall:.0f} s)", flush=True)
    for name in ("additive", "control"):
        baseline = lc.baselines.get(name).fit(screen, split)
        pred = baseline.predict(test, n_cells=args.cells, seed=seed)
        out["rows"][f"{name} baseline"] = {
            **score_predictions(screen, test, pred),
            "evals_per_cell": 0,
        }
    return out


def summarize(per_seed: list[dict]) -> dict:
    names = list(per_seed[0]["rows"])
    summary = {}
    for name in names:
        values = np.array([s["rows"][name]["mmd_20"] for s in per_seed])
        rmse = np.array([s["rows"][name]["rmse_mean_20"] for s in per_seed])
        summary[name] = {
            "evals_per_cell": per_seed[0]["rows"][name]["evals_per_cell"],
            "mmd_20_mean": float(values.mean()),
            "mmd_20_sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "rmse_mean_20_mean": float(rmse.mean()),
            "mmd_20_per_seed": values.tolist(),
        }
    ref, fast = summary[SAMPLERS[0][0]], summary[SAMPLERS[3][0]]  # paper, fast preset
    diffs = np.array(fast["mmd_20_per_seed"]) - np.array(ref["mmd_20_per_seed"])
    spread = max(ref["mmd_20_sd"], fast["mmd_20_sd"])
    summary["verdict"] = {
        "fast_minus_paper_mean": float(diffs.mean()),
        "fast_minus_paper_per_seed": diffs.tolist(),
        "spread_sd": spread,
        "within_spread": bool(abs(diffs.mean()) <= spread) if np.isfinite(spread) else None,
        "evals_ratio": ref["evals_per_cell"] / fast["evals_per_cell"],
    }
    return summary


def markdown(result: dict) -> str:
    s, v = result["summary"], result["summary"]["verdict"]
    seeds = [p["seed"] for p in result["per_seed"]]
    lines = [
        "# Fast vs the paper's noise schedule and sampler: held-out quality per score evaluation",
        "",
        f"Command: `{result['command']}`  ",
        f"Data: {result['data']}; {result['n_test']} held-out doubles (random split, a quarter of "
        f"the doubles, split seed 0); {result['cells']} predicted cells per double; seeds "
        f"{seeds}. Stage A: preset `{result['preset']}`, fitted once per seed and shared by both "
        f"arms. `paper schedule` = 30 levels, {result['paper_steps']} stage-B steps (fast: "
        f"{result['fast_steps']}), same {result['score_hidden']}-wide network. "
        f"Machine: {result['machine']}.",
        "",
        "MMD² and RMSE of the mean on each double's top-20 markers (log1p CP10k), averaged over "
        "the doubles; mean ± sd over seeds. Lower is better.",
        "",
        "| arm / sampler | score evals per cell | × fewer than paper | MMD²₂₀ | RMSE mean₂₀ "
        "| MMD² per seed |",
        "|---|---:|---:|---:|---:|---|",
    ]
    paper_evals = s[SAMPLERS[0][0]]["evals_per_cell"]
    for name, row in s.items():
        if name == "verdict":
            continue
        evals = row["evals_per_cell"]
        ratio = f"{paper_evals / evals:.0f}" if evals else "–"
        per_seed = ", ".join(f"{x:.5f}" for x in row["mmd_20_per_seed"])
        lines.append(
            f"| {name} | {evals or '–'} | {ratio} | {row['mmd_20_mean']:.5f} ± "
            f"{row['mmd_20_sd']:.5f} | {row['rmse_mean_20_mean']:.4f} | {per_seed} |"
        )
    if all(p.get("fast_trains_like_reference") for p in result["per_seed"]):
        lines += ["", "The fast preset's stage B trains exactly like the reference (same training "
                  "fingerprint), so both rows use one model per seed; they differ in the sampler "
                  "only."]  # fmt: skip
    lines += [
        "",
        "fast − paper (MMD²₂₀, per seed): "
        + ", ".join(f"{x:+.5f}" for x in v["fast_minus_paper_per_seed"])
        + f"; mean {v['fast_minus_paper_mean']:+.5f} against a run-to-run sd of "
        f"{v['spread_sd']:.5f} → within spread: **{v['within_spread']}**, with "
        f"{v['evals_ratio']:.0f}× fewer score evaluations per cell.",
        "",
        "Timings per seed (s): "
        + "; ".join(
            f"seed {p['seed']}: " + ", ".join(f"{k} {t:.0f}" for k, t in p["timings"].items())
            for p in result["per_seed"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = ".venv/bin/python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/fast_vs_paper.py", *(argv or sys.argv[1:])]
    )
    raw = lc.datasets.toy_screen()
    screen = lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl")
    split = lc.pp.split(screen, scheme="random", test_fraction=0.25, seed=0)
    train, test = split.subset(screen, "train"), list(split.test)
    result = {
        "command": command,
        "data": "lc.datasets.toy_screen()",
        "n_test": len(test),
        "test": test,
        "cells": args.cells,
        "preset": args.preset,
        "paper_steps": args.paper_steps,
        "fast_steps": make_config(args.preset).score_steps,
        "score_hidden": make_config(args.preset).score_hidden,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores (shared)",
        "per_seed": [],
    }
    out = Path(args.out)
    for seed in args.seeds:
        result["per_seed"].append(run_seed(seed, args, screen, train, split, test))
        result["summary"] = summarize(result["per_seed"])
        atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2))
        atomic_write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
