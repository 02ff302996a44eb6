"""Baselines with the ``fit(screen, split)`` / ``predict(labels, n_cells)`` interface of LCD."""

from lcdiff.eval.baselines import (  # noqa: F401
    ALIASES,
    METHODS,
    AdditiveBaseline,
    Baseline,
    ControlBaseline,
    CpaBaseline,
    GearsBaseline,
    LCDMethod,
    LinearBaseline,
    MeanBaseline,
    PeperBaseline,
    PooledBaseline,
    get,
    training_data,
)
