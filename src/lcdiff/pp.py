"""Preprocessing: ``validate``, ``prepare``, ``split`` and ``assign_perturbations``."""

# Each helper module adds its public names here.
from lcdiff.data.assign import assign_perturbations  # noqa: F401
from lcdiff.data.preprocess import prepare  # noqa: F401
from lcdiff.data.schema import validate  # noqa: F401
from lcdiff.data.splits import Split, paper_folds, split  # noqa: F401
