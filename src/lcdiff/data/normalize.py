"""Count normalization shared by every component: log1p of counts per 10,000."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4


def log1p_cp10k(counts, target_sum: float = TARGET_SUM) -> np.ndarray:
    """log1p of counts scaled to ``target_sum`` per cell.

    The library size is the sum over the genes given (the modelled genes), as in the reference
    evaluation. A cell with zero library size is left unscaled (it stays all zeros).

    Parameters
    ----------
    counts
        ``[n_cells, n_genes]`` counts, dense or scipy sparse.
    target_sum
        Counts per cell after scaling (default 10,000).

    Returns
    -------
    Dense ``float32`` array ``[n_cells, n_genes]``.
    """
    x = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    x = x.astype(np.float64, copy=False)
    lib = x.sum(axis=1, keepdims=True)
    scale = np.where(lib > 0, target_sum / np.where(lib > 0, lib, 1.0), 1.0)
    return np.log1p(x * scale).astype(np.float32)


def dense(x) -> np.ndarray:
    """A dense ``numpy`` view of a dense or sparse matrix."""
    return x.toarray() if sp.issparse(x) else np.asarray(x)
