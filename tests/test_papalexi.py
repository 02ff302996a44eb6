"""lc.datasets.papalexi2021: the bundled real screen loads offline, is faithful, and fits."""

from __future__ import annotations

import lzma
import time

import anndata as ad
import numpy as np
import pytest

import lcdiff as lc
from lcdiff.data import papalexi
from lcdiff.data.assign import UNASSIGNED
from lcdiff.errors import DataFormatError, InputNotFoundError

# cells per label at the default thresholds (../shared/data/papalexi2021-thp1/SOURCE.md)
EXPECTED_CELLS = {"ctrl": 2304, "IFNGR2": 1159, "JAK2": 1004, "STAT1": 424, "SPI1": 47}


@pytest.fixture(scope="module")
def papalexi_raw() -> ad.AnnData:
    return lc.datasets.papalexi2021()


def test_bundle_is_small_and_licensed():
    path = papalexi.bundle_path()
    assert path.is_file()
    assert path.stat().st_size <= 3 * 1024**2
    licence = (path.parent / "papalexi2021_LICENSE.md").read_text()
    assert "MIT License" in licence and "sceptredata" in licence and "Papalexi" in licence


def test_loads_fast_with_expected_content(papalexi_raw):
    start = time.perf_counter()
    adata = lc.datasets.papalexi2021()
    assert time.perf_counter() - start < 10  # seconds, generous for a loaded CI machine
    assert adata.shape == (20729 - 966, 299)  # unassigned cells dropped by default
    counts = adata.obs["perturbation"].value_counts()
    for label, n in EXPECTED_CELLS.items():
        assert counts[label] == n, label
    assert UNASSIGNED not in counts.index
    assert adata.var["is_measured_target"].sum() == 9
    assert set(adata.var_names[adata.var["is_measured_target"]]) == set(papalexi.MEASURED_TARGETS)
    x = adata.X.toarray()
    assert x.dtype == np.float32 and (x >= 0).all() and np.array_equal(x, np.round(x))
    assert "doi" in adata.uns["source"] and "MIT" in adata.uns["source"]["licence"]
    assert "10.1038/s41588-021-00778-2" in lc.datasets.papalexi2021.__doc__.replace("\n", "")


def test_each_call_returns_an_independent_object(papalexi_raw):
    first = lc.datasets.papalexi2021()
    first.X.data[:] = -1
    first.obsm["grna_counts"][:] = 0
    second = lc.datasets.papalexi2021()
    assert second.X.data.min() >= 0 and second.obsm["grna_counts"].max() > 0


def test_options_subset_and_relabel():
    measured = lc.datasets.papalexi2021(measured_targets_only=True, control="NT")
    assert set(measured.obs["perturbation"]) == {"NT", *papalexi.MEASURED_TARGETS}
    assert measured.n_obs == 2304 + sum(
        n for lab, n in measured.obs["perturbation"].value_counts().items() if lab != "NT"
    )
    everything = lc.datasets.papalexi2021(drop_unassigned=False)
    assert everything.n_obs == 20729
    assert (everything.obs["perturbation"] == UNASSIGNED).sum() == 966
    strict = lc.datasets.papalexi2021(min_fraction=0.9, drop_unassigned=False)
    assert (strict.obs["perturbation"] == UNASSIGNED).sum() > 966


def test_bundle_matches_the_shared_copy(shared_data, papalexi_raw):
    path = shared_data / "papalexi2021-thp1" / "papalexi2021_thp1_eccite_subset.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found")
    shared = ad.read_h5ad(path)
    full = lc.datasets.papalexi2021(drop_unassigned=False, control="non-targeting")
    assert list(full.var_names) == list(shared.var_names)
    assert (full.X != shared.X).nnz == 0
    np.testing.assert_array_equal(full.obsm["grna_counts"], shared.obsm["grna_counts"].toarray())
    np.testing.assert_array_equal(full.uns["grna_targets"], shared.uns["grna_targets"])
    np.testing.assert_array_equal(
        full.obs["bio_rep"].astype(str), shared.obs["bio_rep"].astype(str)
    )
    np.testing.assert_array_equal(
        full.obs["perturbation"].astype(str), shared.obs["perturbation"].astype(str)
    )


def test_missing_or_corrupt_bundle_raises(tmp_path):
    with pytest.raises(InputNotFoundError, match="reinstall"):
        papalexi._load_bundle(str(tmp_path / "absent.npz.xz"))
    broken = tmp_path / "broken.npz.xz"
    broken.write_bytes(b"not an xz file")
    with pytest.raises(DataFormatError, match="Reinstall"):
        papalexi._load_bundle(str(broken))
    wrong = tmp_path / "wrong.npz.xz"
    wrong.write_bytes(lzma.compress(b"PK not really a zip"))
    with pytest.raises(DataFormatError):
        papalexi._load_bundle(str(wrong))


def test_prepare_and_fit_tiny(papalexi_raw):
    adata = lc.datasets.papalexi2021(measured_targets_only=True)
    screen = lc.pp.prepare(adata, n_genes=60)
    assert list(screen.var_names[:9]) and set(screen.var_names[:9]) == set(
        papalexi.MEASURED_TARGETS
    )
    assert screen.var["perturbed"].sum() == 9
    model = lc.LCD(screen, preset="tiny").fit(progress=False)
    pred = model.predict(["STAT1", "ctrl"], n_cells=50)
    assert pred.shape == (100, 60)
    assert np.isfinite(pred.X).all()
    assert set(pred.obs["perturbation"].astype(str)) == {"STAT1", "ctrl"}
