"""GEARS runner: trains cell-gears on ``input.h5ad`` and predicts the requested perturbations.

Runs inside the GEARS environment (``lcdiff peers install gears``) as
``python gears_runner.py WORKDIR``; imports only GEARS' stack (torch, torch_geometric, gears)
and numpy/pandas/anndata, never lcdiff. The contract (request, input, prediction, result) is
described in ``lcdiff/peers/contract.py``.

Offline: ``request["data_path"]`` already holds ``gene2go_all.pkl`` (GEARS skips its download
when the file exists), ``PertData(..., default_pert_graph=False)`` builds the perturbation
graph from it, and ``./data/go_essential_<dataset>.csv`` (GEARS' GO edge cache) is present.

Compatibility shim: GEARS indexes sparse matrices with boolean pandas Series, which scipy
turns into ``Series.nonzero()``, a method pandas 2 removed; it is restored here (returning the
numpy ``nonzero`` of the values, what pandas 1 returned).
"""

from __future__ import annotations

import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _runner_common  # noqa: E402

sys.path.remove(HERE)  # the runner's folder (lcdiff/peers) must not shadow anything else


def _shim_pandas() -> None:
    import pandas as pd

    if not hasattr(pd.Series, "nonzero"):
        pd.Series.nonzero = lambda self: self.to_numpy().nonzero()


def run(workdir: str, request: dict) -> dict:
    import anndata
    import numpy as np
    import pandas as pd

    _shim_pandas()
    import torch
    from gears import GEARS, PertData
    from gears.utils import create_cell_graph_dataset_for_prediction
    from torch_geometric.loader import DataLoader

    settings = dict(request["settings"])
    train_seed = int(request.get("train_seed", request["seed"]))
    random.seed(train_seed)
    np.random.seed(train_seed)  # noqa: NPY002 - the peer draws from the global generator
    torch.manual_seed(train_seed)

    adata = anndata.read_h5ad(request["input"])
    genes = list(map(str, adata.var_names))
    t0 = time.perf_counter()
    pert_data = PertData(request["data_path"], default_pert_graph=False)
    pert_data.new_data_process(dataset_name=request["dataset_name"], adata=adata)
    pert_data.prepare_split(split="no_test", seed=train_seed)
    notes = []
    s2c = pert_data.set2conditions
    if not s2c.get("val"):
        # GEARS' no_test split draws int(10 % of the perturbations) for validation, which is
        # none below 10 perturbations, and then fails (KeyError 'val'); hold out one instead.
        perts = sorted(c for c in s2c.get("train", []) if c != "ctrl")
        if len(perts) < 2:
            raise ValueError("GEARS needs at least two training perturbations")
        held = str(np.random.default_rng(train_seed).choice(perts))
        s2c["train"] = [c for c in s2c["train"] if c != held]
        s2c["val"] = [held]
        notes.append(f"validation perturbation {held} chosen by lcdiff: GEARS' draw was empty")
    pert_data.get_dataloader(
        batch_size=int(settings["batch_size"]), test_batch_size=int(settings["batch_size"])
    )
    model = GEARS(pert_data, device="cpu")
    k = int(settings["num_genes_graph"])
    model.model_initialize(
        hidden_size=int(settings["hidden_size"]),
        num_go_gnn_layers=int(settings["gnn_layers"]),
        num_gene_gnn_layers=int(settings["gnn_layers"]),
        num_similar_genes_go_graph=k,
        num_similar_genes_co_express_graph=k,
        coexpress_threshold=float(settings["coexpress_threshold"]),
    )
    model.train(
        epochs=int(settings["epochs"]),
        lr=float(settings["lr"]),
        weight_decay=float(settings["weight_decay"]),
    )
    fit_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    seed = int(request["seed"])
    np.random.seed(seed)  # noqa: NPY002 - GEARS draws the control cells with np.random
    torch.manual_seed(seed)
    n_cells = int(request["n_cells"])
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"]
    best = model.best_model.to("cpu")
    best.eval()
    blocks, labels = [], []
    pert_list = model.pert_list
    missing = sorted(
        {g for q in request["queries"] for g in q.split("+") if g != "ctrl"} - set(pert_list)
    )
    if missing:
        raise ValueError(f"genes {missing} are not in GEARS' perturbation graph")
    for query in request["queries"]:
        targets = [g for g in query.split("+") if g != "ctrl"]
        graphs = create_cell_graph_dataset_for_prediction(
            targets, ctrl, pert_list, "cpu", num_samples=n_cells
        )
        out = []
        with torch.no_grad():
            for batch in DataLoader(graphs, batch_size=512, shuffle=False):
                pred = best(batch)
                if isinstance(pred, tuple):  # uncertainty mode returns (mean, logvar)
                    pred = pred[0]
                out.append(pred.detach().cpu().numpy().reshape(-1, len(genes)))
        blocks.append(np.concatenate(out, axis=0))
        labels.extend([query] * n_cells)
    x = np.concatenate(blocks, axis=0).astype(np.float32)
    pred = anndata.AnnData(
        X=x,
        obs=pd.DataFrame({"query": labels}, index=[f"p{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes),
    )
    _runner_common.write_h5ad_atomic(pred, os.path.join(workdir, request["output"]))
    predict_s = time.perf_counter() - t1

    from importlib.metadata import version

    import gears as gears_pkg

    val = pert_data.set2conditions.get("val", [])
    return {
        "version": version("cell-gears"),
        "scale": "log1p_cp10k",
        "settings": {
            **settings,
            "device": "cpu",
            "split": "no_test",
            "torch_threads": torch.get_num_threads(),
        },
        "fit_s": fit_s,
        "predict_s": predict_s,
        "notes": [
            f"GEARS {getattr(gears_pkg, '__version__', version('cell-gears'))}, torch "
            f"{torch.__version__}, CPU with {torch.get_num_threads()} threads",
            f"perturbation graph: {len(pert_list)} genes with GO terms",
            f"GEARS kept {len(val)} training perturbation(s) for model selection (no_test split)",
            *notes,
        ],
    }


if __name__ == "__main__":
    sys.exit(_runner_common.main(run, "gears"))
