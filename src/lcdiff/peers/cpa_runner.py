"""CPA runner: trains cpa-tools 0.8.1 on ``input.h5ad`` (counts) and predicts the queries.

Runs inside the CPA environment (``lcdiff peers install cpa``) as
``python cpa_runner.py WORKDIR``; imports only CPA's stack (torch, scvi-tools, cpa) and
numpy/pandas/anndata, never lcdiff. The contract is described in ``lcdiff/peers/contract.py``.

Input layout (written by lcdiff): ``X`` raw counts; ``obs["condition"]`` = ``"ctrl"``, ``"A"``
or ``"A+B"``; ``obs["split"]`` = ``"train"`` / ``"valid"``; ``obs["cell_type"]`` (one value)
and ``obs["smiles"]`` (empty), which CPA's ``setup_anndata`` requires even for genetic
perturbations. Output: CPA's predicted negative-binomial means (counts) for ``n_cells`` control
cells drawn with replacement and relabelled with each query (the paper's reference protocol).
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _runner_common  # noqa: E402

sys.path.remove(HERE)


def run(workdir: str, request: dict) -> dict:
    import anndata
    import cpa
    import numpy as np
    import pandas as pd
    import torch

    settings = dict(request["settings"])
    train_seed = int(request.get("train_seed", request["seed"]))
    np.random.seed(train_seed)  # noqa: NPY002 - the peer draws from the global generator
    torch.manual_seed(train_seed)
    import scvi

    scvi.settings.seed = train_seed

    adata = anndata.read_h5ad(request["input"])
    genes = list(map(str, adata.var_names))
    n_train = adata.n_obs
    # The prediction cells join the AnnData before setup, as CPA's own tutorials do: for each
    # query, n_cells control cells drawn with replacement (seeded), relabelled, split "ood".
    rng = np.random.default_rng(int(request["seed"]))
    n_cells = int(request["n_cells"])
    ctrl_idx = np.flatnonzero(adata.obs["condition"].astype(str).to_numpy() == "ctrl")
    parts = [adata]
    for query in request["queries"]:
        q = adata[rng.choice(ctrl_idx, size=n_cells, replace=True)].copy()
        q.obs["condition"] = query
        q.obs["split"] = "ood"
        q.obs_names = [f"query{len(parts)}_{i}" for i in range(n_cells)]
        parts.append(q)
    adata = anndata.concat(parts, merge="same")
    for key in ("condition", "cell_type", "split", "smiles"):
        adata.obs[key] = adata.obs[key].astype(str)
    t0 = time.perf_counter()
    cpa.CPA.setup_anndata(
        adata,
        perturbation_key="condition",
        control_group="ctrl",
        dosage_key=None,
        smiles_key="smiles",
        is_count_data=True,
        categorical_covariate_keys=["cell_type"],
        max_comb_len=2,
    )
    s = settings
    model_params = {
        "n_latent": int(s["n_latent"]),
        "recon_loss": "nb",
        "doser_type": "linear",
        "n_hidden_encoder": int(s["n_hidden"]),
        "n_layers_encoder": int(s["n_layers"]),
        "n_hidden_decoder": int(s["n_hidden"]),
        "n_layers_decoder": int(s["n_layers"]),
        "use_batch_norm_encoder": True,
        "use_layer_norm_encoder": False,
        "use_batch_norm_decoder": False,
        "use_layer_norm_decoder": True,
        "dropout_rate_encoder": float(s["dropout"]),
        "dropout_rate_decoder": float(s["dropout"]),
        "variational": False,
        "seed": train_seed,
    }
    trainer_params = {
        "n_epochs_kl_warmup": None,
        "n_epochs_pretrain_ae": int(s["n_epochs_pretrain_ae"]),
        "n_epochs_adv_warmup": int(s["n_epochs_adv_warmup"]),
        "n_epochs_mixup_warmup": int(s["n_epochs_mixup_warmup"]),
        "mixup_alpha": float(s["mixup_alpha"]),
        "adv_steps": int(s["adv_steps"]),
        "n_hidden_adv": int(s["n_hidden"]),
        "n_layers_adv": int(s["n_layers"]),
        "use_batch_norm_adv": True,
        "use_layer_norm_adv": False,
        "dropout_rate_adv": float(s["dropout"]),
        "reg_adv": float(s["reg_adv"]),
        "pen_adv": float(s["pen_adv"]),
        "lr": float(s["lr"]),
        "wd": float(s["wd"]),
        "adv_lr": float(s["adv_lr"]),
        "adv_wd": float(s["wd"]),
        "adv_loss": "cce",
        "doser_lr": float(s["lr"]),
        "doser_wd": float(s["wd"]),
        "do_clip_grad": False,
        "gradient_clip_value": 1.0,
        "step_size_lr": int(s["step_size_lr"]),
    }
    has_valid = bool((adata.obs["split"] == "valid").any())
    model = cpa.CPA(
        adata,
        split_key="split",
        train_split="train",
        valid_split="valid" if has_valid else "train",
        test_split="ood",
        **model_params,
    )
    model.train(
        max_epochs=int(s["max_epochs"]),
        use_gpu=False,
        batch_size=int(s["batch_size"]),
        plan_kwargs=trainer_params,
        early_stopping_patience=int(s["early_stopping_patience"]),
        check_val_every_n_epoch=int(s["check_val_every_n_epoch"]),
        save_path=None,
        enable_progress_bar=False,
    )
    fit_s = time.perf_counter() - t0
    epochs_run = None
    try:
        epochs_run = int(pd.DataFrame(model.epoch_history)["epoch"].max()) + 1
    except (AttributeError, KeyError, TypeError, ValueError):
        pass  # the history is informative only

    t1 = time.perf_counter()
    # cpa-tools 0.8.1 stores predictions for every row of the AnnData (obsm), so it predicts
    # all rows; only the query rows are kept.
    model.predict(adata, batch_size=2048)
    x = np.asarray(adata.obsm["CPA_pred"], dtype=np.float32)[n_train:]
    labels = adata.obs["condition"].to_numpy()[n_train:].tolist()
    pred = anndata.AnnData(
        X=x,
        obs=pd.DataFrame({"query": labels}, index=[f"p{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes),
    )
    _runner_common.write_h5ad_atomic(pred, os.path.join(workdir, request["output"]))
    predict_s = time.perf_counter() - t1

    from importlib.metadata import version

    return {
        "version": version("cpa-tools"),
        "scale": "counts",
        "settings": {
            **settings,
            "device": "cpu",
            "recon_loss": "nb",
            "doser_type": "linear",
            "variational": False,
            "torch_threads": torch.get_num_threads(),
            "epochs_run": epochs_run,
        },
        "fit_s": fit_s,
        "predict_s": predict_s,
        "notes": [
            f"cpa-tools {version('cpa-tools')}, scvi-tools {scvi.__version__}, torch "
            f"{torch.__version__}, CPU with {torch.get_num_threads()} threads",
            f"trained {epochs_run} epoch(s) (max {s['max_epochs']}, early stopping patience "
            f"{s['early_stopping_patience']} on validation every {s['check_val_every_n_epoch']})",
        ],
    }


if __name__ == "__main__":
    sys.exit(_runner_common.main(run, "cpa"))
