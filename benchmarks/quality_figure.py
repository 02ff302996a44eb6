"""One figure of LCD's held-out quality against the additive and control baselines.

Reads the results files written by ``benchmarks/quality_suite.sh`` that exist
(``lcd_scale.json`` from ``end_to_end.py``, ``lcd_quality_sergio*_s*.json`` and
``lcd_quality_papalexi*_s*.json`` from ``lcd_quality.py``) and draws, per dataset, the mean MMD²
of LCD relative to the additive baseline and to the control cells (log scale; below 1 = LCD
better). Writes ``benchmarks/results/lcd_quality.png``.

Usage: ``.venv/bin/python benchmarks/quality_figure.py``
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def ratios() -> list[tuple[str, float | None, float | None]]:
    """(dataset, LCD / additive, LCD / control) for every results file found."""
    rows = []
    scale = RESULTS / "lcd_scale.json"
    if scale.is_file():
        for run in json.loads(scale.read_text())["runs"]:
            s = run["quality"]["summary"]
            lcd = s["LCD"]["mmd_mean"]
            rows.append(
                (
                    f"{run['dataset']} ({run['preset']})",
                    lcd / s["additive"]["mmd_mean"],
                    lcd / s["control"]["mmd_mean"],
                )
            )
    for path in sorted(RESULTS.glob("lcd_quality_sergio*_s*.json")):
        record = json.loads(path.read_text())
        h = record["summary"]["heldout"]
        rows.append(
            (
                f"SERGIO s{record['seed']} ({record['preset']})",
                h["LCD"] / h["additive"],
                h["LCD"] / h["control"],
            )
        )
    for path in sorted(RESULTS.glob("lcd_quality_papalexi*_s*.json")):
        record = json.loads(path.read_text())
        s = record["summary"]
        rows.append(
            (
                f"Papalexi s{record['seed']} ({record['preset']})",
                None,
                s["mean_LCD"] / s["mean_control"],
            )
        )
    return rows


def main() -> None:
    rows = ratios()
    if not rows:
        raise SystemExit("no results files found; run benchmarks/quality_suite.sh first")
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    y = range(len(rows))
    for offset, index, label, color in (
        (-0.18, 1, "LCD / additive", "C0"),
        (0.18, 2, "LCD / control", "C1"),
    ):
        values = [(i + offset, r[index]) for i, r in zip(y, rows, strict=True) if r[index]]
        ax.barh(
            [v[0] for v in values], [v[1] for v in values], height=0.34, label=label, color=color
        )
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(list(y), [r[0] for r in rows])
    ax.set_xlabel("mean MMD² on held-out conditions, ratio (below 1 = LCD better)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = RESULTS / "lcd_quality.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
