#!/usr/bin/env bash
# Reruns every benchmark behind the "LCD at the sizes users have" claims (issue: LCD quality).
# Each step writes its own results file in benchmarks/results/ with the command that made it.
# About 3 hours on 2 CPU cores; run from the repository root:  bash benchmarks/quality_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export JAX_PLATFORMS=cpu
# 1000 genes (the paper's size), two simulator seeds, and a 2000-gene scale point
$PY benchmarks/end_to_end.py --datasets sim1000 sim1000s1 sim2000 --out benchmarks/results/lcd_scale
# the outside simulator (SERGIO), two split seeds, default and the fast-zinb preset for contrast
$PY benchmarks/lcd_quality.py sergio --seed 0
$PY benchmarks/lcd_quality.py sergio --seed 1
$PY benchmarks/lcd_quality.py sergio --seed 0 --preset fast-zinb
# a real screen, every gene that passes QC
$PY benchmarks/lcd_quality.py papalexi --seed 0
# the toy under the paper's scheme (5 folds, 20 held-out doubles)
$PY benchmarks/toy_benchmark.py --lcd-preset auto --name toy_benchmark_auto
$PY benchmarks/quality_figure.py
