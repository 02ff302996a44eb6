"""Scores of an estimated gene × gene causal matrix against simulated ground truth.

Follows ``lcd-evaluation.md`` §3.7. Matrices are indexed row = source gene, column = target
gene; only off-diagonal entries are scored (self-effects are not causal claims). Entries are
put in three sign classes with a dead zone: class(v) = sign(v) if |v| ≥ eps else 0 (eps = 0.5;
true simulated edges have |w| ≥ 1).

- :func:`causal_auroc`: one-vs-one AUROC over the sign classes of the *true* matrix, using the raw
  predicted value as the score of the larger class, averaged over the class pairs present
  (scale-free and sign-aware);
- :func:`causal_pearson`: Pearson correlation of predicted and true values;
- :func:`causal_f1`: macro-F1 over the sign classes. The prediction's dead zone is by default
  *matched*: it keeps as many off-diagonal entries nonzero as the truth has edges (the largest
  |values|), so the score does not depend on the units of the prediction (a CLIPR matrix is in
  model units, often ±20–40 against a true network of ±1–3). ``pred_eps=<number>`` applies an
  absolute dead zone instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lcdiff.errors import MetricInputError
from lcdiff.eval.metrics import _pearson, binary_auroc

#: Dead-zone half-width of the sign classes.
CAUSAL_EPS = 0.5
_CLASS_PAIRS = ((-1, 0), (-1, 1), (0, 1))


def _as_square(mat, name: str) -> np.ndarray:
    arr = np.asarray(mat, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 2:
        raise MetricInputError(
            f"{name} must be a square gene × gene matrix with at least 2 genes; got shape "
            f"{arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise MetricInputError(f"{name} contains NaN or inf; causal metrics need finite entries.")
    return arr


def _aligned(pred, true) -> tuple[np.ndarray, np.ndarray]:
    """Both matrices as arrays in the same gene order (DataFrames are aligned on labels)."""
    if isinstance(pred, pd.DataFrame) and isinstance(true, pd.DataFrame):
        genes = list(true.index)
        if list(true.columns) != genes:
            raise MetricInputError(
                "true must have the same genes, in the same order, as rows and columns "
                "(row = source, column = target)."
            )
        missing = sorted(set(genes) - set(pred.index) | set(genes) - set(pred.columns))
        if missing:
            raise MetricInputError(
                f"pred lacks {len(missing)} gene(s) of true, e.g. {missing[:5]}; score both on "
                "the same genes (subset true with true.loc[genes, genes])."
            )
        pred = pred.loc[genes, genes]
    p, t = _as_square(pred, "pred"), _as_square(true, "true")
    if p.shape != t.shape:
        raise MetricInputError(
            f"pred {p.shape} and true {t.shape} differ in shape; both must cover the same genes."
        )
    return p, t


def _off_diagonal(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = _aligned(pred, true)
    off = ~np.eye(p.shape[0], dtype=bool)
    return p[off], t[off]


def sign_classes(values, eps: float = CAUSAL_EPS) -> np.ndarray:
    """−1 / 0 / +1 per entry: the sign where |value| ≥ eps, else 0."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.abs(values) < eps, 0, np.sign(values)).astype(np.int8)


def causal_auroc(pred, true, eps: float = CAUSAL_EPS) -> float:
    """One-vs-one AUROC (Hand & Till) of predicted values over the true sign classes.

    For each class pair (−1, 0), (−1, 1), (0, 1) of which both classes occur in the truth, the
    entries of those two true classes are scored by the raw predicted value (higher = the
    larger class); the AUROCs are averaged. NaN when the truth has a single class.

    Parameters
    ----------
    pred, true : array or DataFrame [genes, genes]
        Row = source, column = target. DataFrames are aligned on the labels of ``true``.
    eps : float
        Dead zone of the true sign classes.
    """
    p, t = _off_diagonal(pred, true)
    classes = sign_classes(t, eps)
    present = set(np.unique(classes).tolist())
    scores = []
    for low, high in _CLASS_PAIRS:
        if low in present and high in present:
            sel = (classes == low) | (classes == high)
            scores.append(binary_auroc(p[sel], classes[sel] == high))
    return float(np.mean(scores)) if scores else float("nan")


def causal_pearson(pred, true) -> float:
    """Pearson correlation of predicted and true off-diagonal values (NaN if one is constant).

    Parameters
    ----------
    pred, true : array or DataFrame [genes, genes]
    """
    p, t = _off_diagonal(pred, true)
    return _pearson(p, t)


def matched_eps(pred_values: np.ndarray, n_edges: int) -> float:
    """The dead zone that leaves the ``n_edges`` largest |values| nonzero (ties kept together);
    ``inf`` when ``n_edges`` is 0."""
    magnitude = np.sort(np.abs(np.asarray(pred_values, dtype=np.float64)))[::-1]
    if n_edges <= 0 or magnitude.size == 0:
        return float("inf")
    value = magnitude[min(n_edges, magnitude.size) - 1]
    return float(value) if value > 0 else float(np.nextafter(0.0, 1.0))


def causal_f1(pred, true, eps: float = CAUSAL_EPS, pred_eps: float | str = "matched") -> float:
    """Macro-F1 over the sign classes −1 / 0 / +1 of prediction and truth.

    As ``sklearn.metrics.f1_score(average="macro")``: averaged over the classes that occur in
    either the truth or the prediction; a class with no true and no correct predicted entry
    scores 0.

    Parameters
    ----------
    pred, true : array or DataFrame [genes, genes]
    eps : float
        Dead zone of the true sign classes.
    pred_eps : "matched" or float
        Dead zone of the predicted sign classes. ``"matched"`` (default): as many predicted
        entries are nonzero as the truth has edges (|true| ≥ ``eps``), the largest |values| — a
        threshold relative to the prediction's own scale, so F1 does not depend on its units. A
        number: an absolute dead zone (``pred_eps=eps`` is the scale-dependent definition).
    """
    p, t = _off_diagonal(pred, true)
    tc = sign_classes(t, eps)
    if isinstance(pred_eps, str):
        if pred_eps != "matched":
            raise MetricInputError(f"pred_eps must be 'matched' or a number, got {pred_eps!r}.")
        pred_eps = matched_eps(p, int(np.count_nonzero(tc)))
    pc = sign_classes(p, pred_eps)
    f1s = []
    for c in np.union1d(pc, tc):
        tp = np.sum((pc == c) & (tc == c))
        f1s.append(2 * tp / (np.sum(pc == c) + np.sum(tc == c)))
    return float(np.mean(f1s))


def causal_metrics(
    pred, true, eps: float = CAUSAL_EPS, pred_eps: float | str = "matched"
) -> dict[str, float]:
    """``causal_auroc``, ``causal_pearson`` and ``causal_f1`` of one estimated matrix.

    Parameters
    ----------
    pred : array or DataFrame [genes, genes]
        Estimated effects (e.g. ``lc.tl.clipr`` output), row = source, column = target.
    true : array or DataFrame [genes, genes]
        Ground truth (e.g. ``adata.varp["causal_matrix"]`` of a simulated screen).
    eps : float
        Dead zone of the true sign classes.
    pred_eps : "matched" or float
        Dead zone of the predicted sign classes for ``causal_f1`` (see :func:`causal_f1`).
    """
    return {
        "causal_auroc": causal_auroc(pred, true, eps),
        "causal_pearson": causal_pearson(pred, true),
        "causal_f1": causal_f1(pred, true, eps, pred_eps),
    }
