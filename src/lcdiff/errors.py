"""Typed exceptions raised by lcdiff.

Every error raised at a boundary (AnnData in, files in, command-line arguments) is a subclass
of :class:`LcdiffError`. Messages say what was wrong *and* how to fix it. Most classes also
derive from a built-in exception (``ValueError``, ``KeyError``, ...) so that generic handlers
keep working.
"""

from __future__ import annotations


class LcdiffError(Exception):
    """Base class of every error lcdiff raises on purpose."""


# --- screens (AnnData in) ------------------------------------------------------------------
class ScreenError(LcdiffError, ValueError):
    """A perturbation screen (AnnData) cannot be used as given."""


class MissingColumnError(ScreenError, KeyError):
    """A required ``obs``/``var`` column or layer is absent."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ControlNotFoundError(ScreenError):
    """No cell carries the control label."""


class InvalidCountsError(ScreenError):
    """Counts contain NaN/inf, negative or non-integer values."""


class EmptyScreenError(ScreenError):
    """The screen has no cells, no genes, or only all-zero cells."""


class InvalidLabelError(ScreenError):
    """A perturbation label is malformed (e.g. ``"A++B"`` or an empty gene name)."""


class UnknownGeneError(ScreenError, KeyError):
    """A label names a gene that is not measured (or not modelled)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TooFewCellsError(ScreenError):
    """Too few cells remain for a condition (or for all conditions)."""


class GeneSelectionError(ScreenError):
    """The requested number of genes cannot be selected."""


class NotPreparedError(ScreenError):
    """A function that needs the output of ``lc.pp.prepare`` received a raw AnnData."""


# --- splits --------------------------------------------------------------------------------
class SplitError(LcdiffError, ValueError):
    """A train/test split cannot be built or does not match the screen."""


# --- models --------------------------------------------------------------------------------
class ModelError(LcdiffError):
    """Base class of model errors."""


class NotFittedError(ModelError, RuntimeError):
    """A model was used before ``fit``."""


class TrainingDivergedError(ModelError, FloatingPointError):
    """A loss became non-finite; the message names the stage and step."""


class ModelFileError(ModelError, OSError):
    """A saved model (or checkpoint) is missing, corrupt or of an incompatible version."""


class UnknownPerturbationError(ModelError, KeyError):
    """A queried perturbation cannot be predicted (e.g. a gene the model does not model)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(LcdiffError, ValueError):
    """An unknown preset or an invalid hyperparameter override."""


# --- files and command line ----------------------------------------------------------------
class DataFormatError(LcdiffError, ValueError):
    """A file does not have the expected format or layout."""


class OutputExistsError(LcdiffError, FileExistsError):
    """An output path exists already and ``force`` was not given."""


class DependencyError(LcdiffError, ImportError):
    """An optional dependency (a peer method) is not installed."""


class PeerError(LcdiffError, RuntimeError):
    """A peer method (GEARS, CPA) failed in its own environment, or broke the file contract."""


class InputNotFoundError(LcdiffError, FileNotFoundError):
    """An input file or folder named on the command line (or passed by path) does not exist."""


class OutputNotWritableError(LcdiffError, PermissionError):
    """An output path cannot be created or written (no permission, parent is a file, ...)."""


# --- evaluation ----------------------------------------------------------------------------
class MetricInputError(LcdiffError, ValueError):
    """Arrays given to a metric cannot be compared (shapes, labels, too few cells, NaN/inf)."""
