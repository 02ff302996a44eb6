"""Train/test splits of perturbations (``lc.pp.split``, ``lc.pp.paper_folds``).

The ``"paper"`` scheme is the reference protocol (lcd-evaluation §2.5):

1. ``numpy.random.default_rng(seed)`` permutes the non-control labels (taken in sorted order);
2. every single goes to training;
3. the first ``n_val`` combinations (in permuted order) are the validation pool, the rest the
   cross-validation pool, cut into ``n_folds`` contiguous chunks (``numpy.array_split``);
4. fold ``f`` (1-based) tests chunk ``f`` and trains on the validation pool plus the other chunks;
   fold ``"val"`` trains on the first half of the validation pool and tests the second half;
5. with ``heldout_singles``, those singles are permuted by the same generator, removed from
   training, cut into ``n_folds`` chunks, and chunk ``f`` joins the test set;
6. test combinations with a gene that no training perturbation targets are dropped.

``"random"`` holds out a seeded random fraction of the combinations; ``"custom"`` takes the test
labels from the user.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anndata import AnnData

from lcdiff._io import atomic_write_text
from lcdiff.data.labels import canonical_label, parse_label
from lcdiff.data.screen import PERTURBATION_KEY, control_label
from lcdiff.errors import SplitError

SCHEMES = ("paper", "random", "custom")
_JSON_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Which perturbations train and which test.

    Attributes
    ----------
    train
        Canonical training labels, control first, then by (number of targets, name).
    test
        Canonical test labels, by (number of targets, name); never the control.
    remaining
        Labels in the screen that are neither trained nor tested (singles, e.g. held-out singles
        of other folds), useful to complete genetic-interaction triplets.
    scheme
        ``"paper"``, ``"random"`` or ``"custom"``.
    fold
        ``"val"`` or ``1..n_folds`` for the paper scheme, ``None`` otherwise.
    seed
        Seed of the permutation.
    dropped
        Test combinations dropped because a target gene is not trained.
    control
        The control label.
    """

    train: tuple[str, ...]
    test: tuple[str, ...]
    remaining: tuple[str, ...] = ()
    scheme: str = "custom"
    fold: int | str | None = None
    seed: int = 0
    dropped: tuple[str, ...] = ()
    control: str = "ctrl"

    def to_json(self) -> str:
        """The split as a JSON string (``Split.from_json`` reads it back)."""
        return json.dumps(
            {
                "version": _JSON_VERSION,
                "scheme": self.scheme,
                "fold": self.fold,
                "seed": self.seed,
                "control": self.control,
                "train": list(self.train),
                "test": list(self.test),
                "remaining": list(self.remaining),
                "dropped": list(self.dropped),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Split:
        """Read a split written by :meth:`to_json`.

        Raises
        ------
        SplitError
            If the text is not such a JSON document.
        """
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise SplitError(f"Not a split JSON document: {err}") from None
        required = {"scheme", "fold", "seed", "train", "test"}
        if not isinstance(data, dict) or not required <= set(data):
            raise SplitError(
                f"A split JSON document needs the keys {sorted(required)}; got "
                f"{sorted(data) if isinstance(data, dict) else type(data).__name__}. Write it "
                "with Split.to_json() or Split.save()."
            )
        return cls(
            train=tuple(data["train"]),
            test=tuple(data["test"]),
            remaining=tuple(data.get("remaining", ())),
            scheme=str(data["scheme"]),
            fold=data["fold"],
            seed=int(data["seed"]),
            dropped=tuple(data.get("dropped", ())),
            control=str(data.get("control", "ctrl")),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the split as JSON (atomically: a temporary file, then a rename)."""
        path = Path(path)
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        """Read a split saved with :meth:`save`."""
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise SplitError(f"Cannot read the split file {str(path)!r}: {err}") from None
        return cls.from_json(text)

    def subset(self, screen: AnnData, part: str = "train") -> AnnData:
        """Cells of the ``"train"``, ``"test"`` or ``"remaining"`` conditions (a copy).

        Raises
        ------
        SplitError
            For an unknown part, or if none of its labels has cells in the screen.
        """
        if part not in ("train", "test", "remaining"):
            raise SplitError(f"part must be 'train', 'test' or 'remaining', got {part!r}.")
        labels = getattr(self, part)
        mask = screen.obs[PERTURBATION_KEY].astype(str).isin(labels).to_numpy()
        if labels and not mask.any():
            raise SplitError(
                f"None of the {len(labels)} {part} labels of this split has cells in the screen "
                f"(e.g. {list(labels[:3])}); was the split made for another screen?"
            )
        return screen[mask].copy()


def split(
    screen: AnnData | Iterable[str],
    scheme: str = "paper",
    fold: int | str | None = 1,
    n_folds: int = 10,
    n_val: int = 20,
    seed: int = 0,
    test: Iterable[str] | None = None,
    heldout_singles: Iterable[str] | None = None,
    test_fraction: float = 0.2,
    control: str | None = None,
) -> Split:
    """Split the perturbations of a screen into training and test sets.

    Parameters
    ----------
    screen
        A prepared screen (labels from ``obs["perturbation"]``, control from ``uns["lcdiff"]``),
        or any iterable of labels (then ``control`` names the control, default ``"ctrl"``).
    scheme
        ``"paper"`` (the reference cross-validation), ``"random"`` or ``"custom"``.
    fold
        Paper scheme: ``"val"`` or ``1..n_folds``.
    n_folds, n_val
        Paper scheme: number of folds and size of the validation pool of combinations.
    seed
        Seed of ``numpy.random.default_rng`` (paper and random schemes).
    test
        Custom scheme: the test labels (any label form; canonicalized).
    heldout_singles
        Paper scheme: singles (labels or gene names) to hold out across the folds.
    test_fraction
        Random scheme: fraction of the combinations held out.
    control
        Control label when ``screen`` is a list of labels.

    Returns
    -------
    Split

    Raises
    ------
    SplitError
        Unknown scheme or fold, unknown test labels, or an empty test set.
    """
    ctrl, labels = _labels_of(screen, control)
    if scheme == "paper":
        return _paper_split(labels, ctrl, fold, n_folds, n_val, seed, heldout_singles)
    if scheme == "random":
        return _random_split(labels, ctrl, seed, test_fraction)
    if scheme == "custom":
        if test is None:
            raise SplitError("scheme='custom' needs test=[labels to hold out].")
        return _custom_split(labels, ctrl, test, seed)
    raise SplitError(f"Unknown split scheme {scheme!r}; choose one of {list(SCHEMES)}.")


def paper_folds(
    screen: AnnData | Iterable[str],
    n_folds: int = 10,
    n_val: int = 20,
    seed: int = 0,
    heldout_singles: Iterable[str] | None = None,
    include_val: bool = True,
    control: str | None = None,
) -> list[Split]:
    """All folds of the paper scheme: ``"val"`` (if ``include_val``), then ``1..n_folds``."""
    folds: list[int | str] = (["val"] if include_val else []) + list(range(1, n_folds + 1))
    ctrl, labels = _labels_of(screen, control)
    return [_paper_split(labels, ctrl, f, n_folds, n_val, seed, heldout_singles) for f in folds]


# --- helpers ----------------------------------------------------------------------------------
def _labels_of(screen, control: str | None) -> tuple[str, list[str]]:
    """(control label, sorted distinct canonical labels including the control)."""
    if isinstance(screen, AnnData):
        ctrl = control_label(screen) if control is None else control
        raw = screen.obs[PERTURBATION_KEY].astype(str).unique()
    else:
        if isinstance(screen, str):
            raise SplitError("Pass a prepared screen or a list of labels, not a single string.")
        ctrl = "ctrl" if control is None else control
        raw = list(screen)
    labels = sorted({canonical_label(str(lab), ctrl) for lab in raw})
    return ctrl, labels


def _sort_labels(labels: Iterable[str], ctrl: str) -> tuple[str, ...]:
    return tuple(sorted(set(labels), key=lambda lab: (len(parse_label(lab, ctrl)), lab)))


def _covered(label: str, ctrl: str, trained_genes: set[str]) -> bool:
    return set(parse_label(label, ctrl)) <= trained_genes


def _assemble(
    labels: list[str],
    ctrl: str,
    train: Iterable[str],
    test: Iterable[str],
    scheme: str,
    fold,
    seed: int,
    drop_uncovered: bool,
) -> Split:
    train = set(train)
    has_control = ctrl in labels
    trained_genes = {g for lab in train for g in parse_label(lab, ctrl)}
    test = set(test) - train
    dropped = set()
    if drop_uncovered:
        dropped = {
            lab
            for lab in test
            if len(parse_label(lab, ctrl)) > 1 and not _covered(lab, ctrl, trained_genes)
        }
        test -= dropped
    if not test:
        raise SplitError(
            f"The {scheme} split (fold {fold!r}) has no test perturbations"
            + (f" ({len(dropped)} dropped: their genes are not trained)" if dropped else "")
            + "; use fewer folds, a smaller n_val, or scheme='custom'."
        )
    singles = {lab for lab in labels if len(parse_label(lab, ctrl)) == 1}
    remaining = singles - train - test
    train_sorted = ((ctrl,) if has_control else ()) + _sort_labels(train - {ctrl}, ctrl)
    return Split(
        train=train_sorted,
        test=_sort_labels(test, ctrl),
        remaining=_sort_labels(remaining, ctrl),
        scheme=scheme,
        fold=fold,
        seed=int(seed),
        dropped=_sort_labels(dropped, ctrl),
        control=ctrl,
    )


def _paper_split(labels, ctrl, fold, n_folds, n_val, seed, heldout_singles) -> Split:
    if not isinstance(n_folds, int) or n_folds < 1 or not isinstance(n_val, int) or n_val < 0:
        raise SplitError(f"n_folds must be >= 1 and n_val >= 0, got {n_folds} and {n_val}.")
    if fold != "val" and not (
        isinstance(fold, int | np.integer) and not isinstance(fold, bool) and 1 <= fold <= n_folds
    ):
        raise SplitError(f"fold must be 'val' or an integer in 1..{n_folds}, got {fold!r}.")
    fold = fold if fold == "val" else int(fold)
    rng = np.random.default_rng(seed)
    permuted = [str(x) for x in rng.permutation(np.array([lab for lab in labels if lab != ctrl]))]
    singles = [lab for lab in permuted if len(parse_label(lab, ctrl)) == 1]
    combos = [lab for lab in permuted if len(parse_label(lab, ctrl)) > 1]
    val_pool, cv_pool = combos[:n_val], combos[n_val:]
    chunks = [list(c) for c in np.array_split(np.array(cv_pool, dtype=object), n_folds)]
    if fold == "val":
        half = n_val // 2
        train_combos, test = val_pool[:half], val_pool[half:]
    else:
        test = chunks[fold - 1]
        train_combos = val_pool + [lab for i, c in enumerate(chunks) if i != fold - 1 for lab in c]
    train_singles = list(singles)
    if heldout_singles is not None:
        held = _resolve_singles(heldout_singles, ctrl, set(singles))
        held_permuted = [str(x) for x in rng.permutation(np.array(sorted(held)))]
        held_chunks = [list(c) for c in np.array_split(np.array(held_permuted), n_folds)]
        train_singles = [lab for lab in singles if lab not in held]
        if fold != "val":
            test = list(test) + held_chunks[fold - 1]
    return _assemble(
        labels,
        ctrl,
        [ctrl, *train_singles, *train_combos],
        test,
        "paper",
        fold,
        seed,
        drop_uncovered=True,
    )


def _resolve_singles(heldout: Iterable[str], ctrl: str, singles: set[str]) -> set[str]:
    if isinstance(heldout, str):
        heldout = [heldout]
    held = {canonical_label(str(lab), ctrl) for lab in heldout}
    bad = sorted(held - singles)
    if bad:
        raise SplitError(
            f"heldout_singles must name single perturbations present in the screen; not found: "
            f"{bad[:10]}."
        )
    return held


def _random_split(labels, ctrl, seed, test_fraction) -> Split:
    if not 0.0 < float(test_fraction) < 1.0:
        raise SplitError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    combos = [lab for lab in labels if len(parse_label(lab, ctrl)) > 1]
    if not combos:
        raise SplitError(
            "scheme='random' holds out combinations, but the screen has none; use "
            "scheme='custom' with test=[...] to hold out singles."
        )
    rng = np.random.default_rng(seed)
    permuted = [str(x) for x in rng.permutation(np.array(combos))]
    n_test = max(1, round(test_fraction * len(combos)))
    test = permuted[:n_test]
    train = [lab for lab in labels if lab not in set(test)]
    return _assemble(labels, ctrl, train, test, "random", None, seed, drop_uncovered=True)


def _custom_split(labels, ctrl, test: Iterable[str], seed: int) -> Split:
    if isinstance(test, str):
        test = [test]
    wanted = [canonical_label(str(lab), ctrl) for lab in test]
    if ctrl in wanted:
        raise SplitError(f"The control {ctrl!r} cannot be a test perturbation.")
    unknown = sorted(set(wanted) - set(labels))
    if unknown:
        raise SplitError(
            f"Test labels not in the screen: {unknown[:10]}; known labels include "
            f"{[lab for lab in labels if lab != ctrl][:10]}."
        )
    train = [lab for lab in labels if lab not in set(wanted)]
    return _assemble(labels, ctrl, train, wanted, "custom", None, seed, drop_uncovered=False)


__all__: Sequence[str] = ("Split", "split", "paper_folds", "SCHEMES")
