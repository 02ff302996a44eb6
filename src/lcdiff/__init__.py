"""lcdiff: latent causal diffusions (LCD) and CLIPR for single-cell perturbation screens.

Usage follows scanpy's conventions::

    import lcdiff as lc
    adata = lc.datasets.toy_screen()
    screen = lc.pp.prepare(adata, perturbation_key="perturbation", control="ctrl")
    model = lc.LCD(screen, preset="fast").fit()
    pred = model.predict(["G001+G002"], n_cells=1000)
    effects = lc.tl.clipr(model)

Submodules are imported on first use, so ``import lcdiff`` stays fast and does not import JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

_SUBMODULES = {
    "pp",  # preprocessing: validate, prepare, split, assign_perturbations
    "tl",  # tools: clipr and its downstream analyses
    "pl",  # plots
    "datasets",  # embedded and real-data loaders
    "simulate",  # simulators with known ground truth
    "causal",  # CLIPR solvers and downstream analyses
    "eval",  # metrics and the benchmark runner
    "baselines",  # simple reference models
    "errors",
    "report",
    "demo",  # the end-to-end demo behind `lcdiff demo`
}

if TYPE_CHECKING:  # pragma: no cover
    from lcdiff.model.lcd import LCD


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"lcdiff.{name}")
    if name == "LCD":
        from lcdiff.model.lcd import LCD

        return LCD
    raise AttributeError(f"module 'lcdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES) + ["LCD"])


__all__ = ["LCD", "__version__", *sorted(_SUBMODULES)]
