"""The embedded default screen: size, realism, caching, and a clean pass through prepare."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lcdiff as lc
from lcdiff.data.labels import n_targets
from lcdiff.data.toy import _build, toy_screen


@pytest.fixture(scope="module")
def toy():
    return toy_screen()


def test_toy_screen_sizes(toy):
    labels = toy.obs["perturbation"].astype(str)
    counts = labels.value_counts()
    sizes = {lab: n_targets(lab) for lab in counts.index}
    assert toy.n_vars == 100
    assert sum(1 for s in sizes.values() if s == 1) >= 20
    assert sum(1 for s in sizes.values() if s == 2) >= 40
    perturbed = {g for lab in counts.index for g in lab.split("+") if lab != "ctrl"}
    assert len(perturbed) >= 20
    assert counts.min() >= 200
    assert counts["ctrl"] >= 200


def test_toy_screen_is_raw_counts_with_synthetic_symbols(toy):
    x = toy.X
    assert np.all(x >= 0) and np.all(x == np.round(x))
    library = x.sum(axis=1)
    assert 300 < library.min() and library.max() < 50_000
    assert all(g.startswith("G") and g[1:].isdigit() for g in toy.var_names)
    assert "ctrl" in set(toy.obs["perturbation"])
    # Ground truth travels with the data.
    assert toy.varp["causal_matrix"].shape == (100, 100)
    assert toy.uns["simulation"]["additivity"]["n_doubles"] == 40


def test_toy_screen_returns_independent_copies(toy):
    other = toy_screen()
    assert other is not toy
    other.X[0, 0] += 1000
    other.obs["perturbation"] = "ctrl"
    fresh = toy_screen()
    np.testing.assert_array_equal(fresh.X, toy.X)
    assert list(fresh.obs["perturbation"]) == list(toy.obs["perturbation"])


def test_toy_screen_is_built_once_then_served_from_memory():
    toy_screen()
    before = _build.cache_info()
    toy_screen()
    after = _build.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1


def test_toy_screen_passes_prepare_without_warnings(toy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        screen = lc.pp.prepare(toy, perturbation_key="perturbation", control="ctrl", n_genes=100)
        default = lc.pp.prepare(toy, perturbation_key="perturbation", control="ctrl")
    assert default.n_vars == 100 and default.n_obs == toy.n_obs
    assert screen.n_vars == 100
    assert screen.n_obs == toy.n_obs  # QC removes nothing
    assert set(screen.obs["perturbation"]) == set(toy.obs["perturbation"])
    assert "counts" in screen.layers
    # varp follows prepare's gene order (perturbed genes first).
    order = [list(toy.var_names).index(g) for g in screen.var_names]
    np.testing.assert_array_equal(
        screen.varp["causal_matrix"], toy.varp["causal_matrix"][np.ix_(order, order)]
    )


def test_toy_screen_exported_from_datasets():
    assert lc.datasets.toy_screen is toy_screen
