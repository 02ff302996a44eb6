"""Contract test runner: plays the runner's side of lcdiff's peer file contract in tests.

It is *not* a peer method: it echoes resampled control cells of ``input.h5ad`` for every query
(which is enough to check lcdiff's side of the contract: labels, genes, scale conversion, error
handling), and ``settings["mode"]`` makes it break the contract on purpose. Like a real runner
it imports only numpy/pandas/anndata and the runners' shared helper, never lcdiff.
"""

import json
import os
import sys
import time

import anndata
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src", "lcdiff", "peers"))
import _runner_common  # noqa: E402


def run(workdir, request):
    mode = request["settings"].get("mode", "ok")
    scale = request["settings"].get("scale", "counts")
    if mode == "error":
        raise RuntimeError("contract test runner failed on purpose")
    if mode == "crash":
        os._exit(3)
    if mode == "sleep":
        time.sleep(30)
    adata = anndata.read_h5ad(request["input"])
    ctrl = adata[adata.obs["condition"].astype(str) == "ctrl"]
    x_ctrl = ctrl.X.toarray() if hasattr(ctrl.X, "toarray") else np.asarray(ctrl.X)
    rng = np.random.default_rng(request["seed"])
    n = request["n_cells"] - (1 if mode == "too_few" else 0)
    blocks, labels = [], []
    for q in request["queries"]:
        blocks.append(x_ctrl[rng.integers(0, len(x_ctrl), n)])
        labels += [q] * n
    x = np.concatenate(blocks).astype(np.float32)
    if mode == "nan":
        x[0, 0] = np.nan
    if mode == "negative":
        x[0, 0] = -1.0
    genes = list(adata.var_names)
    if mode == "wrong_genes":
        genes = genes[::-1]
    pred = anndata.AnnData(
        X=x,
        obs=pd.DataFrame({"query": labels}, index=[f"p{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes),
    )
    _runner_common.write_h5ad_atomic(pred, os.path.join(workdir, request["output"]))
    out = {
        "version": "0",
        "scale": scale,
        "settings": request["settings"],
        "fit_s": 0.01,
        "predict_s": 0.01,
        "notes": ["contract test runner"],
    }
    if mode == "old_contract":
        with open(os.path.join(workdir, "result.json"), "w") as handle:
            json.dump({**out, "contract": 0, "status": "ok", "peer": "test"}, handle)
        os._exit(0)
    return out


if __name__ == "__main__":
    sys.exit(_runner_common.main(run, "test"))
