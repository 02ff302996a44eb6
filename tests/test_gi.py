"""Genetic-interaction scores (lcd-evaluation §4) against known answers and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest

from lcdiff.errors import MetricInputError
from lcdiff.eval import (
    calibrate_gi_thresholds,
    classify_gi,
    distance_correlation,
    gi_deltas,
    gi_gene_mask,
    gi_scores,
    gi_scores_from_deltas,
    quantile_gi_thresholds,
)

N_GENES = 60


def _triplet(coef_a=1.0, coef_b=1.0, seed=0, noise=0.0):
    """log1p cells whose expm1 means change by s_a, s_b and coef_a·s_a + coef_b·s_b."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(1.0, 5.0, N_GENES)
    s_a = rng.normal(0, 1.0, N_GENES)
    s_b = rng.normal(0, 1.0, N_GENES)

    def cells(shift, n, seed_offset):
        r = np.random.default_rng(seed + seed_offset)
        expr = np.clip(base + shift + r.normal(0, 0.3, (n, N_GENES)), 0.0, None)
        return np.log1p(expr)

    control = cells(0.0, 300, 1)
    single_a, single_b = cells(s_a, 200, 2), cells(s_b, 200, 3)
    double = cells(coef_a * s_a + coef_b * s_b + rng.normal(0, noise, N_GENES), 200, 4)
    return double, single_a, single_b, control


def test_exactly_additive_deltas_give_unit_coefficients():
    rng = np.random.default_rng(1)
    da, db = rng.normal(size=80), rng.normal(size=80)
    scores = gi_scores_from_deltas(da, db, da + db)
    assert scores["c_a"] == pytest.approx(1.0, abs=1e-6)
    assert scores["c_b"] == pytest.approx(1.0, abs=1e-6)
    assert scores["mag"] == pytest.approx(np.sqrt(2), abs=1e-6)
    assert scores["ts_linear_dcor"] == pytest.approx(1.0, abs=1e-9)
    assert scores["corr_fit"] == pytest.approx(1.0, abs=1e-9)
    assert scores["dominance"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < scores["dcor_ratio"] <= 1
    # a double that copies a only: b has no weight, dominance → +large, ratio < 1
    only_a = gi_scores_from_deltas(da, db, 2.0 * da)
    assert only_a["c_a"] == pytest.approx(2.0, abs=1e-6) and abs(only_a["c_b"]) < 1e-6
    assert only_a["dcor_a"] == pytest.approx(1.0) and only_a["dcor_b"] < 0.5
    assert only_a["dominance"] > 3


def test_gi_scores_from_cells_recover_the_coefficients():
    # z-scoring is affine per gene, so expm1-mean shifts that add make the deltas add.
    scores = gi_scores(*_triplet(coef_a=1.0, coef_b=1.0), gi_genes=np.arange(N_GENES))
    assert scores["c_a"] == pytest.approx(1.0, abs=0.1)
    assert scores["c_b"] == pytest.approx(1.0, abs=0.1)
    assert scores["mag"] == pytest.approx(np.sqrt(2), abs=0.1)
    assert scores["ts_linear_dcor"] > 0.97
    synergy = gi_scores(*_triplet(coef_a=2.0, coef_b=1.5), gi_genes=np.arange(N_GENES))
    assert synergy["mag"] == pytest.approx(2.5, abs=0.2)
    assert synergy["dominance"] == pytest.approx(np.log10(2.0 / 1.5), abs=0.1)


def test_deltas_use_control_z_scores():
    double, a, b, ctrl = _triplet(seed=3)
    da, db, dab = gi_deltas(double, a, b, ctrl, gi_genes=np.arange(N_GENES))
    e = np.expm1
    mu, sd = e(ctrl).mean(0), e(ctrl).std(0)
    np.testing.assert_allclose(da, (e(a).mean(0) - mu) / sd, atol=1e-10)
    np.testing.assert_allclose(dab, (e(double).mean(0) - mu) / sd, atol=1e-10)
    # a gene that is constant in control is z-scored with std 1
    ctrl2 = ctrl.copy()
    ctrl2[:, 0] = np.log1p(2.0)
    da2, _, _ = gi_deltas(double, a, b, ctrl2, gi_genes=np.arange(N_GENES))
    assert da2[0] == pytest.approx(e(a[:, 0]).mean() - 2.0)


def test_gi_gene_mask_threshold_and_fallback():
    low = np.log1p(np.full((10, 10), 0.1))
    high = low.copy()
    high[:, :4] = np.log1p(3.0)  # 40 % of genes pass
    np.testing.assert_array_equal(gi_gene_mask([high]), np.arange(10) < 4)
    high[:, 1:4] = low[:, 1:4]  # only 10 % pass → all genes
    assert gi_gene_mask([high]).all()
    # the mean is over all cells of all sets
    assert not gi_gene_mask([np.log1p(np.full((3, 10), 0.9)), low], min_fraction=0.0).any()


def test_distance_correlation_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.dist_dependence_measures")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 2))
    y = x[:, 0] ** 2 + rng.normal(0, 0.3, 50)
    assert distance_correlation(x, y) == pytest.approx(sm.distance_correlation(x, y), rel=1e-8)
    assert distance_correlation(x[:, 0], y) == pytest.approx(
        sm.distance_correlation(x[:, 0], y), rel=1e-8
    )
    assert distance_correlation(y, 3 * y + 1) == pytest.approx(1.0)
    assert distance_correlation(y, np.ones(50)) == 0.0


THRESHOLDS = {
    "synergy": {"min": 1.5},
    "additive": {"min": 1.0, "max": 1.5},
    "suppression": {"max": 1.0},
    "neomorphism": {"max": 0.8},
    "epistasis": {"max": 0.5},
    "redundancy": {"min": 0.9},
}


def test_classify_gi_follows_the_type_table():
    base = {"mag": 1.2, "ts_linear_dcor": 0.95, "dcor_ratio": 0.7, "dcor": 0.5}
    assert classify_gi(base, THRESHOLDS) == {"additive"}
    # bounds are inclusive
    assert classify_gi({**base, "mag": 1.5}, THRESHOLDS) == {"synergy", "additive"}
    assert classify_gi({**base, "mag": 0.4, "dcor_ratio": 0.2}, THRESHOLDS) == {
        "suppression",
        "epistasis",
    }
    assert classify_gi({**base, "ts_linear_dcor": 0.3, "dcor": 0.95}, THRESHOLDS) == {
        "additive",
        "neomorphism",
        "redundancy",
    }
    # missing thresholds mean "never": a missing type, a missing bound, a None bound
    assert classify_gi(base, {"synergy": {"min": 0.0}}) == {"synergy"}
    assert classify_gi(base, {"additive": {"min": 0.0}}) == set()
    assert classify_gi(base, {"additive": {"min": 0.0, "max": None}}) == set()
    assert classify_gi({**base, "dcor_ratio": float("nan")}, THRESHOLDS) == {"additive"}
    with pytest.raises(MetricInputError, match="Unknown GI type"):
        classify_gi(base, {"synergistic": {"min": 1.0}})


def test_calibration_on_the_reference_itself_returns_its_quantiles():
    rng = np.random.default_rng(5)
    scores = [
        {"mag": m, "ts_linear_dcor": t, "dcor_ratio": r, "dcor": d}
        for m, t, r, d in rng.uniform(0, 2, (200, 4))
    ]
    labels = [classify_gi(s, THRESHOLDS) for s in scores]
    got = calibrate_gi_thresholds(scores, scores, labels)
    # transferring the reference onto itself recovers (nearly) the 5 % / 95 % type quantiles
    mags_syn = [s["mag"] for s, lab in zip(scores, labels, strict=True) if "synergy" in lab]
    assert got["redundancy"]["min"] == pytest.approx(
        np.quantile(
            [s["dcor"] for s, lab in zip(scores, labels, strict=True) if "redundancy" in lab], 0.05
        ),
        abs=0.03,
    )
    assert got["synergy"]["min"] >= np.quantile(mags_syn, 0.05) - 0.03
    # consistency fix
    assert got["synergy"]["min"] == got["additive"]["max"]
    assert got["suppression"]["max"] == got["additive"]["min"]
    # scores that are all doubled: thresholds on mag double too
    doubled = [{**s, "mag": 2 * s["mag"]} for s in scores]
    moved = calibrate_gi_thresholds(doubled, scores, labels)
    assert moved["synergy"]["min"] == pytest.approx(2 * got["synergy"]["min"], abs=0.03)


def test_quantile_fallback_thresholds():
    rng = np.random.default_rng(6)
    scores = [
        {"mag": m, "ts_linear_dcor": t, "dcor_ratio": r, "dcor": d}
        for m, t, r, d in rng.uniform(0, 1, (500, 4))
    ]
    got = quantile_gi_thresholds(scores)
    assert got["synergy"]["min"] == got["additive"]["max"] == pytest.approx(0.8, abs=0.05)
    assert got["redundancy"]["min"] == pytest.approx(0.9, abs=0.05)
    labels = [classify_gi(s, got) for s in scores]
    assert np.mean(["synergy" in lab for lab in labels]) == pytest.approx(0.2, abs=0.03)


def test_bad_inputs_raise_typed_errors():
    double, a, b, ctrl = _triplet()
    with pytest.raises(MetricInputError, match="Gene counts differ"):
        gi_scores(double[:, :10], a, b, ctrl)
    with pytest.raises(MetricInputError, match="at least 3 genes"):
        gi_scores(double, a, b, ctrl, gi_genes=[0, 1])
    with pytest.raises(MetricInputError, match="equal length"):
        gi_scores_from_deltas(np.ones(5), np.ones(4), np.ones(5))
