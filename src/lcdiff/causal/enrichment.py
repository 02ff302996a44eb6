"""Gene-set enrichment of gene modules against a GMT file the user supplies (offline).

lcd-evaluation §1.10(c): per module, a one-sided hypergeometric test of every gene set against
a background of the modelled genes; all (module, term) tests are pooled for the
Benjamini–Hochberg correction; terms with adjusted p below ``fdr`` are kept and the top
``top_n`` per module by odds ratio are flagged. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, hypergeom

from lcdiff.errors import DataFormatError, LcdiffError

COLUMNS = [
    "module",
    "term",
    "description",
    "p_value",
    "adjusted_p_value",
    "odds_ratio",
    "combined_score",
    "overlap_size",
    "module_size",
    "set_size",
    "background_size",
    "overlap_genes",
    "in_top_n",
]


class EnrichmentError(LcdiffError, ValueError):
    """Enrichment inputs are unusable (no overlap with the background, bad modules)."""


@dataclass(frozen=True)
class GeneSet:
    """One line of a GMT file: a name, a description and its genes."""

    name: str
    description: str
    genes: frozenset[str]


def read_gmt(path: str | os.PathLike) -> dict[str, GeneSet]:
    """Read a GMT file (plain text or ``.gz``): ``name <TAB> description <TAB> gene ...``.

    Parameters
    ----------
    path
        The GMT file.

    Returns
    -------
    Mapping term name → :class:`GeneSet` (file order).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DataFormatError
        For a line with fewer than three tab-separated fields or a duplicated term name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GMT file {str(path)!r} does not exist.")
    opener = gzip.open if path.suffix == ".gz" else open
    sets: dict[str, GeneSet] = {}
    with opener(path, "rt", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                raise DataFormatError(
                    f"{path}:{lineno}: a GMT line needs a name, a description and at least one "
                    "gene, separated by tabs."
                )
            name = fields[0]
            if name in sets:
                raise DataFormatError(f"{path}:{lineno}: gene set {name!r} appears twice.")
            genes = frozenset(g for g in fields[2:] if g)
            sets[name] = GeneSet(name, fields[1], genes)
    if not sets:
        raise DataFormatError(f"{path} holds no gene sets.")
    return sets


def _module_members(modules) -> dict[str, list[str]]:
    """Accept GeneModules, a Series gene → module (−1 dropped), or a mapping name → genes."""
    if hasattr(modules, "members") and hasattr(modules, "labels"):
        return {str(k): v for k, v in modules.members().items()}
    if isinstance(modules, pd.Series):
        groups: dict[str, list[str]] = {}
        for gene, label in modules.items():
            if int(label) >= 0:
                groups.setdefault(str(label), []).append(str(gene))
        return groups
    if isinstance(modules, Mapping):
        return {str(k): [str(g) for g in v] for k, v in modules.items()}
    raise EnrichmentError(
        "modules must be a GeneModules result, a Series gene → module, or a mapping "
        f"module → genes; got {type(modules).__name__}."
    )


def _odds_ratio(a: int, b: int, c: int, d: int) -> float:
    """Sample odds ratio ``(a d) / (b c)``; Haldane's +0.5 when a cell is zero."""
    if min(a, b, c, d) == 0:
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5
    return float(a * d / (b * c))


def enrichment(
    modules,
    gene_sets: Mapping[str, GeneSet] | str | os.PathLike,
    background: Iterable[str],
    fdr: float | None = 0.01,
    top_n: int = 5,
    min_set_size: int = 1,
) -> pd.DataFrame:
    """Hypergeometric enrichment of each module in each gene set, BH-corrected over all tests.

    Parameters
    ----------
    modules
        :class:`~lcdiff.causal.modules.GeneModules`, a Series gene → module id (−1 = none) or a
        mapping module name → genes.
    gene_sets
        Gene sets from :func:`read_gmt`, or the path of a GMT file.
    background
        The genes that could have been picked (the modelled genes). Module genes and gene sets
        are restricted to it.
    fdr
        Keep rows with adjusted p below this; ``None`` keeps every tested (module, term).
    top_n
        Flag the ``top_n`` terms per module with the largest odds ratio (``in_top_n``).
    min_set_size
        Gene sets with fewer background genes are not tested.

    Returns
    -------
    DataFrame with columns :data:`COLUMNS`, sorted by module then p-value. A (module, term)
    pair is tested when they share at least one gene; ``p_value = P(X ≥ overlap)`` for
    ``X ~ Hypergeom(background, set size, module size)``; ``combined_score =
    odds_ratio · (−ln p)``.

    Raises
    ------
    EnrichmentError
        When the background is empty or no module has a background gene.
    """
    sets = read_gmt(gene_sets) if isinstance(gene_sets, str | os.PathLike) else gene_sets
    universe = {str(g) for g in background}
    if not universe:
        raise EnrichmentError("The background is empty; pass the modelled genes.")
    groups = {k: sorted(set(v) & universe) for k, v in _module_members(modules).items()}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise EnrichmentError("No module has a gene in the background; check gene names.")
    restricted = {name: gs.genes & universe for name, gs in sets.items()}
    restricted = {k: v for k, v in restricted.items() if len(v) >= min_set_size}
    n_bg = len(universe)
    rows = []
    for module, members in groups.items():
        member_set = set(members)
        n_mod = len(members)
        for name, genes in restricted.items():
            overlap = member_set & genes
            k = len(overlap)
            if k == 0:
                continue
            n_set = len(genes)
            p = float(hypergeom.sf(k - 1, n_bg, n_set, n_mod))
            odds = _odds_ratio(k, n_mod - k, n_set - k, n_bg - n_set - n_mod + k)
            rows.append(
                {
                    "module": module,
                    "term": name,
                    "description": sets[name].description,
                    "p_value": p,
                    "odds_ratio": odds,
                    "combined_score": odds * -np.log(max(p, 1e-300)),
                    "overlap_size": k,
                    "module_size": n_mod,
                    "set_size": n_set,
                    "background_size": n_bg,
                    "overlap_genes": ";".join(sorted(overlap)),
                }
            )
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.DataFrame(rows)
    table["adjusted_p_value"] = false_discovery_control(table["p_value"].to_numpy(), method="bh")
    if fdr is not None:
        table = table[table["adjusted_p_value"] < fdr]
    table = table.sort_values(["module", "p_value", "term"]).reset_index(drop=True)
    rank = table.groupby("module")["odds_ratio"].rank(method="first", ascending=False)
    table["in_top_n"] = rank <= top_n
    return table[COLUMNS]
