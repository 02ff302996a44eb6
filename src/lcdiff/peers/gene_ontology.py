"""GEARS' gene-ontology inputs, built offline from a local GMT file of GO gene sets.

GEARS (cell-gears 0.1.2) builds its perturbation graph from ``gene2go_all.pkl``, a pickled
dict *gene symbol → set of GO ids*, which it downloads into its ``data_path`` unless the file
is already there. lcdiff writes that file itself, from GO biological-process gene sets in GMT
format (one term a line: ``GO id``, ``name``, gene symbols…; e.g. ``go_bp_human.gmt.gz`` of the
project's shared data), restricted to the screen's genes, and also writes the GO edge list
(Jaccard similarity of two genes' GO sets, kept above 0.1, self-edges included) exactly as
GEARS' own ``make_GO`` would, so that GEARS neither downloads nor spawns its 25-worker pool.

Where the GMT comes from: the ``go_gmt`` argument, else ``$LCDIFF_GO_GMT``, else
``../shared/data/go-bp-human/go_bp_human.gmt.gz`` beside a source checkout. The file is not
shipped with lcdiff (1 MB; Gene Ontology data, CC BY 4.0).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lcdiff.errors import DataFormatError, InputNotFoundError

GO_GMT_ENV = "LCDIFF_GO_GMT"
#: GEARS keeps an edge when the Jaccard similarity of the two GO sets exceeds this.
GEARS_GO_THRESHOLD = 0.1


def default_gmt_candidates() -> list[Path]:
    """Places searched for the GO GMT when neither an argument nor ``$LCDIFF_GO_GMT`` is given."""
    here = Path(__file__).resolve()
    # src/lcdiff/peers/gene_ontology.py -> <checkout>/../shared/data/go-bp-human
    rel = Path("shared") / "data" / "go-bp-human" / "go_bp_human.gmt.gz"
    return [here.parents[4] / rel, here.parents[3] / rel, Path.cwd().parent / rel]


def find_go_gmt(path: str | os.PathLike | None = None) -> Path:
    """Locate the GO gene-set file (see the module docstring for the search order).

    Raises
    ------
    InputNotFoundError
        When no file is found; the message names every place searched.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputNotFoundError(f"GO gene-set file {p} does not exist.")
        return p
    env = os.environ.get(GO_GMT_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise InputNotFoundError(f"${GO_GMT_ENV} points at {p}, which does not exist.")
        return p
    candidates = default_gmt_candidates()
    for p in candidates:
        if p.is_file():
            return p
    raise InputNotFoundError(
        "GEARS needs GO gene sets (a GMT file of GO biological-process terms for gene symbols, "
        f"e.g. go_bp_human.gmt.gz); none found at {[str(c) for c in candidates]}. Pass "
        f"go_gmt=... or set ${GO_GMT_ENV}; lcdiff never downloads it."
    )


def read_gmt(path: str | os.PathLike) -> dict[str, set[str]]:
    """GO id → set of gene symbols, from a (gzipped) GMT file.

    Raises
    ------
    DataFormatError
        For a line with fewer than two fields or a file without any term.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    terms: dict[str, set[str]] = {}
    with opener(path, "rt") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(fields) < 2:
                raise DataFormatError(
                    f"{path}:{number} is not a GMT line (term <TAB> description <TAB> genes…)."
                )
            terms.setdefault(fields[0], set()).update(g for g in fields[2:] if g)
    if not terms:
        raise DataFormatError(f"{path} holds no gene sets.")
    return terms


def gene2go(terms: dict[str, set[str]], genes: Iterable[str]) -> dict[str, set[str]]:
    """Gene symbol → set of GO ids for the given genes (genes without any term are left out).

    Parameters
    ----------
    terms
        GO id → genes (:func:`read_gmt`).
    genes
        The genes of interest (a screen's measured and perturbed genes).

    Returns
    -------
    dict, the layout of GEARS' ``gene2go_all.pkl``.
    """
    wanted = set(genes)
    out: dict[str, set[str]] = {}
    for term, members in terms.items():
        for g in members & wanted:
            out.setdefault(g, set()).add(term)
    return {g: out[g] for g in sorted(out)}


def go_edges(g2go: dict[str, set[str]], threshold: float = GEARS_GO_THRESHOLD) -> pd.DataFrame:
    """GEARS' GO similarity edges between the genes of ``g2go``.

    Every ordered pair (self-pairs included) whose GO sets have Jaccard similarity above
    ``threshold`` (GEARS' ``get_GO_edge_list``).

    Returns
    -------
    DataFrame with columns ``source``, ``target``, ``importance``.
    """
    genes = list(g2go)
    rows = []
    for g1 in genes:
        s1 = g2go[g1]
        for g2 in genes:
            s2 = g2go[g2]
            score = len(s1 & s2) / len(s1 | s2)
            if score > threshold:
                rows.append((g1, g2, score))
    return pd.DataFrame(rows, columns=["source", "target", "importance"])
