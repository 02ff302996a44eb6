"""Helpers shared by the peer runners (run inside a peer environment; standard library only).

This file is imported by ``gears_runner.py`` and ``cpa_runner.py`` as a sibling module, never
through the ``lcdiff`` package, which is not installed in a peer environment. It implements the
runner's side of the file contract described in :mod:`lcdiff.peers.contract`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

CONTRACT_VERSION = 1


def write_json_atomic(path: str, data: dict) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".result.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_h5ad_atomic(adata, path: str) -> None:
    """Write an AnnData to ``path`` through a temporary file and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".prediction.", suffix=".h5ad")
    os.close(fd)
    adata.write_h5ad(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(run, peer: str) -> int:
    """Run ``run(workdir, request) -> result dict`` and write ``result.json`` either way.

    Returns the process exit code (0 on success, 1 on error).
    """
    workdir = os.path.abspath(sys.argv[1])
    os.chdir(workdir)
    result_path = os.path.join(workdir, "result.json")
    try:
        with open(os.path.join(workdir, "request.json")) as handle:
            request = json.load(handle)
        if request.get("contract") != CONTRACT_VERSION:
            raise ValueError(
                f"request.json speaks contract {request.get('contract')!r}; this runner speaks "
                f"{CONTRACT_VERSION} (reinstall the peer environment with the same lcdiff)"
            )
        started = time.perf_counter()
        result = run(workdir, request)
        result.update(
            {
                "contract": CONTRACT_VERSION,
                "status": "ok",
                "peer": peer,
                "runner_s": time.perf_counter() - started,
            }
        )
        write_json_atomic(result_path, result)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure is reported through the file
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()
        write_json_atomic(
            result_path,
            {
                "contract": CONTRACT_VERSION,
                "status": "error",
                "peer": peer,
                "error": message[0] if message else type(exc).__name__,
                "traceback": traceback.format_exc(),
            },
        )
        return 1
