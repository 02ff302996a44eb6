"""lc.pp.assign_perturbations: hand-made gRNA matrices with known answers, and real screens."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import lcdiff as lc
from lcdiff.data.assign import HIGH_MOI_OUTCOMES, LOW_MOI_OUTCOMES, UNASSIGNED
from lcdiff.data.normalize import log1p_cp10k
from lcdiff.errors import (
    ConfigError,
    InvalidCountsError,
    InvalidLabelError,
    MissingColumnError,
    ScreenError,
)

# gRNA columns: two guides for A, one for B, one non-targeting
TARGETS = ["A", "A", "B", "non-targeting"]
GUIDE_IDS = ["A_g1", "A_g2", "B_g1", "NT_g1"]

# (gRNA UMIs, expected low-MOI label, expected outcome) with min_umis=5, min_fraction=0.5
LOW_CASES = [
    ([10, 0, 0, 0], "A", "assigned_target"),
    ([0, 0, 0, 0], UNASSIGNED, "no_grna"),
    ([4, 0, 0, 0], UNASSIGNED, "below_min_umis"),
    ([6, 0, 6, 0], UNASSIGNED, "tie"),  # tie between targets
    ([7, 7, 0, 0], UNASSIGNED, "tie"),  # tie between two guides of the same target
    ([6, 0, 5, 3], UNASSIGNED, "below_min_fraction"),  # 6/14 < 0.5
    ([0, 0, 0, 8], "ctrl", "assigned_control"),
    ([1, 0, 12, 0], "B", "assigned_target"),
    ([10, 0, 5, 5], "A", "assigned_target"),  # exactly 0.5 passes
    ([10, 3, 3, 0], "A", "assigned_target"),  # a tie below the top does not matter
    ([5, 0, 0, 0], "A", "assigned_target"),  # exactly min_umis passes
]

# (gRNA UMIs, expected high-MOI label, expected outcome) with min_umis=5
HIGH_CASES = [
    ([10, 0, 0, 0], "A", "single_target"),
    ([6, 7, 0, 0], "A", "single_target"),  # two guides, one target
    ([6, 0, 5, 0], "A+B", "multi_target"),
    ([0, 0, 6, 9], "B", "single_target"),  # non-targeting drops out of a combination
    ([0, 0, 0, 9], "ctrl", "control_only"),
    ([4, 0, 4, 0], UNASSIGNED, "below_min_umis"),
    ([0, 0, 0, 0], UNASSIGNED, "no_grna"),
    ([5, 0, 4, 0], "A", "single_target"),  # threshold inclusive, 4 UMIs ignored
]


def _screen(rows) -> tuple[ad.AnnData, np.ndarray]:
    grna = np.asarray([r[0] for r in rows], dtype=float)
    adata = ad.AnnData(X=np.ones((len(rows), 3), dtype=np.float32))
    adata.obs_names = [f"cell{i}" for i in range(len(rows))]
    return adata, grna


def _expected(rows, column: int) -> list[str]:
    return [r[column] for r in rows]


def _tally(rows, names) -> dict[str, int]:
    found = pd.Series([r[2] for r in rows]).value_counts()
    return {name: int(found.get(name, 0)) for name in names}


@pytest.mark.parametrize("as_sparse", [False, True])
def test_low_moi_known_answers(as_sparse):
    adata, grna = _screen(LOW_CASES)
    counts = sp.csr_matrix(grna) if as_sparse else grna
    out = lc.pp.assign_perturbations(adata, counts, TARGETS, moi="low", verbose=False)
    assert list(out.obs["perturbation"].astype(str)) == _expected(LOW_CASES, 1)
    record = out.uns["assign_perturbations"]
    assert record["outcomes"] == _tally(LOW_CASES, LOW_MOI_OUTCOMES)
    assert sum(record["outcomes"].values()) == adata.n_obs
    np.testing.assert_array_equal(out.obs["grna_n_umis"], grna.sum(axis=1))
    np.testing.assert_array_equal(out.obs["n_grnas_passing"], (grna >= 5).sum(axis=1))


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_high_moi_known_answers(fmt):
    adata, grna = _screen(HIGH_CASES)
    counts = {"dense": grna, "csr": sp.csr_matrix(grna), "csc": sp.csc_matrix(grna)}[fmt]
    out = lc.pp.assign_perturbations(adata, counts, TARGETS, moi="high", verbose=False)
    assert list(out.obs["perturbation"].astype(str)) == _expected(HIGH_CASES, 1)
    assert out.uns["assign_perturbations"]["outcomes"] == _tally(HIGH_CASES, HIGH_MOI_OUTCOMES)


def test_thresholds_change_the_answer():
    adata, grna = _screen(LOW_CASES)
    strict = lc.pp.assign_perturbations(
        adata, grna, TARGETS, min_umis=10, min_fraction=0.9, verbose=False
    )
    labels = list(strict.obs["perturbation"].astype(str))
    # [10,0,0,0] still passes; [1,0,12,0] passes (12/13 > 0.9); [10,0,5,5] no longer does
    assert labels[0] == "A" and labels[7] == "B" and labels[8] == UNASSIGNED
    assert labels[10] == UNASSIGNED  # 5 UMIs < 10
    lenient = lc.pp.assign_perturbations(adata, grna, TARGETS, min_fraction=0.4, verbose=False)
    assert lenient.obs["perturbation"].astype(str).iloc[5] == "A"  # 6/14 ≥ 0.4


def test_high_moi_three_targets_and_dual_guide_constructs():
    grna = np.array([[5, 6, 7, 0], [9, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    adata = ad.AnnData(X=np.ones((3, 2), dtype=np.float32))
    targets = ["C", "B+C", "A", "Non-Targeting"]  # a dual-guide construct; NT in another case
    out = lc.pp.assign_perturbations(adata, grna, targets, moi="high", verbose=False)
    assert list(out.obs["perturbation"].astype(str)) == ["A+B+C", "C", UNASSIGNED]


def test_custom_control_and_non_targeting_names():
    grna = np.array([[0, 0, 0, 9], [8, 0, 0, 0]], dtype=float)
    adata = ad.AnnData(X=np.ones((2, 2), dtype=np.float32))
    targets = ["A", "A", "B", "safe-harbor"]
    out = lc.pp.assign_perturbations(
        adata, grna, targets, control="NTC", non_targeting=("safe-harbor",), verbose=False
    )
    assert list(out.obs["perturbation"].astype(str)) == ["NTC", "A"]
    # without naming it, "safe-harbor" is just another target gene
    plain = lc.pp.assign_perturbations(adata, grna, targets, verbose=False)
    assert plain.obs["perturbation"].astype(str).iloc[0] == "safe-harbor"


def test_dataframe_obsm_and_uns_inputs_align_by_name():
    adata, grna = _screen(HIGH_CASES)
    expected = _expected(HIGH_CASES, 1)
    # DataFrame with shuffled rows and columns; targets as a Series keyed by gRNA id
    frame = pd.DataFrame(grna, index=adata.obs_names, columns=GUIDE_IDS)
    shuffled = frame.iloc[::-1, [2, 0, 3, 1]]
    series = pd.Series(TARGETS, index=GUIDE_IDS).iloc[::-1]
    out = lc.pp.assign_perturbations(adata, shuffled, series, moi="high", verbose=False)
    assert list(out.obs["perturbation"].astype(str)) == expected
    # sparse-dtype DataFrame and a dict of targets
    sparse_frame = frame.astype(pd.SparseDtype(float, 0.0))
    out = lc.pp.assign_perturbations(
        adata, sparse_frame, dict(zip(GUIDE_IDS, TARGETS, strict=True)), moi="high", verbose=False
    )
    assert list(out.obs["perturbation"].astype(str)) == expected
    # obsm key plus uns key
    adata.obsm["guides"] = sp.csr_matrix(grna)
    adata.uns["guide_targets"] = np.array(TARGETS)
    out = lc.pp.assign_perturbations(adata, "guides", "guide_targets", moi="high", verbose=False)
    assert list(out.obs["perturbation"].astype(str)) == expected


def test_copy_by_default_and_inplace(tmp_path):
    adata, grna = _screen(LOW_CASES)
    out = lc.pp.assign_perturbations(adata, grna, TARGETS, key_added="guide_call", verbose=False)
    assert "guide_call" not in adata.obs and "assign_perturbations" not in adata.uns
    assert out is not adata and "guide_call" in out.obs
    assert lc.pp.assign_perturbations(adata, grna, TARGETS, inplace=True, verbose=False) is None
    assert list(adata.obs["perturbation"].astype(str)) == _expected(LOW_CASES, 1)
    adata.write_h5ad(tmp_path / "assigned.h5ad")  # the uns record must be writable
    back = ad.read_h5ad(tmp_path / "assigned.h5ad")
    record = back.uns["assign_perturbations"]
    assert dict(zip(record["labels"], record["cells_per_label"], strict=True))["A"] == 4


def test_summary_is_printed(capsys):
    adata, grna = _screen(LOW_CASES)
    lc.pp.assign_perturbations(adata, grna, TARGETS)
    text = capsys.readouterr().out
    assert "low MOI" in text and "tie" in text and "below_min_fraction" in text


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"grna_counts": np.zeros((3, 4))}, ScreenError, "rows"),
        ({"grna_counts": "missing"}, MissingColumnError, "obsm"),
        ({"grna_targets": ["A", "B"]}, ScreenError, "one target per gRNA"),
        ({"grna_targets": "missing"}, MissingColumnError, "uns"),
        ({"grna_targets": None}, ScreenError, "required"),
        ({"grna_targets": dict(zip(GUIDE_IDS, TARGETS, strict=True))}, ScreenError, "DataFrame"),
        ({"grna_targets": ["A", None, "B", "NT"]}, InvalidLabelError, "no target"),
        ({"grna_targets": ["A", "A++B", "B", "NT"]}, InvalidLabelError, r"grna_1.*'A\+\+B'"),
        ({"grna_targets": ["A", "unassigned", "B", "NT"]}, InvalidLabelError, "rename"),
        ({"moi": "medium"}, ConfigError, "moi"),
        ({"min_umis": 0}, ConfigError, "min_umis"),
        ({"min_fraction": 1.5}, ConfigError, "min_fraction"),
        ({"control": "unassigned"}, ConfigError, "control"),
    ],
)
def test_bad_input_raises_typed_errors(kwargs, error, fragment):
    adata, grna = _screen(LOW_CASES)
    args = {"grna_counts": grna, "grna_targets": TARGETS} | kwargs
    grna_counts, grna_targets = args.pop("grna_counts"), args.pop("grna_targets")
    with pytest.raises(error, match=fragment):
        lc.pp.assign_perturbations(adata, grna_counts, grna_targets, verbose=False, **args)


@pytest.mark.parametrize(
    ("bad_value", "fragment"), [(-1.0, "negative"), (np.nan, "NaN"), (2.5, "whole numbers")]
)
def test_bad_counts_raise(bad_value, fragment):
    adata, grna = _screen(LOW_CASES)
    grna[0, 0] = bad_value
    with pytest.raises(InvalidCountsError, match=fragment):
        lc.pp.assign_perturbations(adata, grna, TARGETS, verbose=False)


def test_dataframe_missing_cells_raises():
    adata, grna = _screen(LOW_CASES)
    frame = pd.DataFrame(grna, index=adata.obs_names, columns=GUIDE_IDS).iloc[1:]
    with pytest.raises(ScreenError, match="lacks 1"):
        lc.pp.assign_perturbations(adata, frame, TARGETS, verbose=False)


# --- real screens (../shared/data; skipped where absent) ---------------------------------
PAPALEXI_MEASURED_TARGETS = [
    "STAT1", "JAK2", "CMTM6", "STAT2", "UBE2L6", "STAT3", "TNFRSF14", "IFNGR2", "NFKBIA",
]  # fmt: skip


def test_papalexi_on_target_knockdown(shared_data):
    path = shared_data / "papalexi2021-thp1" / "papalexi2021_thp1_eccite_subset.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found")
    raw = ad.read_h5ad(path)
    out = lc.pp.assign_perturbations(raw, "grna_counts", "grna_targets", verbose=False)
    labels = out.obs["perturbation"].astype(str).to_numpy()
    # the shared file's own labels come from the same rule (with its control name)
    shared = raw.obs["perturbation"].astype(str).replace({"non-targeting": "ctrl"}).to_numpy()
    np.testing.assert_array_equal(labels, shared)
    assert (labels == "ctrl").sum() == 2304 and (labels == UNASSIGNED).sum() == 966

    expr = log1p_cp10k(out.X)
    genes = list(out.var_names)
    control = labels == "ctrl"
    for target in PAPALEXI_MEASURED_TARGETS:
        cells = labels == target
        assert cells.sum() > 100, target
        column = genes.index(target)
        ko, ctrl = expr[cells, column].mean(), expr[control, column].mean()
        assert ko < ctrl, f"{target}: {ko:.3f} (assigned) vs {ctrl:.3f} (control)"


def test_gasperini_high_moi_counts(shared_data):
    path = shared_data / "gasperini2019-k562" / "gasperini2019_k562_highmoi_subset.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found")
    raw = ad.read_h5ad(path)
    out = lc.pp.assign_perturbations(raw, "grna_counts", "grna_groups", moi="high", verbose=False)
    # SOURCE.md: 7,638 cells carry >= 1 gRNA at >= 5 UMIs and 1,015 carry >= 2
    assert (out.obs["n_grnas_passing"] >= 1).sum() == 7638
    assert (out.obs["n_grnas_passing"] >= 2).sum() == 1015
    labels = out.obs["perturbation"].astype(str)
    assert (labels != UNASSIGNED).sum() == 7638
    n_multi = out.uns["assign_perturbations"]["outcomes"]["multi_target"]
    assert n_multi == labels.str.contains("+", regex=False).sum() > 0
