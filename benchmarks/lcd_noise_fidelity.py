"""How well does LCD's stage A (the noise model) reproduce the cells it was trained on?

For each preset, fit only stage A on the training conditions of the toy-screen split used by
``benchmarks/lcd_toy_heldout.py``, draw 1000 latent states from each training condition's own
generator, decode counts with the noise model and compare them with that condition's observed
cells on log1p CP10k: MMD² (``lc.eval.mmd``) over the condition's top-20 marker genes and over
all genes. Two floors are measured in the same run on the same conditions:

- ``half``: two random halves of the observed cells (what a perfect model could reach);
- ``true``: counts re-simulated from the simulator's own latent states with fresh library sizes
  and negative-binomial noise (the true generative process) against the observed cells.

Also reported: decoded / observed ratios of per-gene means and variances of the control counts,
and the mean and std of log total counts (library size) over conditions.

Run from the repository root::

    .venv/bin/python benchmarks/lcd_noise_fidelity.py                       # fast, fast-zinb
    .venv/bin/python benchmarks/lcd_noise_fidelity.py --presets tiny        # smoke run

Writes ``benchmarks/results/lcd_noise_fidelity.{md,json}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import lcdiff as lc  # noqa: E402
from lcdiff.data.normalize import log1p_cp10k  # noqa: E402
from lcdiff.data.simulate import _sample_counts  # noqa: E402
from lcdiff.model.noise import decode, sample_all_states  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_CELLS = 1000


def _mmds(pred_counts, obs_counts, cols):
    x, y = np.asarray(log1p_cp10k(pred_counts)), np.asarray(log1p_cp10k(obs_counts))
    return float(lc.eval.mmd(x[:, cols], y[:, cols])), float(lc.eval.mmd(x, y))


def floors(raw, screen, labels, markers, genes, rng) -> dict:
    """MMD² of half vs half of the observed cells and of re-simulated true-process counts."""
    sim = raw.uns["simulation"]
    order = [list(raw.var_names).index(g) for g in genes]
    out = {"half_20": [], "half_all": [], "true_20": [], "true_all": []}
    for label in labels:
        obs = np.asarray(screen.layers["counts"][(screen.obs["perturbation"] == label).to_numpy()])
        cols = [genes.index(g) for g in markers[label][:20]]
        perm = rng.permutation(len(obs))
        h20, hall = _mmds(obs[perm[: len(obs) // 2]], obs[perm[len(obs) // 2 :]], cols)
        latent = raw.obsm["latent"][(raw.obs["perturbation"] == label).to_numpy()]
        log_sd = sim["library_size_log_sd"]
        library = sim["mean_library_size"] * np.exp(
            log_sd * rng.standard_normal(len(latent)) - 0.5 * log_sd**2
        )
        true = _sample_counts(
            sim["baseline_log_abundance"] + latent, library, "nb", sim["dispersion"], rng
        )[:, order].astype(np.float32)
        t20, tall = _mmds(true, obs, cols)
        for key, value in zip(out, (h20, hall, t20, tall), strict=True):
            out[key].append(value)
    return {key: float(np.mean(v)) for key, v in out.items()}


def stage_a(train, preset, seed, markers, genes, rng) -> dict:
    model = lc.LCD(train, preset=preset, seed=seed)
    t0 = time.perf_counter()
    # stage A alone (a private method: LCD has no public "noise model only" fit)
    noise = model._fit_noise(jax.random.PRNGKey(seed), None, False, {}, False)
    fit_s = time.perf_counter() - t0
    states = sample_all_states(
        noise["gen"], jax.random.PRNGKey(seed + 1), N_CELLS, model.config.generator_hidden
    )
    mmd20, mmd_all, lib_obs, lib_dec = [], [], [], []
    for i, label in enumerate(model.train_labels):
        counts = decode(
            states[i], noise["unit_scale"], noise["logit_pi"], rng, log_theta=noise.get("log_theta")
        )
        obs = model._cells[i]
        if i == 0:
            mean_ratio = counts.mean(0) / obs.mean(0)
            var_ratio = counts.var(0) / obs.var(0)
        if label == model.control:
            continue
        cols = [genes.index(g) for g in markers[label][:20]]
        a, b = _mmds(counts, obs, cols)
        mmd20.append(a)
        mmd_all.append(b)
        lib_obs.append(np.log1p(obs.sum(1)))
        lib_dec.append(np.log1p(counts.sum(1)))
    lib_obs, lib_dec = np.concatenate(lib_obs), np.concatenate(lib_dec)
    out = {
        "preset": preset,
        "noise_model": model.config.noise_model,
        "stage_a_fit_wall_s": fit_s,
        "mmd_20": float(np.mean(mmd20)),
        "mmd_all": float(np.mean(mmd_all)),
        "control_mean_ratio_quantiles": np.quantile(mean_ratio, [0.1, 0.5, 0.9]).tolist(),
        "control_var_ratio_quantiles": np.quantile(var_ratio, [0.1, 0.5, 0.9]).tolist(),
        "log_library_observed_mean_sd": [float(lib_obs.mean()), float(lib_obs.std())],
        "log_library_decoded_mean_sd": [float(lib_dec.mean()), float(lib_dec.std())],
    }
    if "log_theta" in noise:
        theta = np.exp(noise["log_theta"])
        out["dispersion_quantiles"] = np.quantile(theta, [0.1, 0.5, 0.9]).tolist()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "fast-zinb"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "lcd_noise_fidelity"))
    args = parser.parse_args(argv)

    raw = lc.datasets.toy_screen()
    screen = lc.pp.prepare(raw, perturbation_key="perturbation", control="ctrl")
    split = lc.pp.split(screen, scheme="random", test_fraction=0.25, seed=0)
    train = split.subset(screen, "train")
    markers = screen.uns["lcdiff"]["markers"]
    genes = list(screen.var_names)
    labels = [lab for lab in split.train if lab != "ctrl"]
    rng = np.random.default_rng(args.seed)
    result = {
        "command": "python "
        + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "data": "lc.datasets.toy_screen()",
        "n_conditions": len(labels),
        "floors": floors(raw, screen, labels, markers, genes, rng),
        "presets": [stage_a(train, p, args.seed, markers, genes, rng) for p in args.presets],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    f = r["floors"]
    lines = [
        "# LCD stage A: decoded training conditions against their observed cells",
        "",
        f"Command: `{r['command']}`  ",
        f"Data: {r['data']}, the {r['n_conditions']} perturbed training conditions of the "
        "held-out-doubles split (random, 25 %, seed 0); 1000 decoded cells per condition; "
        "MMD² on log1p CP10k (lower is better).",
        "",
        "| source | MMD² top-20 markers | MMD² all genes |",
        "|---|---|---|",
        f"| floor: half vs half of the observed cells | {f['half_20']:.4f} | {f['half_all']:.4f} |",
        f"| floor: true generative process re-simulated | {f['true_20']:.4f} | "
        f"{f['true_all']:.4f} |",
    ]
    for p in r["presets"]:
        lines.append(
            f"| stage A, preset `{p['preset']}` ({p['noise_model']}), "
            f"{p['stage_a_fit_wall_s']:.0f} s | {p['mmd_20']:.4f} | {p['mmd_all']:.4f} |"
        )
    lines += [
        "",
        "| preset | control mean ratio (q10, q50, q90) | control variance ratio | "
        "log library obs (mean, sd) | decoded | NB dispersion θ |",
        "|---|---|---|---|---|---|",
    ]
    for p in r["presets"]:

        def q(v):
            return ", ".join(f"{x:.2f}" for x in v)

        lines.append(
            f"| `{p['preset']}` | {q(p['control_mean_ratio_quantiles'])} | "
            f"{q(p['control_var_ratio_quantiles'])} | {q(p['log_library_observed_mean_sd'])} | "
            f"{q(p['log_library_decoded_mean_sd'])} | {q(p.get('dispersion_quantiles', []))} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
