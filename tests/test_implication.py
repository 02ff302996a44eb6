"""The DE-implication test: does a strong predicted effect i → j imply that j is DE after i?"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.stats import hypergeom

import lcdiff as lc
from lcdiff.causal import (
    ImplicationError,
    de_implication,
    effect_threshold,
    implication_test,
    wilson_interval,
)


def table(n11, n10, n01, n00):
    """Paired boolean arrays with the given 2 × 2 counts."""
    p = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    q = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    return p, q


def test_constructed_table_gives_known_statistics():
    p, q = table(n11=30, n10=10, n01=60, n00=900)
    stats = implication_test(p, q)
    assert (stats["n11"], stats["n10"], stats["n01"], stats["n00"], stats["n"]) == (
        30,
        10,
        60,
        900,
        1000,
    )
    assert stats["accuracy"] == pytest.approx(0.99)
    # One-sided Fisher = P(X ≥ 30), X ~ Hypergeom(N = 1000, K = 90 DE pairs, n = 40 edges).
    assert stats["fisher_p"] == pytest.approx(hypergeom.sf(29, 1000, 90, 40), rel=1e-9)
    assert stats["fisher_significant"]
    assert stats["fisher_odds_ratio"] == pytest.approx(30 * 900 / (10 * 60))
    assert stats["q_given_p"] == pytest.approx(0.75)
    # Wilson 95 % interval of 30 / 40 (statsmodels' proportion_confint(..., "wilson")).
    assert stats["q_given_p_low"] == pytest.approx(0.5980603857923197, abs=1e-9)
    assert stats["q_given_p_high"] == pytest.approx(0.858128813609037, abs=1e-9)
    assert stats["lift"] == pytest.approx(0.75 / 0.09)
    assert stats["conviction"] == pytest.approx(0.91 / 0.25)
    assert stats["lift_low"] < stats["lift"] < stats["lift_high"]
    assert stats["conviction_low"] < stats["conviction"] < stats["conviction_high"]


def test_independent_p_and_q_are_not_significant():
    p, q = table(n11=10, n10=90, n01=90, n00=810)  # P(Q | P) = P(Q) = 0.1
    stats = implication_test(p, q)
    assert stats["lift"] == pytest.approx(1.0)
    assert not stats["fisher_significant"] and stats["fisher_p"] > 0.3
    assert stats["lift_low"] < 1.0 < stats["lift_high"]


def test_multinomial_bootstrap_matches_index_resampling():
    p, q = table(n11=20, n10=15, n01=80, n00=385)
    stats = implication_test(p, q, n_boot=4000, seed=0)
    rng = np.random.default_rng(123)
    lifts = []
    for _ in range(4000):
        idx = rng.integers(0, p.size, p.size)
        pp, qq = p[idx], q[idx]
        lifts.append(np.mean(qq[pp]) / np.mean(qq))
    lo, hi = np.percentile(lifts, [2.5, 97.5])
    assert stats["lift_low"] == pytest.approx(lo, rel=0.05)
    assert stats["lift_high"] == pytest.approx(hi, rel=0.05)


def test_same_seed_same_interval_and_perfect_implication():
    p, q = table(n11=12, n10=0, n01=30, n00=200)
    a, b = implication_test(p, q, seed=0), implication_test(p, q, seed=0)
    assert pd.Series(a).equals(pd.Series(b))
    assert a["accuracy"] == 1.0 and a["conviction"] == np.inf
    assert a["conviction_high"] == np.inf and np.isfinite(a["lift_high"])


def test_wilson_interval_edge_cases():
    assert all(np.isnan(wilson_interval(0, 0)))
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0 < hi < 0.35


def test_implication_test_rejects_bad_input():
    with pytest.raises(ImplicationError, match="same shape"):
        implication_test(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ImplicationError, match="at least one"):
        implication_test(np.array([], bool), np.array([], bool))


def planted_effects():
    genes = [f"G{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    eff = pd.DataFrame(rng.uniform(-1, 1, (10, 10)), index=genes, columns=genes)
    np.fill_diagonal(eff.values, 100.0)  # self-effects must never count
    strong = [("G0", "G1"), ("G0", "G5"), ("G2", "G3"), ("G4", "G9"), ("G7", "G8")]
    for i, j in strong:
        eff.loc[i, j] = 20.0
    de = pd.DataFrame(0, index=["G0", "G2", "G4", "G7"], columns=genes)
    for i, j in strong[:4]:
        de.loc[i, j] = 1  # 4 of the 5 strong edges are DE ...
    de.loc["G7", "G2"] = -1  # ... and one DE pair has no strong edge
    return eff, de


def test_de_implication_counts_planted_edges():
    eff, de = planted_effects()
    # 90 off-diagonal entries, 5 strong ones: the 0.9 quantile lies among the weak ones for
    # q = 0.9 (P = 5 strong + 4 weak) and between weak and strong for q = 0.945.
    result = de_implication(eff, de, quantiles=(0.945,), n_boot=200)
    col = result[0.945]
    assert 1.0 < col["threshold"] < 20.0
    assert (col["n11"], col["n10"], col["n01"], col["n"]) == (4, 1, 1, 4 * 9)
    assert col["q_given_p"] == pytest.approx(0.8)


def test_threshold_ignores_excluded_rows_and_the_diagonal():
    eff, _ = planted_effects()
    tau_all = effect_threshold(eff, 1.0)
    assert tau_all == pytest.approx(20.0)  # the diagonal (100) is left out
    tau_wo = effect_threshold(eff, 1.0, exclude_sources=["G0", "G2", "G4", "G7"])
    assert tau_wo < 1.0


def test_de_implication_rejects_misaligned_inputs():
    eff, de = planted_effects()
    with pytest.raises(ImplicationError, match="source gene"):
        de_implication(eff, de.rename(index=lambda g: g + "x"))
    with pytest.raises(ImplicationError, match="lacks"):
        de_implication(eff, de.drop(columns=["G9"]))


def test_single_gene_de_signs_from_a_screen():
    rng = np.random.default_rng(0)
    n, d = 150, 6
    ctrl = rng.normal(size=(n, d))
    # Same values as control (shuffled) for every gene but G2: U = n²/2 exactly, p = 1.
    pert = np.stack([rng.permutation(ctrl[:, j]) for j in range(d)], axis=1)
    pert[:, 2] += 3.0  # perturbing G0 raises G2
    double = rng.normal(size=(n, d))
    x = np.vstack([ctrl, pert, double]).astype(np.float32)
    obs = pd.DataFrame(
        {"perturbation": ["ctrl"] * n + ["G0"] * n + ["G0+G1"] * n},
        index=[f"c{i}" for i in range(3 * n)],
    )
    screen = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(d)]))
    screen.uns["lcdiff"] = {"control": "ctrl", "perturbation_key": "perturbation"}
    signs = lc.tl.single_gene_de_signs(screen)
    assert list(signs.index) == ["G0"]  # doubles are not single-gene perturbations
    assert signs.loc["G0", "G2"] == 1 and (signs.drop(columns="G2").to_numpy() == 0).all()
