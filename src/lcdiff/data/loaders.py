"""Readers for the raw files of the paper's three real screens (lcd-evaluation §2.2–2.4).

Each reader returns a raw screen ready for ``lc.pp.prepare``: UMI counts in ``X`` (CSR,
float32), gene symbols as ``var_names`` (duplicates suffixed ``___1``, ``___2``, ...; Ensembl ids in
``var["gene_id"]``), canonical labels in ``obs["perturbation"]`` with the control ``"ctrl"``
(configurable), and a record of what was read in ``uns["loader"]``. With ``qc=True`` the paper's
dataset-specific cell QC is applied (thresholds below; all bounds strict, mitochondrial genes =
symbols starting with ``MT-``). Gene/cell QC common to every screen happens in ``prepare``.

Nothing is downloaded; point the readers at files you have.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from anndata import AnnData
from anndata.utils import make_index_unique

from lcdiff.data.labels import DEFAULT_CONTROL, format_label, parse_label
from lcdiff.data.preprocess import dataset_qc
from lcdiff.data.schema import PERTURBATION_KEY
from lcdiff.errors import DataFormatError, InputNotFoundError, InvalidLabelError

# Dataset-specific cell QC of the reference (strict bounds).
NORMAN_QC = {"max_pct_mito": 15.0, "min_total_counts": 7500.0, "max_genes_by_counts": 6000.0}
REPLOGLE_QC = {"max_pct_mito": 22.0, "min_total_counts": 3000.0, "max_genes_by_counts": 6500.0}
WESSELS_QC = {
    "max_pct_mito": 20.0,
    "min_total_counts": 3000.0,
    "max_total_counts": 40000.0,
    "min_genes_by_counts": 1500.0,
    "max_genes_by_counts": 6500.0,
}
NORMAN_FILE = "Norman_2019_raw.h5ad"
REPLOGLE_FILE = "K562_essential_raw_singlecell_01.h5ad"
WESSELS_METADATA = "GSE213957_THP1-CaRPool-seq.metadata.tsv"
WESSELS_LANE_PREFIX = "THP1-CaRPool-seq_and_HEK293FTstabRNA.GEXGDO{lane}."
SYMBOL_COLUMNS = ("gene_symbols", "feature_name", "gene_name")


# --- Norman 2019 ------------------------------------------------------------------------------
def read_norman2019(
    path: str | os.PathLike, control: str = DEFAULT_CONTROL, qc: bool = True
) -> AnnData:
    """Norman et al. 2019 K562 CRISPRa screen (singles and doubles).

    Two layouts are recognized:

    - **raw** (figshare ``Norman_2019_raw.h5ad``): counts in ``X``, obs ``guide_ids``
      (``""`` = control, doubles ``"A,B"``), var ``gene_symbols``. With ``qc=True`` cells must
      have pct_counts_mito < 15, total_counts > 7500 and n_genes_by_counts < 6000.
    - **GEARS/CPA processed**: obs ``condition`` (``"ctrl"``, ``"A+ctrl"``, ``"ctrl+A"``,
      ``"A+B"``), raw counts in ``layers["counts"]``, symbols in var ``gene_symbols``,
      ``feature_name`` or ``gene_name``. These files were filtered by their authors, so no QC
      is applied.

    Parameters
    ----------
    path
        The ``.h5ad`` file (or a folder holding ``Norman_2019_raw.h5ad``).
    control
        Control label to use in ``obs["perturbation"]``.
    qc
        Apply the paper's Norman cell QC to the raw layout.

    Returns
    -------
    AnnData ``[cells, genes]`` of counts with ``obs["perturbation"]``.

    Raises
    ------
    InputNotFoundError, DataFormatError
    """
    path = _existing(path, NORMAN_FILE)
    adata = _read_h5ad(path)
    if "guide_ids" in adata.obs:
        labels = adata.obs["guide_ids"].map(lambda v: _comma_label(v, control))
        out = _assemble(adata, adata.X, labels, "gene_symbols", control)
        return _finish(out, "norman2019", "raw", path, NORMAN_QC if qc else None)
    if "condition" in adata.obs:
        if "counts" not in adata.layers:
            raise DataFormatError(
                f"{path} has obs['condition'] (GEARS/CPA layout) but no layers['counts']; lcdiff "
                "needs raw counts (the GEARS 'perturb_processed.h5ad' keeps only log-normalized "
                "data). Use the CPA file, which has a counts layer, or the raw Norman file."
            )
        labels = _parse_column(adata.obs["condition"], "condition", control, source_control="ctrl")
        symbol_column = next((c for c in SYMBOL_COLUMNS if c in adata.var), None)
        out = _assemble(adata, adata.layers["counts"], labels, symbol_column, control)
        return _finish(out, "norman2019", "gears_cpa_processed", path, None)
    raise DataFormatError(
        f"{path} is not a Norman 2019 file: it needs obs 'guide_ids' (raw layout) or "
        f"'condition' (GEARS/CPA layout); obs columns are {list(map(str, adata.obs.columns))}."
    )


def _comma_label(value, control: str) -> str:
    """``""`` → control; ``"B,A"`` → ``"A+B"`` (empty parts and the control token ignored)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return control
    parts = [p.strip() for p in str(value).split(",")]
    return format_label([p for p in parts if p and p != "ctrl" and p != control], control)


# --- Replogle 2022 ----------------------------------------------------------------------------
def read_replogle2022(
    path: str | os.PathLike, control: str = DEFAULT_CONTROL, qc: bool = True
) -> AnnData:
    """Replogle et al. 2022 K562 essential-gene CRISPRi screen (singles only).

    Layout (plus.figshare ``K562_essential_raw_singlecell_01.h5ad``): counts in ``X``, obs
    ``gene`` (target symbol; ``"non-targeting"`` = control), var ``gene_name`` and ``gene_id``.
    With ``qc=True`` cells must have pct_counts_mito < 22, total_counts > 3000 and
    n_genes_by_counts < 6500.

    Parameters
    ----------
    path
        The ``.h5ad`` file (or a folder holding ``K562_essential_raw_singlecell_01.h5ad``).
    control
        Control label to use in ``obs["perturbation"]``.
    qc
        Apply the paper's Replogle cell QC.

    Returns
    -------
    AnnData ``[cells, genes]`` of counts with ``obs["perturbation"]``.
    """
    path = _existing(path, REPLOGLE_FILE)
    adata = _read_h5ad(path)
    if "gene" not in adata.obs:
        raise DataFormatError(
            f"{path} is not the Replogle 2022 layout: obs has no 'gene' column (columns: "
            f"{list(map(str, adata.obs.columns))})."
        )
    genes = adata.obs["gene"].astype(str).replace({"non-targeting": control})
    labels = _parse_column(genes, "gene", control, source_control=control)
    out = _assemble(adata, adata.X, labels, "gene_name", control)
    return _finish(out, "replogle2022", "raw", path, REPLOGLE_QC if qc else None)


# --- Wessels 2023 -----------------------------------------------------------------------------
def read_wessels2023(
    folder: str | os.PathLike,
    control: str = DEFAULT_CONTROL,
    qc: bool = True,
    lanes: tuple[int, ...] = (1, 2, 3, 4),
) -> AnnData:
    """Wessels et al. 2023 THP-1 CaRPool-seq (Cas13d) screen with combinations.

    Layout (GEO GSE213957, extracted): in ``folder``, the metadata table
    ``GSE213957_THP1-CaRPool-seq.metadata.tsv`` (first column = cell id ``L{lane}_{barcode}``,
    column ``GenePair`` = ``"A_B"`` with ``NT`` for non-targeting) and one 10x matrix per lane,
    either as flat files ``THP1-CaRPool-seq_and_HEK293FTstabRNA.GEXGDO{lane}.matrix.mtx.gz`` /
    ``...barcodes.tsv.gz`` / ``...features.tsv.gz`` or in a sub-folder of that name (without the
    trailing dot) holding ``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz``.

    Labels: ``NT_NT`` → control; ``A_NT``, ``NT_A`` and ``A_A`` → ``"A"``; ``A_B`` → ``"A+B"``.
    Cells without metadata are dropped; lanes are joined on their common features; features
    without an Ensembl gene id (``ENSG``; e.g. eGFP, Cas13d, Puro, guide features) are dropped.
    With ``qc=True`` cells must have pct_counts_mito < 20, 3000 < total_counts < 40000 and
    1500 < n_genes_by_counts < 6500.

    Returns
    -------
    AnnData ``[cells, genes]`` of counts with ``obs["perturbation"]`` and ``obs["lane"]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"Wessels 2023 folder {str(folder)!r} does not exist.")
    meta_path = folder / WESSELS_METADATA
    if not meta_path.is_file():
        raise InputNotFoundError(
            f"{meta_path} not found; the folder must hold the GEO metadata table "
            f"{WESSELS_METADATA} beside the per-lane 10x matrices."
        )
    metadata = pd.read_csv(meta_path, sep="\t", index_col=0)
    if "GenePair" not in metadata:
        raise DataFormatError(
            f"{meta_path} has no 'GenePair' column (columns: {list(metadata.columns)})."
        )
    parts = [_read_wessels_lane(folder, lane, metadata) for lane in lanes]
    common = set.intersection(*(set(p.var_names) for p in parts))
    keep_ids = [g for g in parts[0].var_names if g in common]
    joined = AnnData(
        X=sp.vstack([p[:, keep_ids].X for p in parts]).tocsr(),
        obs=pd.concat([p.obs for p in parts]),
        var=parts[0].var.loc[keep_ids].copy(),
    )
    if joined.n_obs == 0:
        raise DataFormatError(
            f"No barcode of the 10x matrices in {folder} matches a cell id of {WESSELS_METADATA} "
            "(expected ids 'L<lane>_<barcode>')."
        )
    pairs = joined.obs["GenePair"]
    labels = pd.Series(
        [_gene_pair_label(v, control) for v in pairs], index=joined.obs_names, dtype=object
    )
    out = _assemble(joined, joined.X, labels, "gene_symbols", control)
    return _finish(out, "wessels2023", "raw", folder, WESSELS_QC if qc else None)


def _gene_pair_label(value, control: str) -> str:
    text = str(value)
    genes = text.split("_")
    if len(genes) != 2 or not all(genes):
        raise DataFormatError(
            f"GenePair {text!r} is not of the form 'A_B' (with 'NT' for non-targeting)."
        )
    return format_label([g for g in genes if g != "NT"], control)


def _lane_files(folder: Path, lane: int) -> dict[str, Path]:
    prefix = WESSELS_LANE_PREFIX.format(lane=lane)
    names = ("matrix.mtx.gz", "barcodes.tsv.gz", "features.tsv.gz")
    flat = {n.split(".")[0]: folder / f"{prefix}{n}" for n in names}
    if all(p.is_file() for p in flat.values()):
        return flat
    nested = {n.split(".")[0]: folder / prefix.rstrip(".") / n for n in names}
    if all(p.is_file() for p in nested.values()):
        return nested
    raise InputNotFoundError(
        f"Lane {lane} of the Wessels 2023 screen not found in {folder}: expected "
        f"{prefix}matrix.mtx.gz, {prefix}barcodes.tsv.gz and {prefix}features.tsv.gz (or a "
        f"folder {prefix.rstrip('.')}/ holding matrix.mtx.gz, barcodes.tsv.gz, features.tsv.gz)."
    )


def _read_wessels_lane(folder: Path, lane: int, metadata: pd.DataFrame) -> AnnData:
    files = _lane_files(folder, lane)
    lane_data = read_10x_mtx(files["matrix"], files["barcodes"], files["features"])
    ids = pd.Index([f"L{lane}_{b}" for b in lane_data.obs_names])
    if not ids.isin(metadata.index).any():  # metadata may drop the 10x "-1" suffix
        ids = pd.Index([f"L{lane}_{b.rsplit('-', 1)[0]}" for b in lane_data.obs_names])
    lane_data.obs_names = ids
    matched = ids.isin(metadata.index)
    lane_data = lane_data[matched].copy()
    lane_data.obs = lane_data.obs.join(metadata)
    lane_data.obs["lane"] = lane
    is_gene = lane_data.var["gene_id"].astype(str).str.contains("ENSG").to_numpy()
    return lane_data[:, is_gene].copy()


def read_10x_mtx(matrix: Path, barcodes: Path, features: Path) -> AnnData:
    """Read one 10x Matrix Market triple (``features × barcodes``) as ``[cells, features]``.

    ``var_names`` are the feature ids (first column); ``var["gene_symbols"]`` the second column.
    """
    with gzip.open(matrix, "rb") as fh:
        counts = sp.csr_matrix(scipy.io.mmread(fh).T, dtype=np.float32)
    cells = pd.read_csv(barcodes, sep="\t", header=None, compression="gzip")[0].astype(str)
    table = pd.read_csv(features, sep="\t", header=None, compression="gzip")
    if counts.shape != (len(cells), len(table)):
        raise DataFormatError(
            f"{matrix} is {counts.shape[1]} features × {counts.shape[0]} cells, but {barcodes} "
            f"lists {len(cells)} cells and {features} {len(table)} features."
        )
    symbols = table[1] if table.shape[1] > 1 else table[0]
    var = pd.DataFrame(
        {"gene_id": table[0].astype(str).to_numpy(), "gene_symbols": symbols.astype(str).to_numpy()}
    )
    if table.shape[1] > 2:
        var["feature_types"] = table[2].astype(str).to_numpy()
    var.index = var["gene_id"].to_numpy()
    return AnnData(X=counts, obs=pd.DataFrame(index=cells.to_numpy()), var=var)


# --- shared helpers ---------------------------------------------------------------------------
def _existing(path, default_name: str) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise InputNotFoundError(f"File {str(path)!r} does not exist.")
    return path


def _read_h5ad(path: Path) -> AnnData:
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as err:
        raise DataFormatError(f"{path} could not be read as an .h5ad file: {err}") from None


def _parse_column(column: pd.Series, name: str, control: str, source_control: str) -> pd.Series:
    """Canonical labels of a "+"-separated label column (parsing each distinct value once)."""
    mapping = {}
    for value in pd.unique(column.astype(str)):
        try:
            genes = parse_label(value, source_control)
        except InvalidLabelError as err:
            raise DataFormatError(f"Bad label in obs[{name!r}]: {err}") from None
        mapping[value] = format_label(genes, control)
    return column.astype(str).map(mapping)


def _assemble(
    adata: AnnData, counts, labels: pd.Series, symbol_column: str | None, control: str
) -> AnnData:
    """Counts as CSR float32, gene symbols as var_names, canonical labels in obs."""
    var = adata.var.copy()
    if symbol_column is not None and symbol_column in var:
        var["gene_id"] = var.get("gene_id", pd.Series(var.index, index=var.index)).astype(str)
        var.index = var[symbol_column].astype(str).to_numpy()
    var.index = make_index_unique(pd.Index(var.index.astype(str)), join="___")
    out = AnnData(X=sp.csr_matrix(counts, dtype=np.float32), obs=adata.obs.copy(), var=var)
    out.obs[PERTURBATION_KEY] = pd.Categorical(np.asarray(labels, dtype=str))
    out.obs["n_targets"] = [len(parse_label(lab, control)) for lab in out.obs[PERTURBATION_KEY]]
    return out


def _finish(out: AnnData, dataset: str, layout: str, path: Path, qc: dict | None) -> AnnData:
    n_before = out.n_obs
    if qc is not None:
        out = dataset_qc(out, **qc)
    out.uns["loader"] = {
        "dataset": dataset,
        "layout": layout,
        "path": str(path),
        "qc": dict(qc) if qc is not None else "none",
        "n_cells_read": int(n_before),
        "n_cells_after_qc": int(out.n_obs),
    }
    return out
