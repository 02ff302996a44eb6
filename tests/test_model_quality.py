"""What makes LCD work beyond the toy: the Gaussian score head, the state floor, the post-training
checks of both stages and the screen-sized default configuration."""

from __future__ import annotations

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lcdiff as lc
from lcdiff.data.screen import conditions
from lcdiff.errors import ConfigError
from lcdiff.model.config import AUTO_PRESET, PRESETS, auto_overrides, make_config
from lcdiff.model.diagnostics import MIN_SCORE_CLOSED, score_check, skip_only
from lcdiff.model.noise import decode, state_floor
from lcdiff.model.score import (
    condition_injections,
    init_score_params,
    level_embeddings,
    noise_levels,
    score_from_parts,
)
from lcdiff.model.streaming import CellStates


def _softplus(s):
    return np.logaddexp(0.0, s)


def test_state_floor_changes_every_rate_by_less_than_its_threshold():
    rng = np.random.default_rng(0)
    unit = rng.uniform(1.0, 50.0, size=20)
    floor = state_floor(unit, 1e-3)
    # at the floor the rate is the threshold
    np.testing.assert_allclose(unit * _softplus(floor.astype(np.float64)), 1e-3, rtol=1e-4)
    s = np.concatenate([np.linspace(-400, 5, 2000)[:, None] + np.zeros((1, 20))])
    clipped = np.maximum(s, floor)
    change = unit * (_softplus(clipped) - _softplus(s))
    assert change.min() >= 0 and change.max() <= 1e-3 * (1 + 1e-4)  # float32 floor
    # states above the floor are untouched
    above = s > floor
    np.testing.assert_array_equal(clipped[above], s[above])


def test_state_floor_changes_decoded_counts_by_less_than_1e3_per_entry():
    """Expected decoded count = (1 − π)·λ; the floor moves it by < 10⁻³ per entry."""
    rng = np.random.default_rng(1)
    d = 30
    unit = rng.uniform(1.0, 20.0, size=d).astype(np.float32)
    logit_pi = rng.normal(size=d).astype(np.float32)
    states = rng.normal(-8.0, 6.0, size=(4000, d)).astype(np.float32)
    floored = np.maximum(states, state_floor(unit, 1e-3))
    pi = 1 / (1 + np.exp(-logit_pi.astype(np.float64)))
    expected = (1 - pi) * unit * _softplus(states.astype(np.float64))
    expected_floored = (1 - pi) * unit * _softplus(floored.astype(np.float64))
    assert np.abs(expected_floored - expected).max() < 1e-3
    # and the decoded counts of the two agree in distribution (same total within noise)
    a = decode(states, unit, logit_pi, np.random.default_rng(2))
    b = decode(floored, unit, logit_pi, np.random.default_rng(2))
    assert abs(a.sum() - b.sum()) <= 0.05 * a.sum() + 10


def test_rate_floor_removes_the_likelihood_slope_below_it():
    """With ``min_rate`` a generator gains nothing by pushing a zero-count gene's state lower."""
    from lcdiff.model.noise import zip_log_likelihood_direct, zip_log_likelihood_matrix

    unit, logit_pi = jnp.array([2.0, 1.0]), jnp.array([-1.0, 0.5])
    counts = jnp.array([[0.0, 3.0]])

    def loglik(s0, min_rate):
        states = jnp.array([[s0, 1.0]])
        return zip_log_likelihood_matrix(counts, states, unit, logit_pi, None, min_rate)[0, 0]

    deep = -30.0  # far below the floor (log(1e-3 / 2) ≈ −7.6)
    assert jax.grad(loglik)(deep, None) < 0  # tiny, but always pointing towards −∞
    assert jax.grad(loglik)(deep, 1e-3) == 0.0
    # above the floor both agree, and the matrix form matches the direct one
    for s0 in (-2.0, 0.5, 3.0):
        assert loglik(s0, 1e-3) == pytest.approx(float(loglik(s0, None)), rel=1e-6)
        direct = zip_log_likelihood_direct(
            counts, jnp.array([[s0, 1.0]]), unit, logit_pi, None, 1e-3
        )
        assert float(direct[0, 0]) == pytest.approx(float(loglik(s0, 1e-3)), rel=1e-5)


def test_gaussian_head_starts_as_the_smoothed_standard_normal():
    d, hidden = 6, 3
    params = skip_only(init_score_params(jax.random.PRNGKey(0), d, hidden, 4, 2, "gaussian"))
    params["gauss"]["table"] = jnp.ones((d, 4))  # any table: V = 0 makes it irrelevant
    sigmas = jnp.asarray(noise_levels(0.01, 10.0, 5))
    z = jax.random.normal(jax.random.PRNGKey(1), (7, d))
    targets = jnp.array([1.0, 0, 0, 0, 0, 0])
    inject = condition_injections(params, jnp.ones(d, bool), targets)
    for level in range(5):
        temb = level_embeddings(params, 5)[level]
        got = score_from_parts(params, z, sigmas[level], temb, inject)
        np.testing.assert_allclose(got, -z / (1 + sigmas[level] ** 2), rtol=1e-5, atol=1e-6)


def test_gaussian_head_is_full_rank_in_gene_space():
    """With 2 hidden units and 6 genes, the head alone gives the exact per-gene Gaussian score
    −(z − m(S))/(v(S) + σ²) for any means and variances, which the paper's head cannot."""
    d, hidden, embed = 6, 2, 6
    params = skip_only(init_score_params(jax.random.PRNGKey(0), d, hidden, embed, 2, "gaussian"))
    rng = np.random.default_rng(3)
    mean_of_gene = rng.normal(size=(d, d)).astype(np.float32)  # row j: shift when j is perturbed
    log_var = rng.normal(scale=0.5, size=(d, d)).astype(np.float32)
    params["gauss"] = {
        "table": jnp.eye(d, embed),
        "mean": jnp.asarray(mean_of_gene),
        "log_var": jnp.asarray(log_var),
        "log_var0": jnp.zeros(d),
    }
    targets = jnp.array([0.0, 1, 0, 1, 0, 0])  # a double: shifts add, log-variances add
    m = mean_of_gene[1] + mean_of_gene[3]
    v = np.exp(log_var[1] + log_var[3])
    sigma = 0.3
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (5, d)))
    inject = condition_injections(params, jnp.ones(d, bool), targets)
    got = score_from_parts(params, jnp.asarray(z), sigma, level_embeddings(params, 3)[1], inject)
    np.testing.assert_allclose(got, -(z - m) / (v + sigma**2), rtol=1e-4, atol=1e-5)


def _gaussian_screen(d=12, n=400, seed=0) -> ad.AnnData:
    """Three conditions of independent Gaussians with their own per-gene means and spreads."""
    rng = np.random.default_rng(seed)
    spec = {
        "ctrl": (np.zeros(d), np.full(d, 0.5)),
        "G000": (np.r_[2.0, np.zeros(d - 1)] + rng.normal(0, 0.5, d), np.full(d, 0.3)),
        "G001": (np.r_[0.0, -2.0, np.zeros(d - 2)], rng.uniform(0.2, 1.0, d)),
    }
    labels = [lab for lab in spec for _ in range(n)]
    x = np.concatenate([rng.normal(mu, sd, size=(n, d)) for mu, sd in spec.values()])
    adata = ad.AnnData(
        X=x.astype(np.float32),
        obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=[f"G{i:03d}" for i in range(d)]),
    )
    adata.var["perturbed"] = [g in spec for g in adata.var_names]
    adata.var["hvg_rank"] = np.arange(d)
    adata.uns["lcdiff"] = {"control": "ctrl", "markers": {}}
    return adata, spec


@pytest.fixture(scope="module")
def narrow_models():
    """The same narrow network (4 hidden units < 12 genes) with each head, trained by DSM."""
    screen, spec = _gaussian_screen()
    settings = dict(
        preset="tiny",
        noise_model=None,
        score_hidden=4,
        embed_dim=8,
        n_levels=10,
        sigma_min=0.05,
        sigma_max=5.0,
        score_steps=1500,
        score_batch_size=128,
        score_lr=1e-2,
        anneal_steps=30,
        anneal_dt=2e-4,
    )
    with pytest.warns(UserWarning):  # the paper head warns that it is rank-limited
        paper = lc.LCD(screen, score_head="paper", **settings).fit(progress=False)
    gauss = lc.LCD(screen, score_head="gaussian", **settings).fit(progress=False)
    return screen, spec, paper, gauss


def test_gaussian_head_learns_per_gene_spread_where_the_narrow_paper_head_cannot(narrow_models):
    screen, spec, paper, gauss = narrow_models
    errors = {}
    for name, model in (("paper", paper), ("gaussian", gauss)):
        states = model.sample_states(["G001"], n_cells=600, seed=0)[0]
        true_mu, true_sd = spec["G001"]
        errors[name] = (
            np.abs(states.mean(0) - true_mu).mean(),
            np.abs(np.log(states.std(0) / true_sd)).mean(),
        )
    mean_err, log_sd_err = errors["gaussian"]
    assert mean_err < 0.15 and log_sd_err < 0.2, errors
    # the 4-wide paper head gives most genes the shared skip-term spread (≈ √2 in z)
    assert errors["paper"][1] > 2 * log_sd_err, errors


def test_score_check_passes_a_trained_network_and_flags_a_crippled_one(narrow_models):
    screen, spec, paper, gauss = narrow_models
    diag = gauss.diagnostics["score"]
    assert diag["ok"] and diag["closed_small_sigma"] >= MIN_SCORE_CLOSED
    assert len(diag["closed"]) == gauss.config.n_levels
    source = CellStates([np.asarray(screen.X[screen.obs["perturbation"] == lab]) for lab in spec])
    args = (source, gauss._standardizer, gauss._targets, gauss._seen, gauss.sigmas)
    crippled = score_check(skip_only(gauss._score_params), *args, jax.random.PRNGKey(5))
    assert not crippled["ok"] and abs(crippled["closed_small_sigma"]) < 0.05
    # the narrow paper head closes less of the gap than the Gaussian head
    assert paper.diagnostics["score"]["closed_small_sigma"] < diag["closed_small_sigma"]


def test_fit_warns_when_stage_b_has_not_learned():
    screen, _ = _gaussian_screen(d=6, n=200)
    with pytest.warns(UserWarning, match="stage B has not learned"):
        lc.LCD(screen, preset="tiny", noise_model=None, score_steps=2, score_head="gaussian").fit(
            progress=False
        )


def test_auto_preset_is_a_deterministic_function_of_the_screen_shape():
    a = auto_overrides(1000, 36, 4000)
    assert a == auto_overrides(1000, 36, 4000)
    assert a["noise_steps"] == 6000 and a["score_steps"] == 16000
    assert (
        a["noise_lr"] == pytest.approx(9.5e-4) and auto_overrides(100, 36, 4000)["noise_lr"] == 3e-3
    )
    big = auto_overrides(1000, 240, 100_000)
    assert big["noise_steps"] == 29_000 and big["score_steps"] == 50_000 - 50_000 % 1000
    assert auto_overrides(100, 10, 100)["noise_batch_size"] == 10
    config = make_config(AUTO_PRESET, shape=(1000, 36, 4000))
    assert config.preset == "auto" and config.noise_model == "zinb"
    assert config.score_head == "gaussian" and config.state_floor == 1e-3
    # paper presets stay faithful: none of the lcdiff options
    for name in PRESETS:
        if name.startswith("paper"):
            c = make_config(name)
            assert c.score_head == "paper" and c.state_floor is None
            assert c.noise_model in ("zip", None)
    with pytest.raises(ConfigError):
        auto_overrides(0, 3, 10)
    with pytest.raises(ConfigError, match="score_head"):
        make_config("fast", score_head="wide")
    with pytest.raises(ConfigError, match="state_floor"):
        make_config("fast", state_floor=2.0)


def test_lcd_defaults_to_the_auto_preset_and_records_checks(tmp_path, capsys):
    screen = lc.pp.prepare(lc.datasets.toy_screen(), n_genes=None)
    labels = [lab for lab in conditions(screen) if "+" not in lab][:3]
    train = screen[screen.obs["perturbation"].isin(labels)].copy()
    model = lc.LCD(train, noise_steps=20, score_steps=20, n_states=64, mc_samples=32)
    assert model.config.preset == "auto" and model.config.score_head == "gaussian"
    model.fit(progress=True)
    printed = capsys.readouterr().out
    assert "LCD preset 'auto' for 100 genes, 3 conditions" in printed
    assert "Stage A (noise model)" in printed and "Stage B (score model)" in printed
    assert set(model.diagnostics) == {"noise", "score", "sampler"}
    assert len(model.diagnostics["noise"]["per_condition"]) == 3
    model.save(tmp_path / "m")
    loaded = lc.LCD.load(tmp_path / "m")
    assert loaded.diagnostics == model.diagnostics
    assert loaded.config == model.config
    pred = loaded.predict(["+".join(labels[1:])], n_cells=8)
    assert np.isfinite(pred.X).all()


def test_sampler_check_reproduces_training_conditions_and_flags_a_crippled_sampler(narrow_models):
    screen, spec, paper, gauss = narrow_models
    assert gauss.diagnostics["sampler"]["ok"], gauss.diagnostics["sampler"]
    from lcdiff.model.diagnostics import sampler_check

    source = CellStates([np.asarray(screen.X[screen.obs["perturbation"] == lab]) for lab in spec])

    def frozen(labels, n_cells):  # chains that never move from N(0, I)
        rng = np.random.default_rng(0)
        return rng.normal(size=(len(labels), n_cells, screen.n_vars)).astype(np.float32)

    bad = sampler_check(frozen, source, gauss._standardizer, list(spec))
    assert not bad["ok"]
