"""Small synthetic count screens for the data-layer tests (no dependency on the simulators)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def count_screen(
    n_genes: int = 60,
    n_perturbed: int = 8,
    n_doubles: int = 6,
    cells_per_condition: int = 40,
    control_cells: int = 200,
    sparse: bool = False,
    dtype=np.float32,
    seed: int = 0,
) -> ad.AnnData:
    """Negative-binomial counts; perturbing gene j raises j and lowers the next gene.

    Genes are named ``G00``...; the first ``n_perturbed`` are targeted as singles, doubles pair
    neighbouring targets. Control label ``"ctrl"`` in ``obs["perturbation"]``.
    """
    rng = np.random.default_rng(seed)
    genes = [f"G{i:02d}" for i in range(n_genes)]
    base = rng.gamma(2.0, 2.0, size=n_genes) + 0.5
    singles = genes[:n_perturbed]
    pairs = [
        (singles[i], singles[i + gap])
        for gap in range(1, n_perturbed)
        for i in range(n_perturbed - gap)
    ]
    doubles = [f"{a}+{b}" for a, b in pairs[:n_doubles]]
    labels, blocks = [], []
    for label in ["ctrl", *singles, *doubles]:
        n = control_cells if label == "ctrl" else cells_per_condition
        mean = base.copy()
        if label != "ctrl":
            for g in label.split("+"):
                j = genes.index(g)
                mean[j] *= 6.0
                mean[(j + n_perturbed) % n_genes] *= 0.2
        lib = rng.lognormal(0.0, 0.3, size=(n, 1))
        p = 5.0 / (5.0 + mean * lib)
        blocks.append(rng.negative_binomial(5.0, p))
        labels += [label] * n
    x = np.vstack(blocks).astype(dtype)
    obs = pd.DataFrame(
        {"perturbation": labels, "batch": rng.integers(0, 2, len(labels)).astype(str)},
        index=[f"cell{i:05d}" for i in range(len(labels))],
    )
    return ad.AnnData(X=sp.csr_matrix(x) if sparse else x, obs=obs, var=pd.DataFrame(index=genes))
