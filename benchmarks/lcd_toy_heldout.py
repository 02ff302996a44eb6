"""LCD (``fast`` preset) on the embedded toy screen: fit time and held-out-double quality.

Protocol: ``toy_screen()`` → ``lc.pp.prepare`` → ``lc.pp.split(scheme="random",
test_fraction=0.25, seed=0)`` (a quarter of the doubles held out; every single in training).
LCD is fitted on the training conditions only; the control baseline (random training control
cells) and the additive / SALT baseline are fitted on the same split in the same run. For every
held-out double we compare 1000 predicted cells with the observed cells on log1p CP10k, restricted
to that double's top-20 marker genes (``uns["lcdiff"]["markers"]``): MMD² (``lc.eval.mmd``,
lower is better) and the RMSE of the mean.

Run from the repository root::

    .venv/bin/python benchmarks/lcd_toy_heldout.py                 # fast preset
    .venv/bin/python benchmarks/lcd_toy_heldout.py --preset tiny   # smoke run

Writes ``benchmarks/results/lcd_toy_heldout.{md,json}``.
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import lcdiff as lc  # noqa: E402
from lcdiff.data.screen import condition_cells  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_CELLS = 1000


def load_toy():
    """The embedded toy screen (falls back to the simulator's defaults, which it is built on)."""
    try:
        return lc.datasets.toy_screen(), "lc.datasets.toy_screen()"
    except (ImportError, AttributeError):
        return lc.simulate.screen(seed=0), "lc.simulate.screen(seed=0)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "lcd_toy_heldout"))
    args = parser.parse_args(argv)

    raw, source = load_toy()
    screen = lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl")
    split = lc.pp.split(screen, scheme="random", test_fraction=0.25, seed=0)
    train = split.subset(screen, "train")
    test = list(split.test)
    markers = screen.uns["lcdiff"]["markers"]
    genes = list(screen.var_names)

    t0, c0 = time.perf_counter(), time.process_time()
    model = lc.LCD(train, preset=args.preset, seed=args.seed).fit(progress=True)
    fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    pred_lcd = model.predict(test, n_cells=N_CELLS, seed=0)
    predict_wall = time.perf_counter() - t0

    predictions = {"LCD": pred_lcd}
    for name in ("control", "additive"):
        predictions[name] = (
            lc.baselines.get(name).fit(screen, split).predict(test, n_cells=N_CELLS, seed=0)
        )

    rows = []
    for label in test:
        cols = [genes.index(g) for g in markers[label][:20]]
        truth = condition_cells(screen, label)[:, cols]
        row = {"condition": label}
        for name, pred in predictions.items():
            cells = pred.X[(pred.obs["perturbation"].astype(str) == label).to_numpy()][:, cols]
            row[f"mmd_{name}"] = float(lc.eval.mmd(cells, truth))
            row[f"rmse_mean_{name}"] = float(lc.eval.rmse_mean(cells, truth))
        rows.append(row)

    names = list(predictions)
    summary = {
        name: {
            "mmd_20_mean": float(np.mean([r[f"mmd_{name}"] for r in rows])),
            "mmd_20_median": float(np.median([r[f"mmd_{name}"] for r in rows])),
            "rmse_mean_20_mean": float(np.mean([r[f"rmse_mean_{name}"] for r in rows])),
            "wins_vs_control": int(sum(r[f"mmd_{name}"] < r["mmd_control"] for r in rows)),
        }
        for name in names
    }
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    result = {
        "command": command,
        "data": source,
        "split": {
            "scheme": "random",
            "test_fraction": 0.25,
            "seed": 0,
            "n_test": len(test),
            "test": test,
        },
        "preset": args.preset,
        "config": model.config.to_dict(),
        "seed": args.seed,
        "n_genes": len(genes),
        "n_train_conditions": len(model.train_labels),
        "fit_wall_s": fit_wall,
        "fit_cpu_s": fit_cpu,
        "predict_wall_s": predict_wall,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax_platform": os.environ.get("JAX_PLATFORMS"),
        },
        "summary": summary,
        "per_condition": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(_markdown(result, names))
    print(_markdown(result, names))
    return result


def _markdown(result: dict, names: list[str]) -> str:
    lines = [
        "# LCD on the toy screen: held-out doubles",
        "",
        f"Command: `{result['command']}`  ",
        f"Data: {result['data']}, {result['n_genes']} genes, "
        f"{result['n_train_conditions']} training conditions; split: random, 25 % of doubles "
        f"held out (seed 0), {result['split']['n_test']} test doubles.  ",
        f"Preset `{result['preset']}`, seed {result['seed']}. Fit: "
        f"{result['fit_wall_s']:.0f} s wall, {result['fit_cpu_s']:.0f} s CPU "
        f"({result['machine']['cpus']} cores, shared); predict ({N_CELLS} cells × "
        f"{result['split']['n_test']} doubles): {result['predict_wall_s']:.0f} s wall.",
        "",
        "Metrics on log1p CP10k over each double's top-20 marker genes (lower is better).",
        "",
        "| method | MMD² mean | MMD² median | RMSE of mean | doubles with MMD² below control |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        s = result["summary"][name]
        lines.append(
            f"| {name} | {s['mmd_20_mean']:.4f} | {s['mmd_20_median']:.4f} | "
            f"{s['rmse_mean_20_mean']:.4f} | {s['wins_vs_control']}/{result['split']['n_test']} |"
        )
    lines += [
        "",
        "| double | " + " | ".join(f"MMD² {n}" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row in result["per_condition"]:
        lines.append(
            f"| {row['condition']} | " + " | ".join(f"{row[f'mmd_{n}']:.4f}" for n in names) + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
