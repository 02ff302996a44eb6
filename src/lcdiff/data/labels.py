"""Perturbation labels: parsing and the canonical form.

A label names the set of genes perturbed in a condition. The canonical form joins the gene
names, sorted, with ``"+"`` (``"GATA1+KLF1"``); the control has its own label (``"ctrl"`` by
default). Combinations of any size are legal. GEARS/CPA-style labels that pad a single with the
control token (``"A+ctrl"``, ``"ctrl+A"``) are read as the single ``"A"``.
"""

from __future__ import annotations

from collections.abc import Iterable

from lcdiff.errors import InvalidLabelError

SEPARATOR = "+"
DEFAULT_CONTROL = "ctrl"


def parse_label(label: str, control: str = DEFAULT_CONTROL) -> tuple[str, ...]:
    """Split a perturbation label into its sorted, distinct target genes.

    Parameters
    ----------
    label
        A label such as ``"A"``, ``"A+B"``, ``"B+A"`` or ``"A+ctrl"``.
    control
        The control label; it parses to the empty tuple, and inside a combination it is ignored
        (GEARS writes singles as ``"A+ctrl"``).

    Returns
    -------
    The target genes, sorted and without duplicates; ``()`` for the control.

    Raises
    ------
    InvalidLabelError
        For a non-string, an empty label, surrounding whitespace, or an empty part (``"A++B"``).
    """
    if not isinstance(label, str):
        raise InvalidLabelError(
            f"Perturbation label {label!r} is not a string; labels look like 'A' or 'A+B'."
        )
    if label == "":
        raise InvalidLabelError(
            "Empty perturbation label; give control cells the control label "
            f"(e.g. {control!r}) and perturbed cells labels like 'A' or 'A+B'."
        )
    if label != label.strip():
        raise InvalidLabelError(
            f"Perturbation label {label!r} has surrounding whitespace; strip it, e.g. "
            "adata.obs[key] = adata.obs[key].str.strip()."
        )
    if label == control:
        return ()
    parts = label.split(SEPARATOR)
    if any(p.strip() == "" for p in parts) or any(p != p.strip() for p in parts):
        raise InvalidLabelError(
            f"Perturbation label {label!r} has an empty or padded gene name; join target genes "
            "with a single '+' and no spaces, e.g. 'A+B'."
        )
    genes = sorted({p for p in parts if p != control})
    return tuple(genes)


def format_label(genes: Iterable[str], control: str = DEFAULT_CONTROL) -> str:
    """Canonical label of a set of target genes (sorted, ``"+"``-joined; control if empty)."""
    genes = sorted(set(genes))
    return SEPARATOR.join(genes) if genes else control


def canonical_label(label: str, control: str = DEFAULT_CONTROL) -> str:
    """Rewrite a label into canonical form (``"B+A"`` → ``"A+B"``, ``"A+ctrl"`` → ``"A"``)."""
    return format_label(parse_label(label, control), control)


def n_targets(label: str, control: str = DEFAULT_CONTROL) -> int:
    """Number of target genes of a label (0 for the control)."""
    return len(parse_label(label, control))
