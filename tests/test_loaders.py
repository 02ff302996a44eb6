"""Readers of the paper's raw layouts (lcd-evaluation §2.2–2.4), on tiny files written here."""

import gzip
import io

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

import lcdiff as lc
from lcdiff.data.preprocess import dataset_qc
from lcdiff.errors import DataFormatError, InputNotFoundError, TooFewCellsError

SYMBOLS = ["MT-CO1", "GATA1", "KLF1", "CEBPE", "TP53", "MYC", "DUP", "DUP"]


def gene_var(symbol_column: str) -> pd.DataFrame:
    ids = [f"ENSG{i:011d}" for i in range(len(SYMBOLS))]
    var = pd.DataFrame({symbol_column: SYMBOLS}, index=ids)
    var.index.name = "gene_id"
    return var


def counts_for(totals, mito_fractions) -> np.ndarray:
    """One row per cell: the given total, mito share on MT-CO1, the rest spread over 7 genes."""
    rows = []
    for total, mito in zip(totals, mito_fractions, strict=True):
        m = round(total * mito)
        rest = total - m
        spread = np.full(7, rest // 7)
        spread[0] += rest - spread.sum()
        rows.append([m, *spread])
    return np.asarray(rows, dtype=np.float32)


# --- Norman 2019 ------------------------------------------------------------------------------
def write_norman_raw(path):
    guide_ids = ["", "", "GATA1", "KLF1,GATA1", "CEBPE", "GATA1", "", "KLF1"]
    totals = [9000, 7501, 8000, 12000, 7500, 20000, 9000, 9000]
    mito = [0.05, 0.10, 0.149, 0.0, 0.01, 0.16, 0.0, 0.0]
    adata = ad.AnnData(
        X=sp.csr_matrix(counts_for(totals, mito)),
        obs=pd.DataFrame({"guide_ids": guide_ids}, index=[f"c{i}" for i in range(8)]),
        var=gene_var("gene_symbols"),
    )
    adata.write_h5ad(path)
    return adata


def test_norman_raw_layout(tmp_path):
    raw = write_norman_raw(tmp_path / "Norman_2019_raw.h5ad")
    out = lc.datasets.read_norman2019(tmp_path)  # a folder holding the file works too
    # QC: total 7500 (not > 7500) and mito 16 % (not < 15 %) are dropped
    assert list(out.obs_names) == ["c0", "c1", "c2", "c3", "c6", "c7"]
    assert list(out.obs["perturbation"]) == ["ctrl", "ctrl", "GATA1", "GATA1+KLF1", "ctrl", "KLF1"]
    assert list(out.var_names) == [*SYMBOLS[:6], "DUP", "DUP___1"]
    assert out.var["gene_id"].iloc[1] == "ENSG00000000001"
    np.testing.assert_array_equal(out.X.toarray(), raw[out.obs_names].X.toarray())
    assert out.uns["loader"]["layout"] == "raw" and out.uns["loader"]["n_cells_read"] == 8
    assert lc.datasets.read_norman2019(tmp_path, qc=False).n_obs == 8


def test_norman_processed_layout(tmp_path):
    counts = counts_for([100] * 6, [0.0] * 6)
    adata = ad.AnnData(
        X=np.log1p(counts),
        obs=pd.DataFrame(
            {"condition": ["ctrl", "GATA1+ctrl", "ctrl+GATA1", "KLF1+GATA1", "ctrl", "MYC+ctrl"]},
            index=[f"c{i}" for i in range(6)],
        ),
        var=gene_var("feature_name"),
        layers={"counts": counts},
    )
    adata.write_h5ad(tmp_path / "norman_cpa.h5ad")
    out = lc.datasets.read_norman2019(tmp_path / "norman_cpa.h5ad", control="NT")
    assert list(out.obs["perturbation"]) == ["NT", "GATA1", "GATA1", "GATA1+KLF1", "NT", "MYC"]
    np.testing.assert_array_equal(out.X.toarray(), counts)  # counts, not the log data in X
    assert "GATA1" in out.var_names and out.uns["loader"]["layout"] == "gears_cpa_processed"

    del adata.layers["counts"]
    adata.write_h5ad(tmp_path / "gears.h5ad")
    with pytest.raises(DataFormatError, match="no layers\\['counts'\\]"):
        lc.datasets.read_norman2019(tmp_path / "gears.h5ad")


def test_norman_shared_cpa_fixture(shared_data):
    path = shared_data / "norman2019-cpa-fixture" / "norman_subset.h5ad"
    if not path.exists():
        pytest.skip("Norman CPA fixture not present")
    source = ad.read_h5ad(path)
    out = lc.datasets.read_norman2019(path)
    assert out.n_obs == 50 and out.n_vars == 50
    labels = set(out.obs["perturbation"])
    assert "ctrl" in labels and (out.obs["perturbation"] == "ctrl").sum() == 6
    assert not any("ctrl" in lab for lab in labels - {"ctrl"})
    assert {"CEBPE+RUNX1T1", "ELMSAN1+MAP2K6", "MEIS1", "PTPN9"} <= labels
    assert (out.obs["n_targets"] == 2).sum() == 11 and (out.obs["n_targets"] == 1).sum() == 33
    np.testing.assert_array_equal(out.X.toarray(), sp.csr_matrix(source.layers["counts"]).toarray())
    assert list(out.var_names[:2]) == list(source.var["feature_name"][:2])
    # 50 random genes: every target is unmeasured, so validate drops all perturbations
    with pytest.warns(UserWarning, match="not in var_names"):
        with pytest.raises(TooFewCellsError, match="only control cells"):
            lc.pp.validate(out, min_cells=1)


def test_norman_wrong_layout_and_missing_file(tmp_path):
    ad.AnnData(np.ones((2, 2), dtype=np.float32)).write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(DataFormatError, match="guide_ids"):
        lc.datasets.read_norman2019(tmp_path / "x.h5ad")
    with pytest.raises(InputNotFoundError, match="does not exist"):
        lc.datasets.read_norman2019(tmp_path / "nope.h5ad")
    (tmp_path / "bad.h5ad").write_text("not hdf5")
    with pytest.raises(DataFormatError, match="could not be read"):
        lc.datasets.read_norman2019(tmp_path / "bad.h5ad")


# --- Replogle 2022 ----------------------------------------------------------------------------
def test_replogle_layout(tmp_path):
    totals = [5000, 3000, 3001, 8000, 6000]
    mito = [0.1, 0.0, 0.219, 0.23, 0.0]
    var = gene_var("gene_name")
    var["gene_id"] = var.index
    var.index = [f"row{i}" for i in range(len(var))]
    adata = ad.AnnData(
        X=counts_for(totals, mito),
        obs=pd.DataFrame(
            {"gene": ["non-targeting", "GATA1", "GATA1", "KLF1", "MYC"]},
            index=[f"c{i}" for i in range(5)],
        ),
        var=var,
    )
    adata.write_h5ad(tmp_path / "K562_essential_raw_singlecell_01.h5ad")
    out = lc.datasets.read_replogle2022(tmp_path / "K562_essential_raw_singlecell_01.h5ad")
    assert list(out.obs_names) == ["c0", "c2", "c4"]  # total 3000 and mito 23 % fail
    assert list(out.obs["perturbation"]) == ["ctrl", "GATA1", "MYC"]
    assert out.var["gene_id"].iloc[0] == "ENSG00000000000" and out.var_names[0] == "MT-CO1"
    assert sp.issparse(out.X) and out.X.dtype == np.float32
    ad.AnnData(np.ones((2, 2), dtype=np.float32)).write_h5ad(tmp_path / "y.h5ad")
    with pytest.raises(DataFormatError, match="no 'gene' column"):
        lc.datasets.read_replogle2022(tmp_path / "y.h5ad")


# --- Wessels 2023 -----------------------------------------------------------------------------
N_WESSELS_GENES = 1600  # cells need > 1500 detected genes to pass the Wessels QC


def _gz_write(path, text: str):
    with gzip.open(path, "wt") as fh:
        fh.write(text)


def write_lane(folder, lane, barcodes, detected, nested=False):
    """One lane: features = N genes (gene 0 is MT-CO1) + eGFP + a guide feature."""
    n = N_WESSELS_GENES
    x = np.zeros((len(barcodes), n + 2), dtype=np.int64)
    for i, k in enumerate(detected):
        x[i, 1 : k + 1] = 2  # k detected genes with 2 UMIs each
        x[i, 0] = 10  # a little mitochondrial RNA
        x[i, n:] = 50  # non-gene features must not count
    ids = [f"ENSG{i:011d}" for i in range(n)] + ["eGFP", "guide_CD4_1"]
    symbols = ["MT-CO1"] + [f"GENE{i}" for i in range(1, n)] + ["eGFP", "guide_CD4_1"]
    types = ["Gene Expression"] * n + ["Gene Expression", "CRISPR Guide Capture"]
    prefix = f"THP1-CaRPool-seq_and_HEK293FTstabRNA.GEXGDO{lane}."
    if nested:
        target, prefix = folder / prefix.rstrip("."), ""
        target.mkdir()
    else:
        target = folder
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, sp.coo_matrix(x.T))
    with gzip.open(target / f"{prefix}matrix.mtx.gz", "wb") as fh:
        fh.write(buffer.getvalue())
    _gz_write(target / f"{prefix}barcodes.tsv.gz", "".join(f"{b}\n" for b in barcodes))
    _gz_write(
        target / f"{prefix}features.tsv.gz",
        "".join(f"{i}\t{s}\t{t}\n" for i, s, t in zip(ids, symbols, types, strict=True)),
    )
    return x


def write_wessels(folder):
    pairs = {
        1: ["NT_NT", "CD4_NT", "NT_CD4", "CD4_CD4"],
        2: ["IRF1_CD4", "CD4_IRF1", "NT_NT", "IRF1_NT"],
        3: ["NT_NT", "IRF1_NT", "NT_NT", "CD4_IRF1"],
        4: ["NT_NT", "NT_NT", "IRF1_IRF1", "NT_NT"],
    }
    rows = []
    for lane in (1, 2, 3, 4):
        barcodes = [f"AAAC{lane}{i:03d}-1" for i in range(5)]  # the 5th has no metadata
        detected = [1550] * 5
        if lane == 2:
            detected[3] = 1499  # with MT-CO1: 1500 detected genes, not > 1500: fails QC
        write_lane(folder, lane, barcodes, detected, nested=lane == 3)
        for i, pair in enumerate(pairs[lane]):
            rows.append((f"L{lane}_{barcodes[i]}", pair, f"lane{lane}"))
    meta = pd.DataFrame(rows, columns=["cell", "GenePair", "orig"]).set_index("cell")
    meta.to_csv(folder / "GSE213957_THP1-CaRPool-seq.metadata.tsv", sep="\t")


def test_wessels_layout(tmp_path):
    write_wessels(tmp_path)
    out = lc.datasets.read_wessels2023(tmp_path)
    expected = {
        "L1_AAAC1000-1": "ctrl",
        "L1_AAAC1001-1": "CD4",
        "L1_AAAC1002-1": "CD4",
        "L1_AAAC1003-1": "CD4",
        "L2_AAAC2000-1": "CD4+IRF1",
        "L2_AAAC2001-1": "CD4+IRF1",
        "L2_AAAC2002-1": "ctrl",
        "L3_AAAC3000-1": "ctrl",
        "L3_AAAC3001-1": "IRF1",
        "L3_AAAC3002-1": "ctrl",
        "L3_AAAC3003-1": "CD4+IRF1",
        "L4_AAAC4000-1": "ctrl",
        "L4_AAAC4001-1": "ctrl",
        "L4_AAAC4002-1": "IRF1",
        "L4_AAAC4003-1": "ctrl",
    }  # L2_...003 fails QC; the 5th barcode of each lane has no metadata
    assert dict(zip(out.obs_names, out.obs["perturbation"], strict=True)) == expected
    assert out.n_vars == N_WESSELS_GENES  # eGFP and the guide feature are dropped
    assert out.var_names[0] == "MT-CO1" and out.var["gene_id"].iloc[1] == "ENSG00000000001"
    assert out.obs.loc["L1_AAAC1000-1", "lane"] == 1
    assert np.asarray(out.X.sum(axis=1)).ravel()[0] == 10 + 2 * 1550
    assert lc.datasets.read_wessels2023(tmp_path, qc=False).n_obs == 16


def test_wessels_missing_pieces(tmp_path):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        lc.datasets.read_wessels2023(tmp_path / "nope")
    with pytest.raises(InputNotFoundError, match="metadata"):
        lc.datasets.read_wessels2023(tmp_path)
    pd.DataFrame({"GenePair": ["NT_NT"]}, index=["L1_A-1"]).to_csv(
        tmp_path / "GSE213957_THP1-CaRPool-seq.metadata.tsv", sep="\t"
    )
    with pytest.raises(InputNotFoundError, match="Lane 1"):
        lc.datasets.read_wessels2023(tmp_path)


def test_dataset_qc_bounds_are_strict():
    x = counts_for([100, 200, 300], [0.0, 0.0, 0.0])
    a = ad.AnnData(x, var=pd.DataFrame(index=["MT-A", *[f"G{i}" for i in range(7)]]))
    out = dataset_qc(a, min_total_counts=100, max_total_counts=300)
    assert list(out.obs["total_counts"]) == [200]
    out = dataset_qc(a, min_genes_by_counts=6, max_genes_by_counts=8)
    assert list(out.obs["n_genes_by_counts"]) == [7, 7, 7]
