"""The bundled real screen: Papalexi et al. 2021, THP-1 ECCITE-seq CRISPR knockout (subset).

The package ships the gene and gRNA UMI counts in ``lcdiff/datasets_data/papalexi2021.npz.xz``
(about 1 MB): an ``xz``-compressed, uncompressed-inside ``.npz`` whose arrays are

- ``counts``: ``uint16`` ``[n_genes, n_cells]`` gene UMI counts (stored gene-major because
  that order compresses best);
- ``grna_counts``: ``uint16`` ``[n_grnas, n_cells]`` gRNA UMI counts;
- ``genes``, ``grna_ids``, ``grna_targets``, ``bio_rep_levels`` (strings) and ``bio_rep``
  (``uint8`` codes into ``bio_rep_levels``).

Anyone can read it without lcdiff: ``np.load(io.BytesIO(lzma.open(path).read()))``. Labels are
not stored; :func:`papalexi2021` computes them with ``lc.pp.assign_perturbations`` on load.
Licence and attribution sit beside the file (``papalexi2021_LICENSE.md``).
"""

from __future__ import annotations

import functools
import io
import lzma
import os
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from lcdiff._io import atomic_write_bytes
from lcdiff.data.assign import UNASSIGNED, assign_perturbations
from lcdiff.data.labels import DEFAULT_CONTROL, parse_label
from lcdiff.errors import DataFormatError, InputNotFoundError

BUNDLE_NAME = "papalexi2021.npz.xz"
SOURCE_CONTROL = "non-targeting"  # the target name of the non-targeting guides in the source
ARRAY_NAMES = (
    "counts", "grna_counts", "genes", "grna_ids", "grna_targets", "bio_rep", "bio_rep_levels",
)  # fmt: skip
# The 9 targeted genes that are among the 299 measured genes.
MEASURED_TARGETS = (
    "CMTM6", "IFNGR2", "JAK2", "NFKBIA", "STAT1", "STAT2", "STAT3", "TNFRSF14", "UBE2L6",
)  # fmt: skip

SOURCE = {
    "name": "Papalexi et al. 2021, THP-1 ECCITE-seq CRISPR-KO screen (gene-downsampled subset)",
    "publication": (
        "E. Papalexi, E. P. Mimitou, A. W. Butler, et al., Characterizing the molecular "
        "regulation of inhibitory immune checkpoints with multimodal single-cell screens, "
        "Nature Genetics 53, 322-331 (2021)"
    ),
    "doi": "10.1038/s41588-021-00778-2",
    "raw_data": "GEO GSE153056",
    "origin": (
        "Katsevich-Lab/sceptredata (GitHub) commit ec722d5df90dfd34ace6cc9a5745ab6a5c2a6731, "
        "data/lowmoi_example_data.rda"
    ),
    "licence": "MIT (Copyright (c) 2024 sceptredata authors); see papalexi2021_LICENSE.md",
}


def bundle_path() -> Path:
    """Path of the bundled data file inside the installed package."""
    return Path(str(resources.files("lcdiff") / "datasets_data" / BUNDLE_NAME))


def papalexi2021(
    *,
    control: str = DEFAULT_CONTROL,
    min_umis: float = 5,
    min_fraction: float = 0.5,
    drop_unassigned: bool = True,
    measured_targets_only: bool = False,
    verbose: bool = False,
) -> AnnData:
    """Papalexi et al. 2021 THP-1 CRISPR-KO screen (subset), bundled; loads offline in < 1 s.

    THP-1 cells stimulated with IFN-γ, ECCITE-seq, low MOI: 20,729 cells × 299 genes (a random
    gene subset plus the measured targets), 110 gRNAs against 26 genes plus 9 non-targeting
    guides. Nine targets are among the measured genes (``MEASURED_TARGETS``: STAT1, JAK2, CMTM6,
    STAT2, UBE2L6, STAT3, TNFRSF14, IFNGR2, NFKBIA); the other 17 are perturbed but not measured.
    Singles only, no combinations.

    Labels are not the paper's: they come from ``lc.pp.assign_perturbations`` (low MOI) on the
    gRNA counts, with the thresholds given here; non-targeting cells get ``control``.

    Source: the MIT-licensed R package ``sceptredata`` (Katsevich lab), commit ``ec722d5``,
    ``data/lowmoi_example_data.rda`` (counts unchanged; stored compactly here). Publication:
    Papalexi, Mimitou, Butler, et al., Nature Genetics 53, 322–331 (2021),
    doi:10.1038/s41588-021-00778-2; raw data GEO GSE153056. Licence text and attribution:
    ``lcdiff/datasets_data/papalexi2021_LICENSE.md``. Please cite the publication.

    Parameters
    ----------
    control
        Label of non-targeting cells.
    min_umis, min_fraction
        Low-MOI assignment thresholds (see ``lc.pp.assign_perturbations``).
    drop_unassigned
        Drop cells without a confident gRNA (966 cells at the default thresholds).
    measured_targets_only
        Keep only control cells and cells whose target is one of the measured genes (what a
        model of these 299 genes can represent); otherwise ``lc.pp.prepare`` drops the 17
        unmeasured targets itself, with a warning.
    verbose
        Print the assignment summary.

    Returns
    -------
    Raw AnnData, cells × 299 genes: ``X`` CSR ``float32`` UMI counts; ``obs["perturbation"]``
    (canonical labels), ``obs["bio_rep"]``, ``obs["grna_n_umis"]``,
    ``obs["n_grnas_passing"]``; ``var["is_measured_target"]``; ``obsm["grna_counts"]`` dense
    ``int32`` ``[cells, 110]``; ``uns["grna_ids"]``, ``uns["grna_targets"]``,
    ``uns["source"]`` and the assignment record ``uns["assign_perturbations"]``. Not prepared: run
    ``lc.pp.prepare(adata, n_genes=...)`` with ``n_genes`` ≤ 299.

    Examples
    --------
    >>> import lcdiff as lc
    >>> adata = lc.datasets.papalexi2021(measured_targets_only=True)
    >>> screen = lc.pp.prepare(adata, n_genes=200)
    """
    arrays = _load_bundle(str(bundle_path()))
    adata = _to_anndata(arrays)
    adata = assign_perturbations(
        adata,
        "grna_counts",
        [str(t) for t in arrays["grna_targets"]],
        moi="low",
        min_umis=min_umis,
        min_fraction=min_fraction,
        control=control,
        non_targeting=(SOURCE_CONTROL,),
        inplace=False,
        verbose=verbose,
    )
    labels = adata.obs["perturbation"].astype(str)
    keep = np.ones(adata.n_obs, dtype=bool)
    if drop_unassigned:
        keep &= (labels != UNASSIGNED).to_numpy()
    if measured_targets_only:
        measured = set(MEASURED_TARGETS)
        keep &= (labels != UNASSIGNED).to_numpy()
        keep &= np.array(
            [keep[i] and set(parse_label(lab, control)) <= measured for i, lab in enumerate(labels)]
        )
    if not keep.all():
        adata = adata[keep].copy()
        adata.obs["perturbation"] = adata.obs["perturbation"].cat.remove_unused_categories()
    return adata


def _to_anndata(arrays: dict[str, np.ndarray]) -> AnnData:
    counts = sp.csr_matrix(arrays["counts"].T.astype(np.float32))
    # dense (9 MB): some AnnData consumers copy obsm entries with np.array, which breaks sparse
    grna = np.ascontiguousarray(arrays["grna_counts"].T.astype(np.int32))
    n_cells = counts.shape[0]
    levels = [str(x) for x in arrays["bio_rep_levels"]]
    obs = pd.DataFrame(
        {"bio_rep": pd.Categorical.from_codes(arrays["bio_rep"].astype(int), levels)},
        index=[f"cell_{i:05d}" for i in range(n_cells)],
    )
    genes = [str(g) for g in arrays["genes"]]
    var = pd.DataFrame({"is_measured_target": [g in MEASURED_TARGETS for g in genes]}, index=genes)
    obs["n_umis"] = np.asarray(counts.sum(axis=1)).ravel()
    adata = AnnData(X=counts, obs=obs, var=var)
    adata.obsm["grna_counts"] = grna
    adata.uns["grna_ids"] = np.asarray(arrays["grna_ids"]).astype(str)
    adata.uns["grna_targets"] = np.asarray(arrays["grna_targets"]).astype(str)
    adata.uns["source"] = dict(SOURCE)
    return adata


@functools.lru_cache(maxsize=2)
def _load_bundle(path: str) -> dict[str, np.ndarray]:
    """Read the bundled arrays once per process (read-only copies are handed out)."""
    if not os.path.exists(path):
        raise InputNotFoundError(
            f"The bundled Papalexi 2021 data file is missing ({path}); reinstall lcdiff "
            "(pip install --force-reinstall lcdiff) so that package data is included."
        )
    try:
        with lzma.open(path) as handle:
            raw = handle.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in ARRAY_NAMES}
    except (lzma.LZMAError, zipfile.BadZipFile, OSError, KeyError, ValueError) as err:
        raise DataFormatError(
            f"Cannot read the bundled Papalexi 2021 file {path}: {err}. Reinstall lcdiff."
        ) from err
    for value in arrays.values():
        value.setflags(write=False)
    return arrays


def _write_bundle(source_h5ad: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the bundle from the derived h5ad of ``../shared/data/papalexi2021-thp1``.

    Maintainer tool (not public API): the h5ad holds the same counts as the MIT-licensed
    ``lowmoi_example_data.rda`` (see that folder's SOURCE.md). Returns the file size in bytes.
    """
    import anndata as ad

    src = ad.read_h5ad(source_h5ad)
    counts = sp.csr_matrix(src.X).toarray()
    grna = sp.csr_matrix(src.obsm["grna_counts"]).toarray()
    for name, mat in (("counts", counts), ("grna_counts", grna)):
        if mat.min() < 0 or mat.max() > np.iinfo(np.uint16).max:
            raise DataFormatError(f"{name} do not fit uint16; the bundle format needs another type")
    bio_rep = pd.Categorical(src.obs["bio_rep"].astype(str))
    arrays = {
        "counts": np.ascontiguousarray(counts.T.astype(np.uint16)),
        "grna_counts": np.ascontiguousarray(grna.T.astype(np.uint16)),
        "genes": np.asarray(src.var_names, dtype=str),
        "grna_ids": np.asarray(src.uns["grna_ids"], dtype=str),
        "grna_targets": np.asarray(src.uns["grna_targets"], dtype=str),
        "bio_rep": bio_rep.codes.astype(np.uint8),
        "bio_rep_levels": np.asarray(bio_rep.categories, dtype=str),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    packed = lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)
    out = Path(out)
    atomic_write_bytes(out, packed)
    return len(packed)
