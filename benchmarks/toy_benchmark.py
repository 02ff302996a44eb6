"""LCD against the baselines on the embedded toy screen (paper split scheme, held-out doubles).

Writes ``benchmarks/results/toy_benchmark.md`` and ``.json`` (headline table, per-metric summary,
failures, timings, the split of every fold and the exact command), plus the full result folder
``benchmarks/results/toy_benchmark/`` (long.csv, summary.csv, boxplots.png, ...).

Run from the repository root::

    .venv/bin/python benchmarks/toy_benchmark.py                # all methods, LCD "fast"
    .venv/bin/python benchmarks/toy_benchmark.py --methods control,additive --lcd-preset tiny
"""

from __future__ import annotations

import os

# Platform chosen here, in the benchmark, before JAX is imported (never in the library).
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
from lcdiff.eval.benchmark import DEFAULT_METHODS  # noqa: E402
from lcdiff.eval.tables import HEADLINE_METRICS, summary_table, to_markdown, wide_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument(
        "--folds", default="1,2,3,4,5", help="Paper-scheme folds to run (default: the whole pool)."
    )
    parser.add_argument(
        "--n-folds",
        type=int,
        default=5,
        help="Folds the cross-validation pool is cut into (paper: 10).",
    )
    parser.add_argument("--n-val", type=int, default=20, help="Validation doubles (paper: 20).")
    parser.add_argument("--lcd-preset", default="fast")
    parser.add_argument("--n-cells", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="toy_benchmark", help="Base name of the outputs.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "cd /work/main && .venv/bin/python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/toy_benchmark.py", *(argv or sys.argv[1:])]
    )
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    folds = [int(f) if f.strip().isdigit() else f.strip() for f in args.folds.split(",")]

    started = time.perf_counter()
    raw = lc.datasets.toy_screen()
    screen = lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl", n_genes=None)
    print(f"toy screen prepared: {screen.n_obs} cells x {screen.n_vars} genes", flush=True)
    result = lc.eval.benchmark(
        screen,
        methods=methods,
        scheme="paper",
        folds=folds,
        lcd_preset=args.lcd_preset,
        out=RESULTS / args.name,
        force=True,
        seed=args.seed,
        n_cells=args.n_cells,
        split_options={"n_folds": args.n_folds, "n_val": args.n_val},
    )
    wall = time.perf_counter() - started

    headline = wide_table(
        summary_table(result.long, HEADLINE_METRICS, result.methods), HEADLINE_METRICS
    )
    n_conditions = result.long.groupby("fold")["condition"].nunique().to_dict()
    md = [
        f"# {args.name}: LCD vs baselines on the toy screen",
        "",
        f"Command: `{command}`",
        "",
        "LCD is compared with the simple baselines fitted and scored in the same run, on the same "
        "held-out double perturbations.",
        "",
        f"Screen: `lc.datasets.toy_screen()` prepared with every gene "
        f"({screen.n_obs} cells × {screen.n_vars} genes). Split: paper scheme "
        f"(seed {args.seed}, {args.n_val} validation doubles always in training, cross-validation "
        f"pool cut into {args.n_folds} folds), folds {folds}; held-out conditions per fold: "
        f"{n_conditions}. Every method predicts {args.n_cells} cells per held-out condition; "
        f"metrics against all observed cells, training control as reference. LCD preset: "
        f"`{args.lcd_preset}`. Wall time {wall / 60:.1f} min on {os.cpu_count()} CPU core(s).",
        "",
        "## Summary tables (headline: MMD and RMSE on each condition's top-20 markers, "
        "Pearson Δ vs the training centroid)",
        "",
        result.markdown(),
        "## Time per fold and method (s)",
        "",
        to_markdown(result.timings.set_index("fold").round(1)),
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    payload = {
        "command": command,
        "config": result.config,
        "wall_s": wall,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "lcdiff": lc.__version__,
        "headline": summary_table(result.long, HEADLINE_METRICS, result.methods)
        .replace({np.nan: None})
        .to_dict(orient="records"),
        "summary": result.summary.replace({np.nan: None}).to_dict(orient="records"),
        "failures": result.failures.to_dict(orient="records"),
        "timings": result.timings.replace({np.nan: None}).to_dict(orient="records"),
        "splits": {fold: json.loads(text) for fold, text in result.splits.items()},
    }
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8"
    )
    print(to_markdown(headline))
    print(f"wrote {RESULTS / args.name}.md/.json in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
