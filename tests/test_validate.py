"""lc.pp.validate: every bad input raises its typed error (or warns) and the input is untouched."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import lcdiff as lc
from lcdiff.errors import (
    ControlNotFoundError,
    EmptyScreenError,
    InvalidCountsError,
    InvalidLabelError,
    LcdiffError,
    MissingColumnError,
    TooFewCellsError,
    UnknownGeneError,
)
from screen_factory import count_screen


def small(**kw) -> ad.AnnData:
    kw.setdefault("cells_per_condition", 12)
    kw.setdefault("control_cells", 30)
    kw.setdefault("n_genes", 20)
    kw.setdefault("n_perturbed", 4)
    kw.setdefault("n_doubles", 2)
    return count_screen(**kw)


def snapshot(adata: ad.AnnData):
    x = adata.X.toarray() if sp.issparse(adata.X) else np.array(adata.X, copy=True)
    return x, adata.obs.copy(), list(adata.var_names), dict(adata.uns), list(adata.layers)


def assert_unchanged(adata, snap):
    x, obs, var_names, uns, layers = snap
    now = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    np.testing.assert_array_equal(now, x)
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert list(adata.var_names) == var_names
    assert list(adata.layers) == layers
    assert dict(adata.uns).keys() == uns.keys()


def test_valid_screen_passes_and_input_untouched():
    a = small()
    a.obs.loc[a.obs_names[:12], "perturbation"] = "G01+G00"  # non-canonical order
    snap = snapshot(a)
    out = lc.pp.validate(a, min_cells=5)
    assert_unchanged(a, snap)
    assert out is not a
    assert "G00+G01" in set(out.obs["perturbation"])
    assert "G01+G00" not in set(out.obs["perturbation"])
    assert out.X.dtype == np.float32
    assert isinstance(out.obs["perturbation"].dtype, pd.CategoricalDtype)
    assert out.obs.loc[out.obs["perturbation"] == "G00+G01", "n_targets"].eq(2).all()
    assert out.obs.loc[out.obs["perturbation"] == "ctrl", "n_targets"].eq(0).all()
    assert "lcdiff" not in out.uns  # a validated screen is not a prepared one


def test_missing_perturbation_column_lists_columns():
    a = small()
    with pytest.raises(MissingColumnError) as info:
        lc.pp.validate(a, perturbation_key="guide", min_cells=5)
    msg = str(info.value)
    assert "'guide'" in msg and "'perturbation'" in msg and "'batch'" in msg
    assert "perturbation_key=" in msg


def test_missing_layer():
    with pytest.raises(MissingColumnError, match="No layer 'counts'"):
        lc.pp.validate(small(), layer="counts", min_cells=5)


def test_no_control_lists_frequent_labels():
    a = small()
    a.obs["perturbation"] = a.obs["perturbation"].replace({"ctrl": "NT"})
    snap = snapshot(a)
    with pytest.raises(ControlNotFoundError) as info:
        lc.pp.validate(a, min_cells=5)
    msg = str(info.value)
    assert "'NT' (30)" in msg  # the most frequent label, with its count
    assert "control=" in msg
    assert_unchanged(a, snap)
    assert lc.pp.validate(a, control="NT", min_cells=5).n_obs == a.n_obs


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_counts(bad):
    a = small()
    a.X[3, 2] = bad
    with pytest.raises(InvalidCountsError, match="NaN or inf") as info:
        lc.pp.validate(a, min_cells=5)
    assert 'layer="counts"' in str(info.value)


def test_negative_counts():
    a = small()
    a.X[0, 0] = -1
    with pytest.raises(InvalidCountsError, match="negative"):
        lc.pp.validate(a, min_cells=5)


def test_non_integer_counts_hint_counts_layer():
    a = small()
    a.layers["counts"] = a.X.copy()
    a.X = np.log1p(a.X)  # log-normalized data in X: the usual mistake
    snap = snapshot(a)
    with pytest.raises(InvalidCountsError, match="non-integer") as info:
        lc.pp.validate(a, min_cells=5)
    assert "has a 'counts' layer" in str(info.value) and 'layer="counts"' in str(info.value)
    assert_unchanged(a, snap)
    out = lc.pp.validate(a, layer="counts", min_cells=5)
    np.testing.assert_array_equal(out.X, a.layers["counts"])
    assert list(out.layers) == []  # only counts are carried, in X


def test_non_integer_sparse_counts():
    a = small(sparse=True)
    a.X = a.X.copy()
    a.X.data[0] = 0.5
    with pytest.raises(InvalidCountsError, match="non-integer"):
        lc.pp.validate(a, min_cells=5)


def test_empty_anndata():
    a = small()
    with pytest.raises(EmptyScreenError, match="0 cells"):
        lc.pp.validate(a[:0].copy(), min_cells=5)


def test_zero_genes():
    a = small()
    with pytest.raises(EmptyScreenError, match="0 genes"):
        lc.pp.validate(a[:, :0].copy(), min_cells=5)


def test_only_all_zero_cells():
    a = small()
    a.X[:] = 0
    with pytest.raises(EmptyScreenError, match="zero counts"):
        lc.pp.validate(a, min_cells=5)


def test_some_all_zero_cells_are_dropped_with_warning():
    a = small()
    a.X[:2] = 0  # two control cells
    with pytest.warns(UserWarning, match="Dropped 2 cells with zero counts"):
        out = lc.pp.validate(a, min_cells=5)
    assert out.n_obs == a.n_obs - 2


def test_unknown_genes_are_dropped_with_warning_listing_them():
    a = small()
    a.obs["perturbation"] = a.obs["perturbation"].astype(str)
    a.obs.loc[a.obs_names[-12:], "perturbation"] = "NOTAGENE+G00"
    a.obs.loc[a.obs_names[-24:-12], "perturbation"] = "MISSING1"
    with pytest.warns(UserWarning, match="not in var_names") as record:
        out = lc.pp.validate(a, min_cells=5)
    msg = " ".join(str(w.message) for w in record)
    assert "MISSING1" in msg and "NOTAGENE" in msg
    assert out.n_obs == a.n_obs - 24
    assert not set(out.obs["perturbation"]) & {"NOTAGENE+G00", "MISSING1"}


def test_unknown_genes_strict_raises():
    a = small()
    a.obs["perturbation"] = a.obs["perturbation"].astype(str)
    a.obs.loc[a.obs_names[-12:], "perturbation"] = "NOTAGENE"
    with pytest.raises(UnknownGeneError, match="NOTAGENE") as info:
        lc.pp.validate(a, min_cells=5, strict=True)
    assert "var_names" in str(info.value)


def test_duplicate_var_names_made_unique_with_warning():
    a = small()
    names = list(a.var_names)
    names[10] = names[11] = "DUP"
    a.var_names = names
    with pytest.warns(UserWarning, match="more than once") as record:
        out = lc.pp.validate(a, min_cells=5)
    assert any("DUP" in str(w.message) for w in record)
    assert out.var_names.is_unique
    assert "DUP" in out.var_names and "DUP-1" in out.var_names
    assert not a.var_names.is_unique  # the input keeps its names


def test_small_conditions_dropped_with_warning():
    a = small()
    a.obs["perturbation"] = a.obs["perturbation"].astype(str)
    a.obs.loc[a.obs_names[-12:-4], "perturbation"] = "G03"  # G01+G02 keeps only 4 cells
    with pytest.warns(UserWarning, match="fewer than 5 cells") as record:
        out = lc.pp.validate(a, min_cells=5)
    assert any("G01+G02" in str(w.message) for w in record)
    counts = out.obs["perturbation"].value_counts()
    assert counts.min() >= 5
    assert set(counts.index) == set(a.obs["perturbation"]) - {
        lab for lab, n in a.obs["perturbation"].value_counts().items() if n < 5
    }


def test_all_conditions_too_small_raises():
    a = small()
    with pytest.raises(TooFewCellsError, match="Every perturbation has fewer than 13"):
        lc.pp.validate(a, min_cells=13)  # control has 30, perturbations 12


def test_control_too_small_raises():
    with pytest.raises(TooFewCellsError, match="control 'ctrl' has 30 cells"):
        lc.pp.validate(small(), min_cells=31)


@pytest.mark.parametrize("bad", ["G00++G01", "", " G00", "G00 ", "G00+ G01"])
def test_malformed_labels(bad):
    a = small()
    a.obs["perturbation"] = a.obs["perturbation"].astype(str)
    a.obs.loc[a.obs_names[-1], "perturbation"] = bad
    with pytest.raises(InvalidLabelError) as info:
        lc.pp.validate(a, min_cells=5)
    assert "obs['perturbation']" in str(info.value)
    assert isinstance(info.value, LcdiffError)


def test_missing_label_value():
    a = small()
    a.obs["perturbation"] = a.obs["perturbation"].astype(object)
    a.obs.loc[a.obs_names[-1], "perturbation"] = None
    with pytest.raises(InvalidLabelError, match="no label"):
        lc.pp.validate(a, min_cells=5)


def test_gears_style_labels_and_large_combinations():
    a = small()
    a.obs["perturbation"] = a.obs["perturbation"].astype(str)
    labels = a.obs["perturbation"].replace({"G00": "G00+ctrl", "G01": "ctrl+G01"})
    labels.iloc[-12:] = "G02+G00+G01"  # a triple is legal
    a.obs["perturbation"] = labels
    out = lc.pp.validate(a, min_cells=5)
    present = set(out.obs["perturbation"])
    assert {"G00", "G01", "G00+G01+G02"} <= present
    assert not any("ctrl+" in lab or "+ctrl" in lab for lab in present)
    assert out.obs.loc[out.obs["perturbation"] == "G00+G01+G02", "n_targets"].eq(3).all()


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_sparse_dense_int_float_accepted(sparse, dtype):
    a = small(sparse=sparse, dtype=dtype)
    out = lc.pp.validate(a, min_cells=5)
    ref = lc.pp.validate(small(), min_cells=5)
    assert sp.issparse(out.X) == sparse
    assert out.X.dtype == np.float32
    got = out.X.toarray() if sparse else out.X
    np.testing.assert_array_equal(got, ref.X)


def test_perturbation_key_other_column():
    a = small()
    a.obs = a.obs.rename(columns={"perturbation": "guide_target"})
    out = lc.pp.validate(a, perturbation_key="guide_target", min_cells=5)
    assert "perturbation" in out.obs and "guide_target" in out.obs
    assert "perturbation" not in a.obs


def test_duplicate_obs_names_made_unique_with_warning():
    a = small()
    a.obs_names = ["same"] * a.n_obs
    with pytest.warns(UserWarning, match="obs_names"):
        out = lc.pp.validate(a, min_cells=5)
    assert out.obs_names.is_unique and out.n_obs == a.n_obs
