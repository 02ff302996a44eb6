"""Atomic file output: a reader sees the old file or the complete new one, never a partial one.

Every writer of lcdiff goes through :func:`atomic_output`: the content is written to a
temporary file in the destination folder, made readable (``mkstemp`` creates owner-only files,
but results are meant to be shared), flushed to disk, then renamed onto the destination with
``os.replace``. On any error the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path
        The destination file; its folder must exist.
    suffix
        Suffix of the temporary file (some writers infer the format from it, e.g. ``".h5ad"``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write an AnnData to ``path`` atomically."""
    with atomic_output(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


# --- output checks ------------------------------------------------------------------------------
def check_finite(values, what: str, fix: str = "", cli: str | None = None) -> None:
    """Refuse to return or write non-finite output.

    Parameters
    ----------
    values
        An array (dense or sparse), or a DataFrame (its numeric columns are checked).
    what
        The quantity, as the message names it (e.g. ``"the CLIPR effect matrix"``).
    fix
        What to do about it (appended to the message).
    cli
        ``fix`` phrased for command-line users, if it differs.

    Raises
    ------
    NonFiniteOutputError
        If any value is NaN or infinite.
    """
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from lcdiff.errors import NonFiniteOutputError

    if isinstance(values, pd.DataFrame):
        values = values.select_dtypes("number").to_numpy(dtype=np.float64)
    elif sp.issparse(values):
        values = values.data
    array = np.asarray(values)
    if array.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    n_nan = int(np.isnan(array).sum())
    problem = (
        f"{what} holds {int(bad.sum())} non-finite values ({n_nan} NaN, "
        f"{int(bad.sum()) - n_nan} infinite) of {array.size}; nothing was written."
    )
    raise NonFiniteOutputError(
        f"{problem} {fix}".strip(), cli=f"{problem} {cli if cli is not None else fix}".strip()
    )


def check_prediction(adata, what: str = "the prediction") -> None:
    """Refuse a prediction AnnData with NaN or infinite values in ``X``, a layer or ``obsm``;
    the message names the matrix and the labels whose cells are affected.

    Raises
    ------
    NonFiniteOutputError
        If any value is NaN or infinite.
    """
    import numpy as np
    import scipy.sparse as sp

    from lcdiff.errors import NonFiniteOutputError

    matrices = {"X": adata.X}
    matrices.update({f"layers[{k!r}]": v for k, v in adata.layers.items()})
    matrices.update({f"obsm[{k!r}]": v for k, v in adata.obsm.items()})
    for name, matrix in matrices.items():
        if matrix is None:
            continue
        if sp.issparse(matrix):
            matrix = matrix.tocsr()
            rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
            bad_rows = np.unique(rows[~np.isfinite(matrix.data)])
        else:
            array = np.asarray(matrix)
            if array.dtype.kind not in "fc":
                continue
            bad = ~np.isfinite(array)
            bad_rows = np.flatnonzero(bad.reshape(len(array), -1).any(axis=1))
        if not len(bad_rows):
            continue
        labels = []
        if "perturbation" in adata.obs:
            labels = sorted(set(adata.obs["perturbation"].astype(str).to_numpy()[bad_rows]))
        which = f" (cells of {labels[:5]}{' ...' if len(labels) > 5 else ''})" if labels else ""
        raise NonFiniteOutputError(
            f"{what}: {name} has NaN or infinite values in {len(bad_rows)} cells{which}; nothing "
            "was written. The method diverged or was given broken settings."
        )
