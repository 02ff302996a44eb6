"""Typed exceptions raised by lcdiff.

Every error raised at a boundary (AnnData in, files in, command-line arguments) is a subclass
of :class:`LcdiffError`. Messages say what was wrong *and* how to fix it. Most classes also
derive from a built-in exception (``ValueError``, ``KeyError``, ...) so that generic handlers
keep working.

Messages are phrased for Python users (keyword arguments such as ``control=``). The command
line shows them in its own terms: an error or warning may carry the same message phrased with
flags (``cli=``), and :func:`cli_text` translates the keyword arguments that have a flag
(:data:`CLI_FLAGS`) in messages that do not; :func:`cli_message` picks whichever applies.
"""

from __future__ import annotations

import re

#: Keyword arguments of the Python API that have a command-line flag of the same meaning.
CLI_FLAGS: dict[str, str] = {
    "perturbation_key": "--perturbation-key",
    "control": "--control",
    "layer": "--layer",
    "n_genes": "--n-genes",
    "min_cells_per_perturbation": "--min-cells",
    "min_cells": "--min-cells",
    "preset": "--preset",
    "seed": "--seed",
    "n_cells": "--n-cells",
    "force": "--force",
    "anneal_steps": "--anneal-steps",
    "anneal_dt": "--anneal-dt",
    "methods": "--methods",
    "folds": "--folds",
    "tikhonov": "--tikhonov",
    "reference": "--reference",
    "solver": "--solver",
}


class LcdiffError(Exception):
    """Base class of every error lcdiff raises on purpose.

    Parameters
    ----------
    *args
        The message (phrased for Python users) and any further arguments.
    cli
        The same message phrased for command-line users (flags instead of keyword arguments);
        by default the command line shows :func:`cli_text` of the message.
    """

    def __init__(self, *args, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli


class LcdiffWarning(UserWarning):
    """A warning of lcdiff; like :class:`LcdiffError` it may carry a ``cli`` phrasing."""

    def __init__(self, *args, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli


def _flag_value(flag: str, value: str) -> str:
    if value == "True":
        return flag
    if value == "None":
        return f"no {flag}"
    return f"{flag} {value}"


def cli_text(text: str) -> str:
    """``text`` with the keyword arguments of :data:`CLI_FLAGS` written as flags.

    ``lc.pp.prepare(..., n_genes=...)`` → ``--n-genes N``; ``layer="counts"`` →
    ``--layer counts``; ``control=<label>`` → ``--control <label>``; ``force=True`` →
    ``--force``; ``layer=None`` → ``no --layer``; ``n_genes <= 3`` → ``--n-genes <= 3``. Other
    text is left as it is.
    """
    names = "|".join(sorted(map(re.escape, CLI_FLAGS), key=len, reverse=True))

    def call(match: re.Match) -> str:
        return f"{CLI_FLAGS[match.group(1)]} N"

    text = re.sub(rf"lc\.\w+\.\w+\(\.\.\., ({names})=\.\.\.\)", call, text)

    def keyword(match: re.Match) -> str:
        flag = CLI_FLAGS[match.group(1)]
        value = match.group(2)
        if value[:1] in "\"'" and len(value) >= 2:
            value = value[1:-1]
        return _flag_value(flag, value)

    value = r"(\"[^\"]*\"|'[^']*'|<[^>]*>|\.\.\.|[\w.+-]+)"
    text = re.sub(rf"(?<![\w.])({names})={value}", keyword, text)
    # "n_genes <= 300" → "--n-genes <= 300"
    return re.sub(
        rf"(?<![\w.-])({names})(?= ?(?:<=|>=|<|>|≤|≥) )", lambda m: CLI_FLAGS[m.group(1)], text
    )


def cli_message(error: BaseException) -> str:
    """How the command line shows an error or warning: its ``cli`` phrasing if it has one,
    else :func:`cli_text` of its message."""
    cli = getattr(error, "cli", None)
    return cli if cli else cli_text(str(error))


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


class NonFiniteOutputError(LcdiffError, FloatingPointError):
    """A result about to be returned or written holds NaN or infinite values; the message names
    the quantity (predicted states or counts, an effect matrix, a metric)."""


# --- evaluation ----------------------------------------------------------------------------
class MetricInputError(LcdiffError, ValueError):
    """Arrays given to a metric cannot be compared (shapes, labels, too few cells, NaN/inf)."""
