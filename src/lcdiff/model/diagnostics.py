"""Checks run after each training stage, so that a fit says whether it worked.

Stage B (:func:`score_check`): on fresh states of every training condition, the denoising loss
½·mean_g (σ ŝ_g + ε_g)² of three scores at each noise level, with the same noise draws:

- the trained score;
- the *skip-only* score: the same network with its output layer (and Gaussian head, if any)
  zeroed, i.e. what the parameterization gives when nothing has been learned;
- the *per-gene Gaussian* reference: the exact score of an independent Gaussian per gene with
  that condition's mean and variance, −(z̃ − μ)/(v + σ²). Its expected loss,
  ½·mean_g v_g / (v_g + σ²), depends only on the states' first two moments; it is estimated on
  the same draws as the other two, so that the differences are precise.

``closed`` = (skip − trained) / (skip − Gaussian): the fraction of the gap between learning
nothing and a per-gene Gaussian fit that training closed. 1 means the network knows each gene's
mean and spread in each condition; more than 1 means it also learned structure (correlations,
non-Gaussian shape) beyond that; well below 1 means the sampler will not reproduce the
conditions it was trained on. The summary averages the levels with σ ≤ 1, which shape the final
distribution.

Sampler (:func:`sampler_check`): the trained score is only useful if annealed Langevin
dynamics reproduce the conditions it was trained on. For a few training conditions, chains run
with the fitted sampler settings are compared with the condition's own states (standardized
space): the error of the per-gene means in units of the per-gene spread of the states, and the
ratio of per-gene standard deviations (sampled / states).

Stage A (:func:`noise_check`): counts decoded from each condition's generator against that
condition's observed cells, on log1p CP10k: the RMSE of the per-gene means divided by the RMSE
between two random halves of the observed cells (the sampling floor, so ≈ 1 is as good as the
data allow), the median ratio of per-gene variances, and the fraction of zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lcdiff.data.normalize import log1p_cp10k
from lcdiff.model.noise import decode
from lcdiff.model.score import condition_injections, level_embeddings, score_from_parts

#: Below this mean fraction of the gap closed (levels σ ≤ 1), stage B is reported as failed.
MIN_SCORE_CLOSED = 0.5
#: Above this median mean-RMSE ratio (decoded vs observed, relative to the sampling floor),
#: stage A is reported as failed.
MAX_NOISE_RMSE_RATIO = 3.0


def skip_only(params: dict) -> dict:
    """The same parameters with the network output (and Gaussian head) set to zero."""
    out = dict(params)
    out["out"] = jax.tree.map(jnp.zeros_like, params["out"])
    if "gauss" in params:
        out["gauss"] = {**jax.tree.map(jnp.zeros_like, params["gauss"])}
    return out


@jax.jit
def _level_losses(params, skip, z, targets, seen, sigmas, eps):
    """Per-level mean losses of the trained, skip-only and per-gene Gaussian scores.

    ``z`` [n, d] states of one condition, ``eps`` [n_levels, n, d] noise; the three scores see
    the same noisy states, so their differences have little Monte-Carlo noise.
    Returns three ``[n_levels]`` arrays.
    """
    tembs = level_embeddings(params, sigmas.shape[0])
    tembs_skip = level_embeddings(skip, sigmas.shape[0])
    inject = condition_injections(params, seen, targets)
    inject_skip = condition_injections(skip, seen, targets)
    mean, var = jnp.mean(z, axis=0), jnp.var(z, axis=0)

    def one(sigma, temb, temb_s, e):
        noisy = z + sigma * e
        trained = score_from_parts(params, noisy, sigma, temb, inject)
        nothing = score_from_parts(skip, noisy, sigma, temb_s, inject_skip)
        gaussian = -(noisy - mean) / (var + sigma**2)
        return tuple(0.5 * jnp.mean((sigma * s + e) ** 2) for s in (trained, nothing, gaussian))

    return jax.lax.map(lambda a: one(*a), (sigmas, tembs, tembs_skip, eps))


def score_check(
    params: dict,
    source,
    standardizer,
    targets: np.ndarray,
    seen: np.ndarray,
    sigmas: np.ndarray,
    key: jax.Array,
    n_states: int = 256,
    max_conditions: int = 64,
) -> dict:
    """Per-level denoising losses of the trained score against skip-only and a Gaussian fit.

    Parameters
    ----------
    params
        Trained score-network parameters.
    source
        The stage-B state source (:class:`~lcdiff.model.streaming.GeneratorStates` or
        :class:`~lcdiff.model.streaming.CellStates`).
    standardizer
        The fitted :class:`~lcdiff.model.standardize.Standardizer`.
    targets
        ``[m, d]`` target masks of the training conditions.
    seen
        ``[d]`` genes perturbed in training.
    sigmas
        ``[n_levels]`` descending noise levels.
    key
        Noise key (fresh draws, not those of training).
    n_states
        At least this many states per condition, more for few genes (so that states × genes ≥
        100,000; capped by what the condition has).
    max_conditions
        At most this many conditions (evenly spaced, control always first) are checked.

    Returns
    -------
    dict with ``sigma``, ``trained``, ``skip_only``, ``gaussian`` and ``closed`` (lists over
    levels; ``closed`` is ``None`` where the skip-only score is already as good as the Gaussian
    fit, so there is no gap to close), ``closed_small_sigma`` (mean of ``closed`` over the
    levels with σ ≤ 1), ``conditions`` (how many were checked) and ``ok``
    (``closed_small_sigma`` ≥ :data:`MIN_SCORE_CLOSED`).
    """
    m = len(source)
    chosen = np.unique(np.linspace(0, m - 1, min(m, max_conditions)).round().astype(int))
    sigmas_j = jnp.asarray(sigmas, jnp.float32)
    skip = skip_only(params)
    seen_j = jnp.asarray(seen, bool)
    totals = np.zeros((3, len(sigmas)), np.float64)
    for e in chosen:
        states = source.condition(int(e))
        n = max(n_states, -(-100_000 // states.shape[1]))
        z = standardizer.transform(states[-n:])
        eps = jax.random.normal(
            jax.random.fold_in(key, int(e)), (len(sigmas), *z.shape), jnp.float32
        )
        losses = _level_losses(
            params, skip, jnp.asarray(z), jnp.asarray(targets[e]), seen_j, sigmas_j, eps
        )
        totals += np.stack([np.asarray(x, np.float64) for x in losses])
    trained, nothing, gaussian = totals / len(chosen)
    gap = nothing - gaussian
    has_gap = gap > 1e-9
    closed = np.where(has_gap, (nothing - trained) / np.where(has_gap, gap, 1.0), np.nan)
    small = (np.asarray(sigmas) <= 1.0) & has_gap
    use = small if small.any() else has_gap
    closed_small = float(np.mean(closed[use])) if use.any() else 0.0
    return {
        "sigma": [float(s) for s in sigmas],
        "trained": trained.tolist(),
        "skip_only": nothing.tolist(),
        "gaussian": gaussian.tolist(),
        "closed": [None if np.isnan(c) else float(c) for c in closed],
        "closed_small_sigma": closed_small,
        "conditions": int(len(chosen)),
        "ok": bool(closed_small >= MIN_SCORE_CLOSED),
    }


#: Above this median mean error (in per-gene sd of the states), the sampler check fails.
MAX_SAMPLER_MEAN_ERROR = 1.0
#: Outside [1/x, x] for the median sd ratio, the sampler check fails.
MAX_SAMPLER_SD_RATIO = 1.5


def sampler_check(
    sample, source, standardizer, labels: list[str], n_cells: int = 200, floor=None
) -> dict:
    """Sampled training conditions against their own states, in the standardized space.

    Parameters
    ----------
    sample
        ``sample(labels, n_cells) -> [k, n_cells, d]`` standardized samples (the model's sampler
        with its fitted settings).
    source
        The stage-B state source.
    standardizer
        The fitted standardizer.
    labels
        Training labels in the order of ``source``.
    n_cells
        Chains per checked condition.
    floor
        Optional ``[d]`` state floor (unstandardized; the ``state_floor`` option): samples are
        clipped at it like the training states, since states below it decode alike.

    Returns
    -------
    dict with ``per_condition`` (label, ``mean_error`` = RMS over genes of the mean difference
    divided by the states' per-gene sd, ``sd_ratio`` = median over genes of sampled / states
    sd), ``median_mean_error``, ``median_sd_ratio`` and ``ok``.
    """
    m = len(labels)
    chosen = np.unique(np.linspace(0, m - 1, min(m, 6)).round().astype(int))
    sampled = sample([labels[e] for e in chosen], n_cells)
    if floor is not None:
        sampled = np.maximum(sampled, standardizer.transform(floor))
    rows = []
    for i, e in enumerate(chosen):
        z = standardizer.transform(source.condition(int(e)))
        sd = np.maximum(z.std(axis=0), 1e-6)
        error = (sampled[i].mean(axis=0) - z.mean(axis=0)) / sd
        rows.append(
            {
                "condition": labels[e],
                "mean_error": float(np.sqrt(np.mean(error**2))),
                "sd_ratio": float(np.median(sampled[i].std(axis=0) / sd)),
            }
        )
    mean_error = float(np.median([r["mean_error"] for r in rows]))
    sd_ratio = float(np.median([r["sd_ratio"] for r in rows]))
    ok = mean_error <= MAX_SAMPLER_MEAN_ERROR and (
        1 / MAX_SAMPLER_SD_RATIO <= sd_ratio <= MAX_SAMPLER_SD_RATIO
    )
    return {
        "per_condition": rows,
        "median_mean_error": mean_error,
        "median_sd_ratio": sd_ratio,
        "ok": bool(ok),
    }


def noise_check(
    noise: dict,
    source,
    cells: list[np.ndarray],
    labels: list[str],
    seed: int = 0,
    n_cells: int = 512,
    max_conditions: int = 64,
) -> dict:
    """Counts decoded from each condition's generator against its observed cells.

    Parameters
    ----------
    noise
        Fitted noise parameters (``unit_scale``, ``logit_pi``, optionally ``log_theta``).
    source
        :class:`~lcdiff.model.streaming.GeneratorStates` of the fit (its floor applies).
    cells
        Observed raw counts per training condition, ``[n_e, d]`` each.
    labels
        Condition labels (same order).
    seed
        Seed of the decoding and of the half split.
    n_cells
        Decoded cells per condition.
    max_conditions
        At most this many conditions (evenly spaced, control first) are checked.

    Returns
    -------
    dict with ``per_condition`` (label, ``mean_rmse``, ``floor_rmse``, ``mean_rmse_ratio``,
    ``var_ratio``, ``zeros_decoded``, ``zeros_observed``), ``median_mean_rmse_ratio``,
    ``median_var_ratio`` and ``ok`` (median ratio ≤ :data:`MAX_NOISE_RMSE_RATIO`).
    """
    rng = np.random.default_rng(seed)
    m = len(cells)
    chosen = np.unique(np.linspace(0, m - 1, min(m, max_conditions)).round().astype(int))
    rows = []
    for e in chosen:
        observed = log1p_cp10k(cells[e])
        states = source.condition(int(e))[:n_cells]
        decoded_counts = decode(
            states, noise["unit_scale"], noise["logit_pi"], rng, log_theta=noise.get("log_theta")
        )
        decoded = log1p_cp10k(decoded_counts)
        order = rng.permutation(len(observed))
        half = len(observed) // 2
        floor = _rmse(observed[order[:half]].mean(0), observed[order[half:]].mean(0))
        # the halves have n/2 cells each; the decoded-vs-observed error is for n_decoded vs n
        # cells, so the floor is rescaled to that comparison (variance of a mean ∝ 1/n)
        floor *= np.sqrt((1 / len(decoded) + 1 / len(observed)) / (2 / max(half, 1)))
        error = _rmse(decoded.mean(0), observed.mean(0))
        var_obs, var_dec = observed.var(0), decoded.var(0)
        varied = var_obs > 1e-6
        rows.append(
            {
                "condition": labels[e],
                "mean_rmse": float(error),
                "floor_rmse": float(floor),
                "mean_rmse_ratio": float(error / max(floor, 1e-12)),
                "var_ratio": float(np.median(var_dec[varied] / var_obs[varied]))
                if varied.any()
                else 1.0,
                "zeros_decoded": float(np.mean(decoded_counts == 0)),
                "zeros_observed": float(np.mean(cells[e] == 0)),
            }
        )
    median_ratio = float(np.median([r["mean_rmse_ratio"] for r in rows]))
    return {
        "per_condition": rows,
        "median_mean_rmse_ratio": median_ratio,
        "median_var_ratio": float(np.median([r["var_ratio"] for r in rows])),
        "ok": bool(median_ratio <= MAX_NOISE_RMSE_RATIO),
    }


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def failures(diagnostics: dict) -> list[tuple[str, str, str]]:
    """The failed checks as (what happened, the fix in Python terms, the fix in CLI terms)."""
    out = []
    score = diagnostics.get("score")
    if score and not score["ok"]:
        out.append(
            (
                "LCD stage B has not learned the score: training closed only "
                f"{score['closed_small_sigma']:.2f} of the gap between a skip-only network and a "
                f"per-gene Gaussian fit (below {MIN_SCORE_CLOSED}), so predictions will not "
                "reproduce even the training conditions.",
                "Use the default configuration (preset 'auto'), more score_steps, or a wider "
                "score network.",
                "Use --preset auto, --set score_steps=N with a larger N, or --set score_hidden=N.",
            )
        )
    sampler = diagnostics.get("sampler")
    if sampler and not sampler["ok"]:
        out.append(
            (
                "LCD does not reproduce its own training conditions: sampled means are "
                f"{sampler['median_mean_error']:.2f} sd from the training states and spreads "
                f"{sampler['median_sd_ratio']:.2f}x theirs (medians over checked conditions), "
                "so predictions of new conditions will be off too.",
                "Try the default configuration (preset 'auto'), more score_steps or more "
                "anneal_steps.",
                "Try --preset auto, --set score_steps=N with a larger N, or --set anneal_steps=N.",
            )
        )
    noise = diagnostics.get("noise")
    if noise and not noise["ok"]:
        out.append(
            (
                "LCD stage A (noise model) does not reproduce the training conditions: decoded "
                f"means are {noise['median_mean_rmse_ratio']:.1f}x the sampling floor away "
                "from the observed ones (median over conditions).",
                "Try more noise_steps or noise_model='zinb'.",
                "Try --set noise_steps=N with a larger N or --set noise_model=zinb.",
            )
        )
    return out


def summary_lines(diagnostics: dict) -> list[str]:
    """Readable lines for the end of ``fit``, the CLI and the report."""
    lines = []
    noise = diagnostics.get("noise")
    if noise is not None:
        lines.append(
            "Stage A (noise model): decoded training conditions vs their observed cells: "
            f"mean error {noise['median_mean_rmse_ratio']:.2f}x the sampling floor, variance "
            f"ratio {noise['median_var_ratio']:.2f} (medians over conditions; ~1 is ideal)"
            + ("" if noise["ok"] else "  <- FAILED")
        )
    score = diagnostics.get("score")
    if score is not None:
        lines.append(
            "Stage B (score model): fraction of the gap between a skip-only network and a "
            f"per-gene Gaussian fit closed by training: {score['closed_small_sigma']:.2f} "
            "(mean over noise levels sigma <= 1; >= 1 is good, "
            f"< {MIN_SCORE_CLOSED} fails)" + ("" if score["ok"] else "  <- FAILED")
        )
    sampler = diagnostics.get("sampler")
    if sampler is not None:
        lines.append(
            "Sampler: training conditions sampled from the score vs their own states: mean error "
            f"{sampler['median_mean_error']:.2f} sd, sd ratio {sampler['median_sd_ratio']:.2f} "
            "(medians; 0 and 1 are ideal)" + ("" if sampler["ok"] else "  <- FAILED")
        )
    return lines
