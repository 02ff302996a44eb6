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
