"""Causal-structure metrics (lcd-evaluation §3.7) against sklearn and known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from lcdiff.errors import MetricInputError
from lcdiff.eval import causal_auroc, causal_f1, causal_metrics, causal_pearson
from lcdiff.eval.causal import sign_classes


def _random_truth(d: int = 12, seed: int = 0) -> np.ndarray:
    """A simulated-style causal matrix: sparse ±[1, 2] weights, arbitrary diagonal."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(1.0, 2.0, (d, d)) * rng.choice([-1.0, 1.0], (d, d))
    true = np.where(rng.random((d, d)) < 0.3, weights, 0.0)
    np.fill_diagonal(true, -5.0)  # self-decay, must be ignored
    return true


def _off(mat: np.ndarray) -> np.ndarray:
    return mat[~np.eye(mat.shape[0], dtype=bool)]


def test_perfect_prediction_scores_one():
    true = _random_truth()
    out = causal_metrics(true, true)
    assert set(out) == {"causal_auroc", "causal_pearson", "causal_f1"}
    assert out["causal_auroc"] == pytest.approx(1.0)
    assert out["causal_pearson"] == pytest.approx(1.0)
    assert out["causal_f1"] == pytest.approx(1.0)


def test_sign_flipped_prediction_scores_zero_auroc():
    true = _random_truth()
    # (−1, 1) and the pairs with 0 all reverse when every sign flips: AUROC 0.
    assert causal_auroc(-true, true) == pytest.approx(0.0)
    assert causal_pearson(-true, true) == pytest.approx(-1.0)


def test_diagonal_is_ignored():
    true = _random_truth()
    pred = true.copy()
    np.fill_diagonal(pred, 100.0)  # a wildly wrong diagonal must not change anything
    assert causal_metrics(pred, true) == pytest.approx(causal_metrics(true, true))


def test_auroc_matches_sklearn_one_vs_one():
    true = _random_truth(d=15, seed=3)
    pred = true + np.random.default_rng(1).normal(0, 1.0, true.shape)
    p, t = _off(pred), sign_classes(_off(true))
    expected = np.mean(
        [
            roc_auc_score(t[np.isin(t, pair)] == pair[1], p[np.isin(t, pair)])
            for pair in [(-1, 0), (-1, 1), (0, 1)]
        ]
    )
    assert causal_auroc(pred, true) == pytest.approx(expected, abs=1e-12)
    # sklearn's own multiclass OvO on the larger-class score gives the same for a two-class truth
    two_class = np.abs(true)
    pos = _off(two_class) >= 0.5
    assert causal_auroc(pred, two_class) == pytest.approx(roc_auc_score(pos, _off(pred)))


def test_auroc_averages_only_pairs_present():
    true = np.abs(_random_truth())  # classes 0 and +1 only
    pred = true + np.random.default_rng(2).normal(0, 0.8, true.shape)
    t = sign_classes(_off(true))
    assert set(np.unique(t)) == {0, 1}
    assert causal_auroc(pred, true) == pytest.approx(roc_auc_score(t == 1, _off(pred)))


def test_auroc_and_matched_f1_are_scale_free_absolute_f1_is_not():
    true = _random_truth(seed=5)
    pred = true + np.random.default_rng(3).normal(0, 0.5, true.shape)
    assert causal_auroc(10 * pred, true) == pytest.approx(causal_auroc(pred, true))
    assert causal_f1(pred / 100, true, pred_eps=0.5) < causal_f1(pred, true, pred_eps=0.5)
    # the default threshold is relative to the prediction's own scale
    assert causal_f1(pred / 100, true) == pytest.approx(causal_f1(pred, true))
    assert causal_f1(pred * 40, true) == pytest.approx(causal_f1(pred, true))


def test_f1_matches_sklearn_macro():
    true = _random_truth(d=20, seed=7)
    pred = true + np.random.default_rng(4).normal(0, 0.7, true.shape)
    expected = f1_score(sign_classes(_off(true)), sign_classes(_off(pred)), average="macro")
    assert causal_f1(pred, true, pred_eps=0.5) == pytest.approx(expected)
    # eps is applied to both matrices
    expected_eps = f1_score(
        sign_classes(_off(true), 1.5), sign_classes(_off(pred), 1.5), average="macro"
    )
    assert causal_f1(pred, true, eps=1.5, pred_eps=1.5) == pytest.approx(expected_eps)


def test_pearson_matches_numpy():
    true = _random_truth(seed=9)
    pred = 0.3 * true + np.random.default_rng(5).normal(0, 0.5, true.shape)
    assert causal_pearson(pred, true) == pytest.approx(np.corrcoef(_off(pred), _off(true))[0, 1])


def test_single_class_truth_gives_nan_auroc():
    true = np.zeros((5, 5))
    pred = np.random.default_rng(0).normal(size=(5, 5))
    assert np.isnan(causal_auroc(pred, true))
    assert np.isnan(causal_pearson(pred, true))  # constant truth


def test_dataframes_are_aligned_on_labels():
    true = _random_truth(d=8)
    genes = [f"g{i}" for i in range(8)]
    true_df = pd.DataFrame(true, index=genes, columns=genes)
    pred = true + np.random.default_rng(6).normal(0, 0.6, true.shape)
    pred_df = pd.DataFrame(pred, index=genes, columns=genes)
    shuffled = pred_df.iloc[::-1, ::-1]  # same matrix, genes in another order
    assert causal_metrics(shuffled, true_df) == pytest.approx(causal_metrics(pred, true))
    # without alignment the scores would differ
    assert causal_metrics(shuffled.to_numpy(), true) != pytest.approx(causal_metrics(pred, true))


def test_bad_inputs_raise_typed_errors():
    true = _random_truth(d=6)
    with pytest.raises(MetricInputError, match="square"):
        causal_metrics(np.zeros((6, 5)), true)
    with pytest.raises(MetricInputError, match="differ in shape"):
        causal_metrics(np.zeros((5, 5)), true)
    with pytest.raises(MetricInputError, match="NaN"):
        causal_metrics(np.full((6, 6), np.nan), true)
    genes = list("abcdef")
    true_df = pd.DataFrame(true, index=genes, columns=genes)
    pred_df = pd.DataFrame(true[:5, :5], index=genes[:5], columns=genes[:5])
    with pytest.raises(MetricInputError, match="lacks 1 gene"):
        causal_metrics(pred_df, true_df)
