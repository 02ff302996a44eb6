"""Simulators: the paper's linear SDE benchmark and the nonlinear count screen."""

from __future__ import annotations

import inspect
from collections import Counter

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from anndata import AnnData

import lcdiff.data.simulate as simulate_module
from lcdiff.data.labels import canonical_label, n_targets, parse_label
from lcdiff.data.normalize import log1p_cp10k
from lcdiff.data.screen import condition_cells, conditions, control_label
from lcdiff.data.simulate import GeneNetwork, additivity_report, linear_sde, screen
from lcdiff.errors import ConfigError

# --- linear_sde ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_linear():
    # Many cells on few genes, so sampling tolerances are tight.
    return linear_sde(8, 8, graph="er", cells_per_condition=4000, seed=3)


def test_linear_layout_and_labels(small_linear):
    ad = small_linear
    assert ad.shape == (9 * 4000, 8)
    assert ad.X.dtype == np.float32
    assert list(ad.var_names) == [f"g{i:04d}" for i in range(8)]
    assert control_label(ad) == "ctrl"
    assert ad.uns["lcdiff"]["kind"] == "linear_sde"
    assert conditions(ad) == ["ctrl"] + [f"g{i:04d}" for i in range(8)]
    assert ad.layers.keys() == set()


def test_linear_exact_means_follow_drift_bias_and_shift(small_linear):
    sim = small_linear.uns["simulation"]
    drift, bias, u = sim["drift"], sim["bias"], sim["shifts"]["u"]
    genes = list(small_linear.var_names)
    for label, mean in sim["means"].items():
        shift = np.zeros(8)
        if label != "ctrl":
            shift[genes.index(label)] = u[genes.index(label)]
        np.testing.assert_allclose(mean, -np.linalg.solve(drift, bias + shift), rtol=1e-10)
    # Shift magnitudes are ±U(5, 15) and bias U(-3, 3).
    assert np.all((np.abs(u) >= 5) & (np.abs(u) <= 15))
    assert np.all(np.abs(bias) <= 3)


def test_linear_sample_means_match_exact_means(small_linear):
    sim = small_linear.uns["simulation"]
    sd = np.sqrt(np.diag(sim["stationary_covariance"]))
    for label in conditions(small_linear):
        cells = condition_cells(small_linear, label)
        z = (cells.mean(axis=0) - sim["means"][label]) / (sd / np.sqrt(cells.shape[0]))
        assert np.all(np.abs(z) < 5), (label, z)
    # A single shift moves its own gene by a lot more than the sampling noise.
    target = conditions(small_linear)[1]
    gene = list(small_linear.var_names).index(target)
    assert abs(sim["means"][target][gene] - sim["means"]["ctrl"][gene]) > 1.0


def test_linear_covariance_solves_lyapunov_and_matches_samples(small_linear):
    sim = small_linear.uns["simulation"]
    drift, cov = sim["drift"], sim["stationary_covariance"]
    np.testing.assert_allclose(drift @ cov + cov @ drift.T, -np.eye(8), atol=1e-10)
    # Pool all conditions after removing each exact mean: they share the covariance.
    labels = small_linear.obs["perturbation"].astype(str).to_numpy()
    centred = small_linear.X.astype(np.float64) - np.stack([sim["means"][lab] for lab in labels])
    n = centred.shape[0]
    sample_cov = centred.T @ centred / n
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(sample_cov - cov) < 5 * se)


def test_linear_drift_is_stable_and_causal_matrix_is_its_transpose(small_linear):
    ad = small_linear
    drift = ad.uns["simulation"]["drift"]
    causal = ad.varp["causal_matrix"]
    np.testing.assert_allclose(causal, drift.T)
    assert np.linalg.eigvals(drift).real.max() == pytest.approx(-0.5, abs=1e-8)
    # All self-loops are equal; off-diagonal weights sit exactly on the graph's edges.
    assert np.ptp(np.diag(causal)) < 1e-12
    graph = ad.uns["simulation"]["graph"].astype(bool)
    off = ~np.eye(8, dtype=bool)
    assert np.array_equal(causal[off] != 0, graph[off])
    magnitudes = np.abs(causal[off & graph])
    assert np.all((magnitudes >= 1) & (magnitudes <= 3))


@pytest.mark.parametrize("family", ["er", "sfo"])
def test_linear_largest_real_eigenvalue_is_minus_half(family):
    ad = linear_sde(60, 10, graph=family, cells_per_condition=2, seed=1)
    drift = ad.uns["simulation"]["drift"]
    assert np.linalg.eigvals(drift).real.max() == pytest.approx(-0.5, abs=1e-8)


def test_er_degrees_about_ten_each_way():
    graph = linear_sde(300, 0, graph="er", cells_per_condition=1, seed=0).uns["simulation"]["graph"]
    out_degree, in_degree = graph.sum(axis=1), graph.sum(axis=0)
    assert abs(out_degree.mean() - 10) < 0.6
    assert np.diag(graph).sum() == 0
    # Binomial degrees are light-tailed: nothing like a hub.
    assert out_degree.max() < 30 and in_degree.max() < 30


def test_sfo_out_degree_is_heavy_tailed_and_in_degree_about_m():
    d = 300
    graph = linear_sde(d, 0, graph="sfo", cells_per_condition=1, seed=0).uns["simulation"]["graph"]
    out_degree, in_degree = graph.sum(axis=1), graph.sum(axis=0)
    assert np.diag(graph).sum() == 0
    # Barabási–Albert with m = 10 has about m (d - m) edges; flipping keeps their number.
    assert abs(graph.sum() - 10 * (d - 10) - 45) <= 5
    assert out_degree.max() > 5 * out_degree.mean()
    # Most genes receive about m edges (10 % of edges were reversed).
    assert np.mean((in_degree >= 6) & (in_degree <= 14)) > 0.8
    assert in_degree.max() < 30
    # Hubs: the top 5 % of genes send a large share of the edges.
    top = np.sort(out_degree)[::-1][: d // 20]
    assert top.sum() > 0.25 * graph.sum()


def test_linear_same_seed_same_data_and_other_seed_differs():
    a = linear_sde(12, 5, graph="sfo", cells_per_condition=20, seed=7)
    b = linear_sde(12, 5, graph="sfo", cells_per_condition=20, seed=7)
    c = linear_sde(12, 5, graph="sfo", cells_per_condition=20, seed=8)
    assert np.array_equal(a.X, b.X)
    assert np.array_equal(a.varp["causal_matrix"], b.varp["causal_matrix"])
    assert list(a.obs["perturbation"]) == list(b.obs["perturbation"])
    assert not np.array_equal(a.varp["causal_matrix"], c.varp["causal_matrix"])


def test_linear_perturbed_genes_are_a_random_subset():
    ad = linear_sde(40, 7, cells_per_condition=3, seed=2)
    targets = list(ad.uns["simulation"]["shifts"]["targets"])
    assert len(targets) == 7 == len(set(targets))
    assert targets != [f"g{i:04d}" for i in range(7)]
    assert set(conditions(ad)) == {"ctrl", *targets}


def test_linear_h5ad_round_trip(small_linear, tmp_path):
    path = tmp_path / "linear.h5ad"
    small_linear.write_h5ad(path)
    back = anndata.read_h5ad(path)
    np.testing.assert_array_equal(back.X, small_linear.X)
    np.testing.assert_array_equal(back.varp["causal_matrix"], small_linear.varp["causal_matrix"])
    sim = back.uns["simulation"]
    np.testing.assert_array_equal(
        sim["means"]["ctrl"], small_linear.uns["simulation"]["means"]["ctrl"]
    )
    assert sim["graph_family"] == "er"
    assert control_label(back) == "ctrl"
    # No perturbations at all still serializes (empty target list).
    linear_sde(5, 0, cells_per_condition=2).write_h5ad(tmp_path / "empty.h5ad")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d": 10, "n_perturbed": 3, "graph": "dag"}, "graph family"),
        ({"d": 10, "n_perturbed": 11}, "cannot exceed"),
        ({"d": 1, "n_perturbed": 0}, "d must be"),
        ({"d": 10, "n_perturbed": 3, "seed": -1}, "seed must be"),
        ({"d": 10, "n_perturbed": 3, "cells_per_condition": 0}, "cells_per_condition"),
    ],
)
def test_linear_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        linear_sde(**kwargs)


def test_lyapunov_reference_agrees_with_scipy_sign_convention():
    # Guards the sign convention we rely on: scipy solves A X + X Aᴴ = Q.
    a = np.array([[-1.0, 0.3], [0.0, -2.0]])
    x = scipy.linalg.solve_continuous_lyapunov(a, -np.eye(2))
    assert np.all(np.linalg.eigvalsh(x) > 0)


# --- screen (nonlinear count simulator) ---------------------------------------------------


@pytest.fixture(scope="module")
def small_screen():
    return screen(n_genes=40, n_perturbed=10, n_doubles=12, cells_per_condition=150, seed=1)


def test_screen_layout_counts_and_labels(small_screen):
    ad = small_screen
    n_conditions = 1 + 10 + 12
    assert ad.n_obs == 300 + (n_conditions - 1) * 150  # control gets 2 × cells_per_condition
    assert list(ad.var_names[:3]) == ["G001", "G002", "G003"]
    x = ad.X
    assert x.dtype == np.float32 and np.all(x >= 0) and np.all(x == np.round(x))
    labels = ad.obs["perturbation"].astype(str)
    assert all(canonical_label(lab) == lab for lab in labels.unique())
    sizes = Counter(n_targets(lab) for lab in labels.unique())
    assert sizes == {0: 1, 1: 10, 2: 12}
    # Every gene of every double also has a single.
    singles = {lab for lab in labels.unique() if n_targets(lab) == 1}
    for lab in labels.unique():
        assert set(parse_label(lab)) <= singles
    # A raw screen: no prepared-screen record, ground truth attached.
    assert "lcdiff" not in ad.uns
    assert ad.varp["causal_matrix"].shape == (40, 40)
    assert ad.obsm["latent"].shape == (ad.n_obs, 40)


def test_screen_library_sizes_and_detection_look_like_a_screen(small_screen):
    counts = small_screen.X
    library = counts.sum(axis=1)
    assert 300 < np.percentile(library, 1) and np.percentile(library, 99) < 20_000
    assert np.median(library) == pytest.approx(3000, rel=0.2)
    assert (counts > 0).sum(axis=1).min() >= 20
    assert (counts > 0).mean(axis=0).min() > 0.3  # every gene detected in many cells
    # Library sizes vary from cell to cell (log-normal, log-sd 0.35).
    assert 0.25 < np.std(np.log(library)) < 0.5


def test_screen_jacobian_is_the_drift_derivative_at_the_control_fixed_point(small_screen):
    sim = small_screen.uns["simulation"]
    network = GeneNetwork.from_uns(sim)
    x0 = sim["fixed_points"]["ctrl"]
    assert np.abs(network.drift(x0[None, :], 0.0)).max() < 1e-6
    eps = 1e-6
    numeric = np.empty((40, 40))
    for i in range(40):
        step = np.zeros(40)
        step[i] = eps
        plus = network.drift((x0 + step)[None, :], 0.0)[0]
        minus = network.drift((x0 - step)[None, :], 0.0)[0]
        numeric[:, i] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(sim["jacobian"], numeric, atol=1e-6)
    np.testing.assert_allclose(small_screen.varp["causal_matrix"], sim["jacobian"].T)
    # The causal matrix's off-diagonal support is the network's edges.
    off = ~np.eye(40, dtype=bool)
    graph = sim["graph"].astype(bool)
    assert np.array_equal(small_screen.varp["causal_matrix"][off] != 0, graph[off])


def test_screen_drift_is_a_contraction_everywhere(small_screen):
    # Σ_i |∂f_j/∂x_i| off the self-decay stays below γ_j at arbitrary states, which is what makes
    # the fixed point and the stationary law unique.
    sim = small_screen.uns["simulation"]
    network = GeneNetwork.from_uns(sim)
    rng = np.random.default_rng(0)
    for _ in range(30):
        x = sim["fixed_points"]["ctrl"] + rng.normal(0, 2.0, size=40)
        jac = network.jacobian(x)
        sensitivity = np.abs(jac + np.diag(network.decay)).sum(axis=1)
        assert np.all(sensitivity < network.decay)


def test_screen_perturbations_act_on_their_targets(small_screen):
    ad = small_screen
    sim = ad.uns["simulation"]
    values = log1p_cp10k(ad.X)
    labels = ad.obs["perturbation"].astype(str).to_numpy()
    control_mean = values[labels == "ctrl"].mean(axis=0)
    genes = list(ad.var_names)
    for gene, mode in zip(sim["shifts"]["targets"], sim["shifts"]["mode"], strict=True):
        j = genes.index(gene)
        change = values[labels == gene, j].mean() - control_mean[j]
        if mode == "knockdown":
            assert change < -1.0, (gene, change)
        else:
            assert change > 0.5, (gene, change)


def test_screen_burn_in_reaches_the_stationary_law(monkeypatch):
    # Chains run 8 times longer give the same latent means and spreads: 50 steps suffice.
    kwargs = dict(n_genes=30, n_perturbed=6, n_doubles=4, cells_per_condition=400, seed=2)
    short = screen(**kwargs)
    monkeypatch.setattr(simulate_module, "EM_BURN_IN_STEPS", 400)
    long = screen(**kwargs)
    for label in short.uns["simulation"]["fixed_points"]:
        a = short.obsm["latent"][short.obs["perturbation"] == label]
        b = long.obsm["latent"][long.obs["perturbation"] == label]
        se = np.sqrt((a.var(axis=0) + b.var(axis=0)) / a.shape[0])
        assert np.all(np.abs(a.mean(axis=0) - b.mean(axis=0)) < 5 * se), label
        np.testing.assert_allclose(a.std(axis=0), b.std(axis=0), rtol=0.2)


def test_additivity_report_is_calibrated():
    # Exactly additive Gaussian means: nothing called. One real interaction: called.
    rng = np.random.default_rng(0)
    d, n = 30, 300
    base, eff_a, eff_b = rng.normal(0, 1, d), rng.normal(0, 1, d), rng.normal(0, 1, d)
    means = {"ctrl": base, "A": base + eff_a, "B": base + eff_b, "A+B": base + eff_a + eff_b}
    means["C"], means["D"] = base + eff_a, base - eff_b
    interaction = np.zeros(d)
    interaction[3] = 0.6
    means["C+D"] = base + eff_a - eff_b + interaction
    labels = np.repeat(list(means), n)
    x = np.concatenate([m + rng.normal(0, 0.5, (n, d)) for m in means.values()])
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(labels.size)])
    ad = AnnData(X=x.astype(np.float32), obs=obs)
    report = additivity_report(ad, log_normalize=False)
    assert list(report.index) == ["A+B", "C+D"]
    assert not report.loc["A+B", "nonadditive"]
    assert report.loc["C+D", "nonadditive"]
    assert report.loc["C+D", "max_abs_error"] == pytest.approx(0.6, abs=0.2)


def test_default_screen_has_non_additive_doubles_and_reports_them():
    # toy_screen() is screen() with its default settings; the docstring reports 13 of 40.
    from lcdiff.data.toy import TOY_SETTINGS, toy_screen

    defaults = {name: p.default for name, p in inspect.signature(screen).parameters.items()}
    defaults["control_cells"] = 2 * defaults["cells_per_condition"]
    assert all(defaults[k] == v for k, v in TOY_SETTINGS.items())
    ad = toy_screen()
    stored = ad.uns["simulation"]["additivity"]
    report = additivity_report(ad)
    assert len(report) == 40 == stored["n_doubles"]
    assert stored["fraction"] == pytest.approx(report["nonadditive"].mean())
    assert stored["fraction"] > 0
    # 13 here; float32 rounding differs between BLAS builds, so allow a little slack.
    assert 10 <= stored["n_nonadditive"] <= 16
    assert set(stored["nonadditive_labels"]) == set(report.index[report["nonadditive"]])
    # The latent states (no counting noise) are non-additive for at least as many doubles.
    assert stored["latent_fraction"] >= stored["fraction"]


def test_screen_same_seed_same_data_and_observation_models():
    kwargs = dict(n_genes=20, n_perturbed=5, n_doubles=3, cells_per_condition=30)
    a, b = screen(**kwargs, seed=4), screen(**kwargs, seed=4)
    assert np.array_equal(a.X, b.X)
    assert list(a.obs["perturbation"]) == list(b.obs["perturbation"])
    assert not np.array_equal(a.X, screen(**kwargs, seed=5).X)
    zip_screen = screen(**kwargs, seed=4, observation="zip")
    assert "zero_inflation" in zip_screen.uns["simulation"]
    assert np.all(zip_screen.X == np.round(zip_screen.X))
    # Same latent states, different observation noise.
    np.testing.assert_array_equal(zip_screen.obsm["latent"], a.obsm["latent"])


def test_screen_h5ad_round_trip(tmp_path):
    ad = screen(n_genes=20, n_perturbed=5, n_doubles=3, cells_per_condition=30)
    ad.write_h5ad(tmp_path / "screen.h5ad")
    back = anndata.read_h5ad(tmp_path / "screen.h5ad")
    np.testing.assert_array_equal(back.X, ad.X)
    network = GeneNetwork.from_uns(back.uns["simulation"])
    np.testing.assert_allclose(
        network.jacobian(back.uns["simulation"]["fixed_points"]["ctrl"]),
        ad.uns["simulation"]["jacobian"],
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_genes": 20, "n_perturbed": 10}, "regulators"),
        ({"n_genes": 40, "n_perturbed": 4, "n_doubles": 7}, "pairs"),
        ({"observation": "poisson"}, "observation model"),
        ({"knockdown_fraction": 1.5}, "knockdown_fraction"),
        ({"mean_library_size": 0}, "mean_library_size"),
        ({"mean_library_size": "many"}, "mean_library_size"),
        ({"seed": -3}, "seed"),
    ],
)
def test_screen_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        screen(**kwargs)
