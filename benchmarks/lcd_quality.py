"""LCD on data it was not built on: the SERGIO knockout screen and Papalexi 2021.

``sergio`` (``../shared/data/sergio-screen-s7``, an outside simulator; GPL-3 data, read from
there and never bundled): a quarter of the doubles held out (``lc.pp.split(scheme="random",
test_fraction=0.25, seed=S)``), LCD fitted on the rest. The error is decomposed, on each
condition's top-20 marker genes (log1p CP10k, MMD² by ``lc.eval.mmd``):

- **noise model**: cells decoded from each training condition's stage-A generator
  (``LCD.sample_noise_model``) against the observed cells;
- **stage B**: cells predicted by the score model for the training conditions (``predict``)
  against the decoded ones (how much the diffusion loses of what stage A had), and against the
  observed cells (the in-sample total);
- **extrapolation**: held-out doubles, predicted against observed, next to the additive
  baseline and the control cells.

It also reports the spread of log library sizes (observed, decoded, predicted) and, per
held-out double, which method wins.

``papalexi`` (bundled, ``lc.datasets.papalexi2021(measured_targets_only=True)``, every gene that
passes QC: ``prepare(n_genes=None)``): 20 % of each condition's cells held out, LCD fitted on
the rest; per knockout, MMD² of LCD's predicted cells and of the training control cells to the
held-out cells, with a paired bootstrap standard error of the difference (resampling the
held-out and the compared cells, 200 replicates).

Usage (repository root)::

    .venv/bin/python benchmarks/lcd_quality.py sergio --seed 0        # the default preset
    .venv/bin/python benchmarks/lcd_quality.py sergio --preset fast-zinb
    .venv/bin/python benchmarks/lcd_quality.py papalexi

Writes ``benchmarks/results/lcd_quality_<data>[_<preset>]_s<seed>.{md,json}``.
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
from lcdiff._io import atomic_write_text  # noqa: E402
from lcdiff.data.normalize import dense, log1p_cp10k  # noqa: E402
from lcdiff.data.screen import condition_cells, conditions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SERGIO = SHARED / "sergio-screen-s7" / "sergio_screen.h5ad"
RESULTS = REPO / "benchmarks" / "results"
N_MARKERS = 20
STRONG_PAPALEXI = ("IFNGR2", "JAK2", "STAT1", "STAT2")


def _markers(screen, label: str) -> list[int]:
    index = {g: i for i, g in enumerate(screen.var_names)}
    return [index[g] for g in screen.uns["lcdiff"]["markers"][label][:N_MARKERS]]


def _cells(pred, label: str) -> np.ndarray:
    mask = (pred.obs["perturbation"].astype(str) == label).to_numpy()
    return np.asarray(pred.X[mask])


def _log_library_sd(counts: np.ndarray) -> float:
    total = np.asarray(counts).sum(axis=1)
    return float(np.std(np.log(total[total > 0])))


def _checks(model) -> dict:
    """The headline numbers of the model's post-training checks."""
    d = model.diagnostics
    return {
        "score_closed_small_sigma": d["score"]["closed_small_sigma"],
        "noise_median_mean_rmse_ratio": d["noise"]["median_mean_rmse_ratio"],
        **(
            {k: d["sampler"][k] for k in ("median_mean_error", "median_sd_ratio")}
            if "sampler" in d
            else {}
        ),
    }


def _fit(train, preset: str, seed: int, progress: bool):
    kwargs = {} if preset == "auto" else {"preset": preset}
    start = time.perf_counter()
    model = lc.LCD(train, seed=seed, **kwargs).fit(progress=progress)
    return model, time.perf_counter() - start


def run_sergio(args) -> dict:
    import anndata as ad

    raw = ad.read_h5ad(SERGIO)
    screen = lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl", n_genes=None)
    split = lc.pp.split(screen, scheme="random", test_fraction=0.25, seed=args.seed)
    train = split.subset(screen, "train")
    model, fit_s = _fit(train, args.preset, args.seed, args.progress)
    test = list(split.test)
    train_labels = [lab for lab in conditions(train) if lab != model.control]
    start = time.perf_counter()
    pred = model.predict(test + train_labels, n_cells=args.n_cells, seed=0)
    predict_s = time.perf_counter() - start
    baselines = {
        name: lc.baselines.get(name).fit(screen, split).predict(test, n_cells=args.n_cells, seed=0)
        for name in ("additive", "control")
    }
    rows_train = []
    for label in train_labels:
        cols = _markers(screen, label)
        observed_counts = np.asarray(condition_cells(screen, label, layer="counts"))
        decoded_counts = model.sample_noise_model(label, n_cells=args.n_cells, seed=0)
        observed = log1p_cp10k(observed_counts)[:, cols]
        decoded = log1p_cp10k(decoded_counts)[:, cols]
        predicted = _cells(pred, label)[:, cols]
        pred_counts = np.asarray(pred.layers["counts"])[
            (pred.obs["perturbation"].astype(str) == label).to_numpy()
        ]
        rows_train.append(
            {
                "condition": label,
                "noise_model": float(lc.eval.mmd(decoded, observed)),
                "stage_b_vs_decoded": float(lc.eval.mmd(predicted, decoded)),
                "in_sample": float(lc.eval.mmd(predicted, observed)),
                "control_vs_observed": float(
                    lc.eval.mmd(
                        np.asarray(condition_cells(screen, model.control))[:, cols], observed
                    )
                ),
                "log_library_sd": {
                    "observed": _log_library_sd(observed_counts),
                    "decoded": _log_library_sd(decoded_counts),
                    "predicted": _log_library_sd(pred_counts),
                },
            }
        )
    rows_test = []
    for label in test:
        cols = _markers(screen, label)
        observed = np.asarray(condition_cells(screen, label))[:, cols]
        row = {
            "condition": label,
            "LCD": float(lc.eval.mmd(_cells(pred, label)[:, cols], observed)),
        }
        for name, b in baselines.items():
            row[name] = float(lc.eval.mmd(_cells(b, label)[:, cols], observed))
        rows_test.append(row)

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    summary = {
        "heldout": {k: mean(rows_test, k) for k in ("LCD", "additive", "control")},
        "heldout_lcd_over_additive": mean(rows_test, "LCD") / mean(rows_test, "additive"),
        "heldout_lcd_wins_vs_additive": int(sum(r["LCD"] < r["additive"] for r in rows_test)),
        "train": {
            k: mean(rows_train, k)
            for k in ("noise_model", "stage_b_vs_decoded", "in_sample", "control_vs_observed")
        },
        "log_library_sd": {
            k: float(np.mean([r["log_library_sd"][k] for r in rows_train]))
            for k in ("observed", "decoded", "predicted")
        },
    }
    return {
        "data": "sergio",
        "n_heldout": len(test),
        "n_train_conditions": len(train_labels),
        "fit_s": fit_s,
        "predict_s": predict_s,
        "config": model.config.to_dict(),
        "diagnostics": _checks(model),
        "summary": summary,
        "heldout": rows_test,
        "train": rows_train,
    }


def _paired_bootstrap_se(a: np.ndarray, b: np.ndarray, truth: np.ndarray, reps: int, seed: int):
    """SE of mmd(a, truth) − mmd(b, truth), resampling all three sets of cells."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(reps):
        t = truth[rng.integers(0, len(truth), len(truth))]
        aa = a[rng.integers(0, len(a), len(a))]
        bb = b[rng.integers(0, len(b), len(b))]
        diffs.append(float(lc.eval.mmd(aa, t)) - float(lc.eval.mmd(bb, t)))
    return float(np.std(diffs, ddof=1))


def run_papalexi(args) -> dict:
    adata = lc.datasets.papalexi2021(measured_targets_only=True)
    screen = lc.pp.prepare(adata, n_genes=None)
    labels = np.asarray(screen.obs["perturbation"].astype(str))
    rng = np.random.default_rng(args.seed)
    held = np.zeros(labels.size, bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        held[rng.choice(idx, size=int(round(0.2 * idx.size)), replace=False)] = True
    train = screen[~held].copy()
    model, fit_s = _fit(train, args.preset, args.seed, args.progress)
    knockouts = [lab for lab in conditions(screen) if lab != model.control]
    start = time.perf_counter()
    pred = model.predict(knockouts, n_cells=args.n_cells, seed=0)
    predict_s = time.perf_counter() - start
    control_train = dense(screen.X[(~held) & (labels == model.control)])
    rows = []
    for label in knockouts:
        cols = _markers(screen, label)
        truth = dense(screen.X[held & (labels == label)])[:, cols]
        lcd_cells = _cells(pred, label)[:, cols]
        ctrl_cells = control_train[:, cols]
        mmd_lcd = float(lc.eval.mmd(lcd_cells, truth))
        mmd_ctrl = float(lc.eval.mmd(ctrl_cells, truth))
        se = _paired_bootstrap_se(lcd_cells, ctrl_cells, truth, args.bootstrap, args.seed)
        rows.append(
            {
                "condition": label,
                "n_heldout": int(truth.shape[0]),
                "LCD": mmd_lcd,
                "control": mmd_ctrl,
                "diff": mmd_lcd - mmd_ctrl,
                "se_diff": se,
                "worse_beyond_2se": bool(mmd_lcd - mmd_ctrl > 2 * se),
                "better_beyond_2se": bool(mmd_ctrl - mmd_lcd > 2 * se),
                "strong": label in STRONG_PAPALEXI,
            }
        )
    return {
        "data": "papalexi",
        "n_genes": int(screen.n_vars),
        "fit_s": fit_s,
        "predict_s": predict_s,
        "config": model.config.to_dict(),
        "diagnostics": _checks(model),
        "summary": {
            "worse_than_control_beyond_2se": [
                r["condition"] for r in rows if r["worse_beyond_2se"]
            ],
            "strong_better_beyond_2se": [
                r["condition"] for r in rows if r["strong"] and r["better_beyond_2se"]
            ],
            "mean_LCD": float(np.mean([r["LCD"] for r in rows])),
            "mean_control": float(np.mean([r["control"] for r in rows])),
        },
        "per_condition": rows,
    }


def _verdict(row: dict) -> str:
    if row["better_beyond_2se"]:
        return "better"
    return "worse" if row["worse_beyond_2se"] else "tie"


def _markdown(record: dict) -> str:
    lines = [
        f"# LCD quality on {record['data']} (preset `{record['preset']}`, seed {record['seed']})",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {record['machine']}. Fit {record['fit_s']:.0f} s, predict "
        f"{record['predict_s']:.0f} s (wall, shared machine).",
        "Post-training checks: stage B closed "
        f"{record['diagnostics']['score_closed_small_sigma']:.2f} of the skip-only → "
        "per-gene-Gaussian gap; stage A mean error "
        f"{record['diagnostics']['noise_median_mean_rmse_ratio']:.2f}× the sampling floor.",
        "",
    ]
    s = record["summary"]
    if record["data"] == "sergio":
        lines += [
            f"## Held-out doubles ({record['n_heldout']}), MMD² on top-{N_MARKERS} markers",
            "",
            "| method | mean MMD² |",
            "|---|---:|",
            *[f"| {k} | {v:.5f} |" for k, v in s["heldout"].items()],
            "",
            f"LCD / additive = **{s['heldout_lcd_over_additive']:.2f}**; LCD below additive on "
            f"{s['heldout_lcd_wins_vs_additive']} of {record['n_heldout']} doubles.",
            "",
            f"## Error decomposition on the {record['n_train_conditions']} training conditions "
            "(mean MMD²)",
            "",
            "| part | mean MMD² |",
            "|---|---:|",
            f"| noise model: decoded generators vs observed | {s['train']['noise_model']:.5f} |",
            "| stage B: predicted vs decoded generators | "
            f"{s['train']['stage_b_vs_decoded']:.5f} |",
            f"| in sample: predicted vs observed | {s['train']['in_sample']:.5f} |",
            f"| reference: control cells vs observed | {s['train']['control_vs_observed']:.5f} |",
            "",
            "sd of log library size (mean over training conditions): observed "
            f"{s['log_library_sd']['observed']:.3f}, decoded {s['log_library_sd']['decoded']:.3f}, "
            f"predicted {s['log_library_sd']['predicted']:.3f}.",
            "",
            "| held-out double | LCD | additive | control |",
            "|---|---:|---:|---:|",
            *[
                f"| {r['condition']} | {r['LCD']:.5f} | {r['additive']:.5f} | {r['control']:.5f} |"
                for r in record["heldout"]
            ],
        ]
    else:
        lines += [
            f"{record['n_genes']} genes (every gene that passes QC). 20 % of each condition's "
            "cells held out; MMD² on each knockout's top-20 markers; SE = paired bootstrap "
            "of the difference (held-out, predicted and control cells resampled).",
            "",
            "| knockout | held-out cells | LCD | control | LCD − control | 2 SE | verdict |",
            "|---|---:|---:|---:|---:|---:|---|",
            *[
                f"| {r['condition']}{' (strong)' if r['strong'] else ''} | {r['n_heldout']} | "
                f"{r['LCD']:.5f} | {r['control']:.5f} | {r['diff']:+.5f} | {2 * r['se_diff']:.5f}"
                f" | {_verdict(r)} |"
                for r in record["per_condition"]
            ],
            "",
            f"Worse than control beyond 2 SE: {s['worse_than_control_beyond_2se'] or 'none'}; "
            f"strong knockouts better beyond 2 SE: {s['strong_better_beyond_2se']}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", choices=["sergio", "papalexi"])
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-cells", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.data == "sergio" and not SERGIO.is_file():
        raise SystemExit(f"{SERGIO} not found (the shared SERGIO screen).")
    record = run_sergio(args) if args.data == "sergio" else run_papalexi(args)
    record.update(
        preset=args.preset,
        seed=args.seed,
        command=".venv/bin/python benchmarks/lcd_quality.py " + shlex.join(sys.argv[1:]),
        machine=f"{platform.platform()}, {os.cpu_count()} CPU cores",
        lcdiff_version=lc.__version__,
    )
    suffix = "" if args.preset == "auto" else f"_{args.preset}"
    name = f"lcd_quality_{args.data}{suffix}_s{args.seed}"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{name}.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(args.out / f"{name}.md", _markdown(record))
    print(_markdown(record))
    return record


if __name__ == "__main__":
    main()
