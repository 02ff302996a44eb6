"""Gene-set enrichment of modules against a user GMT (hypergeometric + BH)."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, hypergeom

import lcdiff as lc
from lcdiff.causal import EnrichmentError, enrichment, read_gmt
from lcdiff.errors import DataFormatError

BACKGROUND = [f"G{i:03d}" for i in range(200)]


def write_gmt(path, sets, gz=False):
    text = "".join(f"{name}\t{desc}\t" + "\t".join(genes) + "\n" for name, desc, genes in sets)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def planted_sets():
    rng = np.random.default_rng(0)
    planted = BACKGROUND[:20]  # module 0 holds 12 of these 20
    return [
        ("PLANTED", "the planted set", planted + ["NOT_MODELLED1", "NOT_MODELLED2"]),
        ("RANDOM", "a random set", list(rng.choice(BACKGROUND[20:], 30, replace=False))),
        ("FAR", "no overlap", BACKGROUND[150:170]),
    ]


def modules_series():
    labels = pd.Series(-1, index=BACKGROUND)
    labels[BACKGROUND[:12] + BACKGROUND[100:103]] = 0  # 12 planted genes + 3 others
    labels[BACKGROUND[40:55]] = 1
    return labels


@pytest.mark.parametrize("gz", [False, True])
def test_planted_set_is_enriched_with_the_exact_hypergeometric_p(tmp_path, gz):
    path = write_gmt(tmp_path / ("sets.gmt.gz" if gz else "sets.gmt"), planted_sets(), gz=gz)
    table = enrichment(modules_series(), path, BACKGROUND, fdr=None)
    row = table[(table.module == "0") & (table.term == "PLANTED")].iloc[0]
    # N = 200 background genes, K = 20 set genes in the background, n = 15 module genes, k = 12.
    expected = hypergeom.sf(11, 200, 20, 15)
    assert row.p_value == pytest.approx(expected, rel=1e-12)
    assert (row.overlap_size, row.module_size, row.set_size, row.background_size) == (
        12,
        15,
        20,
        200,
    )
    assert row.odds_ratio == pytest.approx((12 * 177) / (3 * 8))
    assert row.description == "the planted set" and row.overlap_genes.count(";") == 11
    # BH over every tested (module, term) pair, pooled.
    np.testing.assert_allclose(
        table.adjusted_p_value, false_discovery_control(table.p_value, method="bh")
    )
    assert "FAR" not in set(table.term)  # no overlap: not tested
    # the default FDR cut keeps the planted term and drops the random one
    kept = enrichment(modules_series(), path, BACKGROUND)
    assert set(kept.term) == {"PLANTED"} and kept.in_top_n.all()


def test_modules_accept_gene_modules_and_mappings(tmp_path):
    path = write_gmt(tmp_path / "s.gmt", planted_sets())
    sets = read_gmt(path)
    by_dict = enrichment({"m": BACKGROUND[:12]}, sets, BACKGROUND, fdr=None)
    assert by_dict.iloc[0].term == "PLANTED"
    assert by_dict.iloc[0].p_value == pytest.approx(hypergeom.sf(11, 200, 20, 12))


def test_read_gmt_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.gmt"
    bad.write_text("ONLY_NAME\tdesc\n")
    with pytest.raises(DataFormatError, match="at least one"):
        read_gmt(bad)
    dup = write_gmt(tmp_path / "dup.gmt", [("A", "x", ["G1"]), ("A", "y", ["G2"])])
    with pytest.raises(DataFormatError, match="twice"):
        read_gmt(dup)
    with pytest.raises(FileNotFoundError):
        read_gmt(tmp_path / "missing.gmt")


def test_enrichment_rejects_empty_background_and_foreign_modules(tmp_path):
    path = write_gmt(tmp_path / "s.gmt", planted_sets())
    with pytest.raises(EnrichmentError, match="background is empty"):
        enrichment(modules_series(), path, [])
    with pytest.raises(EnrichmentError, match="No module"):
        enrichment({"m": ["X1", "X2"]}, path, BACKGROUND)


def test_go_bp_interferon_module_finds_its_pathway(shared_data):
    gmt = shared_data / "go-bp-human" / "go_bp_human.gmt.gz"
    sets = lc.tl.read_gmt(gmt)
    assert len(sets) > 5000
    ifng = sorted(sets["GO:0060333"].genes)
    rng = np.random.default_rng(1)
    everything = sorted(set().union(*(s.genes for s in sets.values())))
    others = [g for g in everything if g not in set(ifng)]
    background = ifng + list(rng.choice(others, 1000, replace=False))
    module = {"ifn": ["IFNGR1", "IFNGR2", "JAK1", "JAK2", "STAT1", "IRF1", "SOCS1", "PTPN2"]}
    table = lc.tl.enrichment(module, sets, background)
    assert "GO:0060333" in set(table.term)
    assert table.iloc[0].adjusted_p_value < 1e-6
