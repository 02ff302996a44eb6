"""Stage-B variants on the simulated 1000-gene screen, reusing one fitted stage A.

The experiment behind the ``auto`` default (README "Fitting LCD"): the sim1000 screen of
``benchmarks/end_to_end.py`` (seed via ``SIMSEED``, default 0), its held-out split, stage A fitted
once with ``A_OVR`` overrides (JSON, e.g. ``{"noise_lr": 0.001, "state_floor": 0.001}``), then each
variant (a JSON list of ``LCD`` overrides) trains stage B only (``fit(noise_model_from=...)``)
and predicts 500 cells per held-out double and for 5 training singles. Prints, first, per-
condition quantiles of the stage-A states (min, 1 %, median, 99 %, max, fraction below the
10⁻³-rate floor, median and max per-gene sd), then one JSON line per variant: MMD² on the top-20
markers (LCD, control, additive), the post-training checks and the median state scale.

Usage (repository root)::

    A_OVR='{"noise_lr": 0.001, "state_floor": 0.001}' .venv/bin/python \\
        benchmarks/sim1000_stage_variants.py zinb '[{"score_head": "gaussian"}]'

The output of the run quoted in the README is ``benchmarks/results/sim1000_stage_variants.txt``.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import lcdiff as lc  # noqa: E402
from lcdiff.model.noise import state_floor  # noqa: E402
from lcdiff.model.streaming import GeneratorStates  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from end_to_end import SIM_SETTINGS, SPLIT_SETTINGS, heldout_quality  # noqa: E402


def main() -> None:
    noise_model, variants = sys.argv[1], json.loads(sys.argv[2])
    stage_a = json.loads(os.environ.get("A_OVR", "{}"))
    seed = int(os.environ.get("SIMSEED", 0))
    raw = lc.simulate.screen(**{**SIM_SETTINGS, "seed": seed})
    screen = lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl")
    split = lc.pp.split(screen, **SPLIT_SETTINGS)
    train = split.subset(screen, "train")
    test = list(split.test)
    singles = list(dict.fromkeys(g for lb in test for g in lb.split("+")))[:5]
    base = {name: lc.baselines.get(name).fit(screen, split) for name in ("control", "additive")}
    preds_b = {n: b.predict(test + singles, n_cells=500, seed=0) for n, b in base.items()}
    start = time.time()
    settings = dict(preset="fast", noise_model=noise_model, seed=0, **stage_a)
    m0 = lc.LCD(train, score_steps=10, **settings).fit(progress=False)
    print("stage A", time.time() - start, flush=True)
    noise = m0._noise
    floor = state_floor(noise["unit_scale"], 1e-3)
    states = GeneratorStates(noise["gen"], jax.random.PRNGKey(1), 1000, m0.config.generator_hidden)
    for e in range(len(states)):
        s = states.condition(e)
        quantiles = np.round(np.quantile(s, [0, 0.01, 0.5, 0.99, 1]), 1).tolist()
        sd = s.std(0)
        row = [m0.train_labels[e], *quantiles, round(float((s < floor).mean()), 4)]
        print("STATES", [*row, round(float(np.median(sd)), 3), round(float(sd.max()), 1)])
    for variant in variants:
        start = time.time()
        m = lc.LCD(train, **settings, **variant).fit(progress=False, noise_model_from=m0)
        fit_b = time.time() - start
        pred = m.predict(test + singles, n_cells=500, seed=0)
        q = heldout_quality(screen, test, {"LCD": pred, **preds_b})
        qs = heldout_quality(screen, singles, {"LCD": pred, **preds_b})
        score = m.diagnostics["score"]
        record = {
            "variant": variant,
            "stageB_s": round(fit_b),
            "heldout": {k: round(x["mmd_mean"], 5) for k, x in q["summary"].items()},
            "singles": {k: round(x["mmd_mean"], 5) for k, x in qs["summary"].items()},
            "scale_med": float(np.median(m.state_scale)),
            "closed": round(score["closed_small_sigma"], 3),
            "noise_ratio": round(m.diagnostics["noise"]["median_mean_rmse_ratio"], 2),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
