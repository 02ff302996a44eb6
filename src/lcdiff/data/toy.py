"""The embedded default screen: a small, fixed simulated Perturb-seq screen built offline.

``toy_screen()`` is what the demo, the docs and the tests use when no real data is at hand. It
is :func:`lcdiff.data.simulate.screen` with fixed settings and seed, so it is identical on
every machine; it is built on first use (a few seconds of CPU) and kept in memory.
"""

from __future__ import annotations

from functools import lru_cache

from anndata import AnnData

from lcdiff.data.simulate import screen

#: The settings of the embedded screen (every other setting is the simulator's default).
TOY_SETTINGS = {
    "n_genes": 100,
    "n_perturbed": 25,
    "n_doubles": 40,
    "cells_per_condition": 250,
    "control_cells": 500,
    "observation": "nb",
    "mean_library_size": 3000.0,
    "seed": 0,
}


@lru_cache(maxsize=1)
def _build() -> AnnData:
    return screen(**TOY_SETTINGS)


def toy_screen() -> AnnData:
    """The embedded default screen (raw counts, unprepared).

    100 genes (``G001`` ... ``G100``), 25 perturbed genes, each with a single, and 40 doubles
    (half chosen for interaction, half at random); 250 cells per perturbation and 500 control
    cells (16,750 cells); raw negative-binomial counts with library sizes of about 700–10,000;
    control label ``"ctrl"``. Ground truth as in :func:`lcdiff.simulate.screen`:
    ``varp["causal_matrix"]`` (Jacobian of the latent drift at control, row = source,
    column = target), ``obsm["latent"]`` and ``uns["simulation"]`` (network, shifts, fixed
    points, the additivity report: 13 of the 40 doubles are non-additive beyond sampling noise
    on log1p CP10k means).

    Built on first call from :data:`TOY_SETTINGS` (a few seconds), then cached; every call
    returns an independent copy.

    Returns
    -------
    AnnData ``[16750, 100]``: ``X`` integer counts (float32), ``obs["perturbation"]``.

    Examples
    --------
    >>> import lcdiff as lc
    >>> adata = lc.datasets.toy_screen()
    >>> screen = lc.pp.prepare(adata, perturbation_key="perturbation", control="ctrl")
    """
    return _build().copy()
