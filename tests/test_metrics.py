"""Per-condition metrics (lcd-evaluation §3) against independent computations and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from lcdiff.errors import MetricInputError
from lcdiff.eval import (
    average_precision,
    binary_auroc,
    condition_metrics,
    de_calls,
    de_classification,
    de_test,
    energy_distance,
    gene_masks,
    mmd,
    pearson_delta,
    rmse_mean,
    topk_metrics,
    w1_marginals,
)
from lcdiff.eval.metrics import MMD_BANDWIDTH_FACTORS


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _log_counts(rng, n: int, rates: np.ndarray) -> np.ndarray:
    """log1p of Poisson counts: many zeros and ties, like real evaluation data."""
    return np.log1p(rng.poisson(rates, size=(n, rates.size)).astype(float))


# --- MMD -----------------------------------------------------------------------------------
def _mmd_brute_force(x, y):
    """Unbiased MMD² by explicit loops over pairs, averaged over the 10 bandwidths."""
    n, m = len(x), len(y)
    values = []
    for ell in MMD_BANDWIDTH_FACTORS * np.sqrt(x.shape[1]):

        def k(a, b, ell=ell):
            return np.exp(-np.sum((a - b) ** 2) / (2 * ell**2))

        xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
        values.append(xx + yy - 2 * xy)
    return np.mean(values)


def test_mmd_matches_brute_force():
    rng = _rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.5, 1.3, size=(8, 3))
    assert mmd(x, y) == pytest.approx(_mmd_brute_force(x, y), rel=1e-10, abs=1e-13)
    assert mmd(x, y) == pytest.approx(mmd(y, x), rel=1e-12)


def test_mmd_of_a_sample_with_itself_has_the_closed_form():
    # x = y exactly: MMD² = 2K/(n(n−1)) − 2(K + n)/n² with K the off-diagonal kernel sum.
    x = _rng(2).normal(size=(10, 4))
    n = len(x)
    expected = []
    for ell in MMD_BANDWIDTH_FACTORS * 2.0:
        sq = ((x[:, None] - x[None]) ** 2).sum(-1)
        off = np.exp(-sq / (2 * ell**2)).sum() - n
        expected.append(2 * off / (n * (n - 1)) - 2 * (off + n) / n**2)
    assert mmd(x, x) == pytest.approx(np.mean(expected), rel=1e-9)
    assert mmd(x, x) < 0  # the unbiased estimate dips below zero here


def _gaussian_mmd2(delta: np.ndarray, s: float) -> float:
    """Population MMD² between N(0, s²I) and N(delta, s²I), averaged over the bandwidths.

    For Z ~ N(mu, σ²I_d): E exp(−‖Z‖²/(2ℓ²)) = (ℓ²/(ℓ²+σ²))^{d/2} exp(−‖mu‖²/(2(ℓ²+σ²))),
    here with σ² = 2s² (difference of two independent draws).
    """
    d = delta.size
    values = []
    for ell in MMD_BANDWIDTH_FACTORS * np.sqrt(d):
        var = ell**2 + 2 * s**2
        scale = (ell**2 / var) ** (d / 2)
        values.append(2 * scale * (1 - np.exp(-delta @ delta / (2 * var))))
    return float(np.mean(values))


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.5])
def test_mmd_of_shifted_gaussians_matches_population_value(shift):
    d, s, n = 4, 1.0, 600
    delta = np.full(d, shift)
    expected = _gaussian_mmd2(delta, s)
    estimates = [
        mmd(rng.normal(0, s, (n, d)), rng.normal(delta, s, (n, d))) for rng in map(_rng, range(5))
    ]
    # One estimate at n = 600 has sd ≤ 0.004 for these shifts (0.0002 without shift), so the
    # mean of five is within 0.006 (3 sd); expected values are 0, 0.015 and 0.106.
    assert np.mean(estimates) == pytest.approx(expected, abs=0.006)
    if shift > 0:
        assert min(estimates) > 0.5 * expected


def test_mmd_is_unchanged_by_a_common_translation_and_row_order():
    rng = _rng(3)
    x, y = rng.normal(size=(20, 5)), rng.normal(1.0, size=(25, 5))
    offset = rng.normal(100.0, 10.0, size=5)
    assert mmd(x + offset, y + offset) == pytest.approx(mmd(x, y), rel=1e-8)
    assert mmd(x[::-1], y[::-1]) == pytest.approx(mmd(x, y), rel=1e-12)


def test_blocked_computation_equals_single_block(monkeypatch):
    import lcdiff.eval.metrics as metrics

    rng = _rng(4)
    x, y = rng.normal(size=(37, 6)), rng.normal(0.3, size=(41, 6))
    full = (mmd(x, y), energy_distance(x, y))
    monkeypatch.setattr(metrics, "_BLOCK_ENTRIES", 50)  # a row or two per block
    assert (mmd(x, y), energy_distance(x, y)) == pytest.approx(full, rel=1e-10)


# --- energy distance -----------------------------------------------------------------------
def test_energy_distance_matches_scipy_in_one_dimension():
    # scipy returns sqrt(2E|X−Y| − V_x − V_y) with V-statistics V_x = Σ_ij |x_i − x_j| / n².
    # Ours divides the within-sample sums by n(n−1) instead, so
    #   ours = scipy² − V_x/(n−1) − V_y/(m−1),
    # and V_x is read off scipy too: scipy(x, {c})² = 2·mean|x − c| − V_x.
    rng = _rng(5)
    x, y = rng.normal(size=30), rng.normal(0.7, 2.0, size=45)
    n, m = len(x), len(y)

    def v_stat(a):
        return 2 * np.mean(np.abs(a)) - stats.energy_distance(a, [0.0]) ** 2

    expected = stats.energy_distance(x, y) ** 2 - v_stat(x) / (n - 1) - v_stat(y) / (m - 1)
    assert energy_distance(x[:, None], y[:, None]) == pytest.approx(expected, rel=1e-9)


def test_energy_distance_matches_brute_force_and_known_answers():
    rng = _rng(6)
    x, y = rng.normal(size=(7, 3)), rng.normal(1.0, size=(9, 3))

    def mean_dist(a, b, same):
        dist = np.linalg.norm(a[:, None] - b[None], axis=-1)
        return dist.sum() / (len(a) * (len(a) - 1)) if same else dist.mean()

    expected = 2 * mean_dist(x, y, False) - mean_dist(x, x, True) - mean_dist(y, y, True)
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-9)
    # identical cells: 2S/n² − 2S/(n(n−1)) with S the sum of within-sample distances
    s = np.linalg.norm(x[:, None] - x[None], axis=-1).sum()
    n = len(x)
    assert energy_distance(x, x) == pytest.approx(2 * s / n**2 - 2 * s / (n * (n - 1)), rel=1e-8)


def test_energy_distance_of_shifted_gaussians_in_one_dimension():
    # E|Z| for Z ~ N(mu, σ²) is σ√(2/π) exp(−mu²/(2σ²)) + mu(1 − 2Φ(−mu/σ)).
    def mean_abs(mu, sigma):
        return sigma * np.sqrt(2 / np.pi) * np.exp(-(mu**2) / (2 * sigma**2)) + mu * (
            1 - 2 * stats.norm.cdf(-mu / sigma)
        )

    shift, n = 1.0, 400
    expected = 2 * mean_abs(shift, np.sqrt(2)) - 2 * mean_abs(0.0, np.sqrt(2))
    got = [
        energy_distance(rng.normal(size=(n, 1)), rng.normal(shift, size=(n, 1)))
        for rng in map(_rng, range(10))
    ]
    # one estimate has sd ≈ 0.075 at n = 400; the mean of 10 about 0.024
    assert np.mean(got) == pytest.approx(expected, abs=0.075)


# --- W1, RMSE, Pearson ---------------------------------------------------------------------
def test_w1_matches_scipy_per_gene_with_ties_and_unequal_sizes():
    rng = _rng(8)
    rates = rng.uniform(0.05, 5.0, size=12)
    x, y = _log_counts(rng, 33, rates), _log_counts(rng, 50, rates * 1.5)
    expected = np.mean([stats.wasserstein_distance(x[:, g], y[:, g]) for g in range(12)])
    assert w1_marginals(x, y) == pytest.approx(expected, rel=1e-12)
    assert w1_marginals(x, x) == 0.0
    # a pure shift moves every marginal by exactly |shift|
    assert w1_marginals(x, x + 0.25) == pytest.approx(0.25)


def test_rmse_and_pearson_delta():
    rng = _rng(9)
    ctrl = rng.normal(size=(40, 6))
    true = ctrl + np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    assert rmse_mean(true, true) == 0.0
    assert rmse_mean(true + 0.3, true) == pytest.approx(0.3)
    # predicted change proportional to the true one: correlation 1 (scale-free)
    pred = ctrl + 0.5 * np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    assert pearson_delta(pred, true, ctrl) == pytest.approx(1.0)
    assert pearson_delta(pred, true, ctrl.mean(axis=0)) == pytest.approx(1.0)
    flipped = ctrl - np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    assert pearson_delta(flipped, true, ctrl) == pytest.approx(-1.0)
    # against another reference: equals numpy's correlation of the two change vectors
    ref = rng.normal(size=6)
    expected = np.corrcoef(pred.mean(0) - ref, true.mean(0) - ref)[0, 1]
    assert pearson_delta(pred, true, ref) == pytest.approx(expected)
    # a constant change vector has no correlation
    assert np.isnan(pearson_delta(ctrl, true, ctrl))


# --- DE ------------------------------------------------------------------------------------
def _bh(p):
    """Benjamini–Hochberg by its definition: min over j ≥ i of p_(j)·m/j, capped at 1."""
    m = len(p)
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    return out


def _de_pair(seed=10, n_genes=40, n_changed=10):
    rng = _rng(seed)
    rates = rng.uniform(0.2, 4.0, size=n_genes)
    ctrl = _log_counts(rng, 150, rates)
    fold = np.ones(n_genes)
    fold[:n_changed] = np.where(np.arange(n_changed) % 2, 3.0, 0.3)
    cells = _log_counts(rng, 120, rates * fold)
    return cells, ctrl


def test_de_calls_match_per_gene_scipy_and_bh():
    cells, ctrl = _de_pair()
    signs, padj = de_calls(cells, ctrl)
    raw = np.array(
        [
            stats.mannwhitneyu(cells[:, g], ctrl[:, g], method="asymptotic").pvalue
            for g in range(cells.shape[1])
        ]
    )
    assert de_test(cells, ctrl).pvals == pytest.approx(raw, rel=1e-10)
    assert padj == pytest.approx(_bh(raw), rel=1e-10)
    change = cells.mean(0) - ctrl.mean(0)
    expected = np.where(_bh(raw) < 0.05, np.sign(change), 0)
    np.testing.assert_array_equal(signs, expected)
    # the strong changes are found with the right direction
    np.testing.assert_array_equal(signs[:10], np.where(np.arange(10) % 2, 1, -1))


def test_constant_gene_is_never_de():
    cells, ctrl = _de_pair()
    cells[:, 5] = 0.0
    ctrl[:, 5] = 0.0
    test = de_test(cells, ctrl)
    assert test.pvals[5] == 1.0 and test.signs[5] == 0
    assert test.ranks("pval")[5] == cells.shape[1] - 1 and test.ranks("delta")[5] == 39


def test_de_classification_and_its_nan_rules():
    cells, ctrl = _de_pair()
    perfect = de_classification(cells, cells, ctrl)
    assert perfect == {"classify_de_prec": 1.0, "classify_de_recall": 1.0, "classify_de_f1": 1.0}
    # the prediction = control cells: nothing predicted DE → precision NaN, recall 0, F1 0
    none = de_classification(ctrl[:100], cells, ctrl)
    assert np.isnan(none["classify_de_prec"])
    assert none["classify_de_recall"] == 0.0 and none["classify_de_f1"] == 0.0
    # neither side DE → everything undefined
    both = de_classification(ctrl[:100], ctrl[50:], ctrl)
    assert all(np.isnan(v) for v in both.values())
    # a partial prediction: compare with counting by hand
    half = cells.copy()
    half[:, :5] = ctrl[:120, :5]  # first five changed genes predicted unchanged
    got = de_classification(half, cells, ctrl)
    pred_de, true_de = de_calls(half, ctrl)[0] != 0, de_calls(cells, ctrl)[0] != 0
    tp = np.sum(pred_de & true_de)
    assert got["classify_de_prec"] == pytest.approx(tp / pred_de.sum())
    assert got["classify_de_recall"] == pytest.approx(tp / true_de.sum())
    assert got["classify_de_recall"] < 1.0


# --- ranking metrics -----------------------------------------------------------------------
def test_binary_auroc_and_ap_match_sklearn_with_ties():
    rng = _rng(11)
    score = rng.integers(0, 6, size=200).astype(float)  # heavy ties
    positive = rng.random(200) < 0.3 + 0.1 * score
    assert binary_auroc(score, positive) == pytest.approx(roc_auc_score(positive, score))
    assert average_precision(score, positive) == pytest.approx(
        average_precision_score(positive, score)
    )
    assert binary_auroc(-score, positive) == pytest.approx(1 - binary_auroc(score, positive))
    assert np.isnan(binary_auroc(score, np.zeros(200, bool)))
    assert np.isnan(average_precision(score, np.zeros(200, bool)))


def _ranks_by_hand(keys):
    """0-based rank = (number of entries with key ≤ own key) − 1; keys compare as tuples."""
    return np.array([sum(other <= own for other in keys) - 1 for own in keys])


def test_de_rank_conventions():
    cells, ctrl = _de_pair(seed=12)
    test = de_test(cells, ctrl)
    change = np.abs(test.mean_change)
    change = np.where(change < 1e-6, 0.0, change)
    keys_delta = [(-c,) for c in change]
    keys_pval = [(p if c > 0 else np.inf, -c) for p, c in zip(test.pvals, change, strict=True)]
    np.testing.assert_array_equal(test.ranks("delta"), _ranks_by_hand(keys_delta))
    np.testing.assert_array_equal(test.ranks("pval"), _ranks_by_hand(keys_pval))
    with pytest.raises(MetricInputError, match="Unknown DE ranking"):
        test.ranks("size")


def test_topk_metrics_against_sklearn_and_known_answers():
    cells, ctrl = _de_pair(seed=13, n_genes=60, n_changed=25)
    rng = _rng(14)
    pred = cells + rng.normal(0, 0.4, cells.shape)
    ks = (5, 20)
    got = topk_metrics(pred, cells, ctrl, ks=ks)
    true_rank = de_test(cells, ctrl).ranks("pval")
    for k in ks:
        actual = true_rank < k
        for by in ("delta", "pval"):
            pred_rank = de_test(pred, ctrl).ranks(by)
            assert got[f"classify_topk_auroc_{by}_{k}"] == pytest.approx(
                roc_auc_score(actual, -pred_rank)
            )
            assert got[f"classify_topk_ap_{by}_{k}"] == pytest.approx(
                average_precision_score(actual, -pred_rank)
            )
            chosen = pred_rank < k
            assert got[f"classify_topk_precision_{by}_{k}"] == pytest.approx(
                np.sum(chosen & actual) / chosen.sum()
            )
    # perfect prediction (the observed cells themselves): AUROC, AP, precision 1 for the p ranking
    perfect = topk_metrics(cells, cells, ctrl, ks=ks)
    for k in ks:
        assert perfect[f"classify_topk_auroc_pval_{k}"] == 1.0
        assert perfect[f"classify_topk_ap_pval_{k}"] == 1.0
        assert perfect[f"classify_topk_precision_pval_{k}"] == 1.0
    assert len(got) == 2 * 2 * 3


# --- gene masks and the per-condition set --------------------------------------------------
def test_gene_masks():
    masks = gene_masks(100, markers=[3, 1, 3], hvg_rank=np.arange(100)[::-1])
    np.testing.assert_array_equal(masks["_20"], [1, 3])
    # ranks reversed: gene 99 has rank 0
    np.testing.assert_array_equal(masks["_hvg_0-5"], np.arange(95, 100))
    np.testing.assert_array_equal(masks["_hvg_5-20"], np.arange(80, 95))
    np.testing.assert_array_equal(masks["_hvg_20-100"], np.arange(0, 80))
    boolean = np.zeros(100, bool)
    boolean[[1, 3]] = True
    np.testing.assert_array_equal(gene_masks(100, markers=boolean)["_20"], [1, 3])
    with pytest.raises(MetricInputError, match="column indices"):
        gene_masks(10, markers=[10])
    with pytest.raises(MetricInputError, match="hvg_rank"):
        gene_masks(10, hvg_rank=np.arange(9))


def test_condition_metrics_equal_the_individual_functions():
    cells, ctrl = _de_pair(seed=15, n_genes=40, n_changed=12)
    rng = _rng(16)
    pred = cells[:80] + rng.normal(0, 0.3, (80, 40))
    centroid = ctrl.mean(0) + rng.normal(0, 0.2, 40)
    markers = np.arange(0, 20)
    hvg_rank = rng.permutation(40)
    out = condition_metrics(pred, cells, ctrl, centroid, markers=markers, hvg_rank=hvg_rank)

    suffixes = ["", "_20", "_hvg_0-5", "_hvg_5-20", "_hvg_20-100"]
    names = [
        "mmd",
        "ed",
        "w1_eltwise",
        "rmse_m",
        "pearson_de",
        "pearson_systema",
        "classify_de_prec",
        "classify_de_recall",
        "classify_de_f1",
    ]
    assert {f"{n}{s}" for n in names for s in suffixes} <= set(out)
    assert "classify_topk_auroc_delta_100" in out and "classify_topk_ap_pval_20" in out

    pred_signs, true_signs = de_calls(pred, ctrl)[0], de_calls(cells, ctrl)[0]
    for suffix, genes in gene_masks(40, markers, hvg_rank).items():
        xs, ys = pred[:, genes], cells[:, genes]
        assert out[f"mmd{suffix}"] == pytest.approx(mmd(xs, ys))
        assert out[f"ed{suffix}"] == pytest.approx(energy_distance(xs, ys))
        assert out[f"w1_eltwise{suffix}"] == pytest.approx(w1_marginals(xs, ys))
        assert out[f"rmse_m{suffix}"] == pytest.approx(rmse_mean(xs, ys))
        if len(genes) > 1:
            assert out[f"pearson_de{suffix}"] == pytest.approx(
                pearson_delta(xs, ys, ctrl[:, genes]), nan_ok=True
            )
            assert out[f"pearson_systema{suffix}"] == pytest.approx(
                pearson_delta(xs, ys, centroid[genes]), nan_ok=True
            )
        # DE calls use BH over all genes, then the mask selects genes
        p, t = pred_signs[genes] != 0, true_signs[genes] != 0
        if p.sum():
            assert out[f"classify_de_prec{suffix}"] == pytest.approx(np.sum(p & t) / p.sum())
    top = topk_metrics(pred, cells, ctrl)
    assert {k: out[k] for k in top} == pytest.approx(top, nan_ok=True)
    # a precomputed observed-DE test gives the same numbers
    again = condition_metrics(
        pred,
        cells,
        ctrl,
        centroid,
        markers=markers,
        hvg_rank=hvg_rank,
        true_de=de_test(cells, ctrl),
    )
    assert again == pytest.approx(out, nan_ok=True)
    # without markers / ranks only the all-gene metrics appear
    plain = condition_metrics(pred, cells, ctrl, centroid)
    assert not any(
        key.endswith(("_20", "-5", "-20", "-100")) and "topk" not in key for key in plain
    )


def test_identical_samples_score_perfectly():
    cells, ctrl = _de_pair(seed=17)
    out = condition_metrics(cells, cells, ctrl, ctrl.mean(0))
    assert out["rmse_m"] == 0.0 and out["w1_eltwise"] == 0.0
    assert out["pearson_de"] == pytest.approx(1.0) and out["pearson_systema"] == pytest.approx(1.0)
    assert out["classify_de_f1"] == 1.0
    assert abs(out["mmd"]) < 0.02 and out["ed"] <= 0  # unbiased: slightly negative


def test_bad_inputs_raise_typed_errors():
    x = np.zeros((5, 3))
    with pytest.raises(MetricInputError, match="Gene counts differ"):
        mmd(x, np.zeros((5, 4)))
    with pytest.raises(MetricInputError, match="at least 2 cell"):
        energy_distance(x[:1], x)
    with pytest.raises(MetricInputError, match="NaN"):
        rmse_mean(np.full((5, 3), np.nan), x)
    with pytest.raises(MetricInputError, match="2-D"):
        w1_marginals(np.zeros(5), x)
    with pytest.raises(MetricInputError, match="reference"):
        pearson_delta(x, x, np.zeros(4))
    with pytest.raises(MetricInputError, match="alpha"):
        de_calls(x, x, alpha=1.5)
    with pytest.raises(MetricInputError, match="true_de"):
        condition_metrics(x, x, x, np.zeros(3), true_de=de_test(np.ones((5, 2)), np.zeros((5, 2))))
