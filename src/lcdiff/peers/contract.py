"""The file contract between lcdiff and a peer method running in its own environment.

A peer never runs in lcdiff's process. For one job lcdiff fills a work folder and starts the
peer's runner script (``gears_runner.py``, ``cpa_runner.py``) with the peer environment's
interpreter: ``<env>/bin/python <runner> <workdir>``. The runner imports only the peer's own
stack plus numpy, pandas and anndata, never lcdiff.

Version 1 of the contract (``CONTRACT_VERSION``):

``request.json`` (written by lcdiff)
    ``contract`` (= 1), ``peer``, ``input`` (file name of the training AnnData), ``output``
    (file name of the prediction), ``queries`` (labels in the peer's own format), ``n_cells``
    (cells per query), ``seed``, ``settings`` (the peer's hyperparameters) and any
    peer-specific entries (e.g. GEARS' ``data_path``).
``input.h5ad`` (written by lcdiff)
    The training cells in the layout the peer expects (labels already converted); its genes
    (``var_names``) are the genes the prediction must have, in the same order.
``prediction.h5ad`` (written by the runner)
    ``n_cells`` rows per query; ``obs["query"]`` names the query, ``var_names`` equal the input
    genes, ``X`` is dense, finite, on the scale named in ``result.json``.
``result.json`` (written by the runner, last)
    ``contract``, ``status`` (``"ok"`` or ``"error"``), ``peer``, ``version`` (the peer
    package's version), ``scale`` (``"log1p_cp10k"`` or ``"counts"``), ``settings`` (what the
    peer actually ran with), ``fit_s``, ``predict_s``, ``notes`` (list of strings); on error
    ``error`` (one line) and ``traceback``.
``peer.log``
    The runner's stdout and stderr.

A runner that exits without ``result.json``, reports an error, or writes a prediction that
breaks the rules above makes lcdiff raise :class:`~lcdiff.errors.PeerError` with the reason and
the end of ``peer.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from anndata import AnnData

from lcdiff._io import atomic_write_h5ad, atomic_write_text
from lcdiff.errors import PeerError

CONTRACT_VERSION = 1
REQUEST = "request.json"
RESULT = "result.json"
INPUT = "input.h5ad"
OUTPUT = "prediction.h5ad"
LOG = "peer.log"
SCALES = ("log1p_cp10k", "counts")
QUERY_KEY = "query"


def write_job(
    workdir: str | os.PathLike,
    peer: str,
    adata: AnnData,
    queries: Sequence[str],
    n_cells: int,
    seed: int,
    settings: dict,
    **extra,
) -> Path:
    """Write ``input.h5ad`` and ``request.json`` of one job into ``workdir``.

    Parameters
    ----------
    workdir
        An existing folder; earlier results in it are removed.
    peer
        Peer name (``"gears"``, ``"cpa"``).
    adata
        ``[cells, genes]`` training cells in the peer's layout.
    queries
        Labels to predict, in the peer's format.
    n_cells
        Cells per query.
    seed
        Seed of the peer's training and sampling.
    settings
        The peer's hyperparameters (JSON-serialisable).
    **extra
        Peer-specific request entries (JSON-serialisable).

    Returns
    -------
    Path of ``request.json``.
    """
    workdir = Path(workdir)
    for name in (RESULT, OUTPUT):
        (workdir / name).unlink(missing_ok=True)
    atomic_write_h5ad(adata, workdir / INPUT)
    request = {
        "contract": CONTRACT_VERSION,
        "peer": peer,
        "input": INPUT,
        "output": OUTPUT,
        "queries": [str(q) for q in queries],
        "n_cells": int(n_cells),
        "seed": int(seed),
        "settings": settings,
        **extra,
    }
    return atomic_write_text(workdir / REQUEST, json.dumps(request, indent=1) + "\n")


def log_tail(workdir: str | os.PathLike, lines: int = 12) -> str:
    """The last ``lines`` lines of ``peer.log`` (empty when there is none)."""
    path = Path(workdir) / LOG
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def run_job(
    python: str | os.PathLike,
    runner: str | os.PathLike,
    workdir: str | os.PathLike,
    timeout: float | None = None,
    threads: int | None = None,
) -> dict:
    """Run a peer's runner on a prepared work folder and return its ``result.json``.

    Parameters
    ----------
    python
        The peer environment's interpreter.
    runner
        The runner script.
    workdir
        Folder written by :func:`write_job`.
    timeout
        Seconds before the runner is killed (None: no limit).
    threads
        Sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for the runner (None: inherit).

    Raises
    ------
    PeerError
        If the runner times out, exits without a valid ``result.json`` or reports an error.
    """
    workdir = Path(workdir)
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(key, None)  # the peer must see its own environment only, never lcdiff's
    env["PYTHONNOUSERSITE"] = "1"
    if threads is not None:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[key] = str(int(threads))
    started = time.perf_counter()
    with open(workdir / LOG, "w") as log:
        try:
            proc = subprocess.run(
                [str(python), str(runner), str(workdir)],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerError(
                f"The peer runner {Path(runner).name} did not finish within {timeout:.0f} s; "
                f"its log ends with:\n{log_tail(workdir)}"
            ) from exc
    result_path = workdir / RESULT
    if not result_path.is_file():
        raise PeerError(
            f"The peer runner {Path(runner).name} exited with code {proc.returncode} without "
            f"writing {RESULT} (contract v{CONTRACT_VERSION}); its log ends with:\n"
            f"{log_tail(workdir)}"
        )
    try:
        result = json.loads(result_path.read_text())
    except ValueError as exc:
        raise PeerError(f"{result_path} is not valid JSON ({exc}).") from exc
    result.setdefault("wall_s", time.perf_counter() - started)
    check_result(result)
    if result["status"] != "ok":
        raise PeerError(
            f"{result.get('peer', 'the peer')} failed: {result.get('error', 'unknown error')}"
        )
    return result


def check_result(result: dict) -> None:
    """Refuse a ``result.json`` that does not follow the contract.

    Raises
    ------
    PeerError
        For a wrong contract version, a missing key or an unknown status or scale.
    """
    if result.get("contract") != CONTRACT_VERSION:
        raise PeerError(
            f"The peer answered with contract version {result.get('contract')!r}; lcdiff speaks "
            f"version {CONTRACT_VERSION}. Reinstall the peer environment with this lcdiff."
        )
    if result.get("status") not in ("ok", "error"):
        raise PeerError(f"result.json has status {result.get('status')!r}; expected ok or error.")
    if result["status"] == "ok":
        missing = [k for k in ("peer", "version", "scale", "fit_s", "predict_s") if k not in result]
        if missing:
            raise PeerError(f"result.json lacks {missing} (contract v{CONTRACT_VERSION}).")
        if result["scale"] not in SCALES:
            raise PeerError(f"result.json names an unknown scale {result['scale']!r}.")


def read_prediction(
    workdir: str | os.PathLike,
    result: dict,
    queries: Sequence[str],
    genes: Sequence[str],
    n_cells: int,
) -> AnnData:
    """Read and check ``prediction.h5ad``.

    Parameters
    ----------
    workdir
        The job's folder.
    result
        Its ``result.json`` (from :func:`run_job`).
    queries
        The queries of the request; every one must be predicted with ``n_cells`` cells.
    genes
        The input genes, in order.
    n_cells
        Cells per query.

    Returns
    -------
    AnnData ``[len(queries) * n_cells, len(genes)]`` with dense float ``X`` and
    ``obs["query"]``, rows grouped by query in the order of ``queries``.

    Raises
    ------
    PeerError
        When the file is missing or breaks the contract (genes, queries, cell counts, values).
    """
    import anndata

    path = Path(workdir) / OUTPUT
    if not path.is_file():
        raise PeerError(f"The peer reported success but wrote no {OUTPUT}.")
    pred = anndata.read_h5ad(path)
    if list(map(str, pred.var_names)) != list(map(str, genes)):
        raise PeerError(
            f"The peer's prediction has genes {list(pred.var_names[:5])}… ({pred.n_vars}); the "
            f"input had {list(genes[:5])}… ({len(genes)}) in this order."
        )
    if QUERY_KEY not in pred.obs:
        raise PeerError(f"The peer's prediction has no obs[{QUERY_KEY!r}].")
    got = pred.obs[QUERY_KEY].astype(str).to_numpy()
    x = pred.X.toarray() if hasattr(pred.X, "toarray") else np.asarray(pred.X)
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise PeerError("The peer's prediction holds NaN or infinite values.")
    if result.get("scale") == "counts" and np.any(x < 0):
        raise PeerError("The peer's predicted counts are negative.")
    blocks = []
    for q in queries:
        rows = np.flatnonzero(got == str(q))
        if rows.size != int(n_cells):
            raise PeerError(
                f"The peer predicted {rows.size} cells for {q!r}; {int(n_cells)} were requested."
            )
        blocks.append(rows)
    extra = sorted(set(got) - {str(q) for q in queries})
    if extra:
        raise PeerError(f"The peer predicted labels that were not requested: {extra[:5]}.")
    order = np.concatenate(blocks) if blocks else np.zeros(0, dtype=int)
    out = AnnData(X=x[order].astype(np.float32), var=pred.var[[]].copy())
    out.obs[QUERY_KEY] = got[order]
    out.obs_names = [f"peer_{i}" for i in range(out.n_obs)]
    return out
