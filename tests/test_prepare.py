"""lc.pp.prepare: QC, gene selection (lcd-evaluation §2.6), normalization, markers, record."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import lcdiff as lc
from lcdiff.data import preprocess
from lcdiff.data.labels import parse_label
from lcdiff.data.normalize import log1p_cp10k
from lcdiff.data.screen import conditions, control_label, screen_info
from lcdiff.errors import GeneSelectionError, InvalidCountsError, ScreenError
from screen_factory import count_screen


@pytest.fixture(scope="module")
def raw():
    return count_screen(n_genes=60, n_perturbed=8, n_doubles=6, cells_per_condition=40)


@pytest.fixture(scope="module")
def screen(raw):
    return lc.pp.prepare(raw, n_genes=30, min_cells_per_perturbation=30)


def perturbed_genes(labels, control="ctrl"):
    return {g for lab in labels for g in parse_label(lab, control)}


def test_contract(raw, screen):
    info = screen_info(screen)
    assert control_label(screen) == "ctrl" and info["perturbation_key"] == "perturbation"
    assert screen.n_vars == 30 and info["n_genes"] == 30
    counts = screen.layers["counts"]
    np.testing.assert_array_equal(counts, np.round(counts))
    np.testing.assert_allclose(screen.X, log1p_cp10k(counts), rtol=1e-6)
    assert screen.X.dtype == np.float32
    # counts are the raw counts of the same cells and genes
    np.testing.assert_array_equal(counts, raw[screen.obs_names, screen.var_names].X)
    assert conditions(screen)[0] == "ctrl"
    labels = set(screen.obs["perturbation"])
    assert "G00+G01" in labels
    for lab in labels:
        n = screen.obs.loc[screen.obs["perturbation"] == lab, "n_targets"]
        assert n.eq(len(parse_label(lab))).all()
    assert sorted(screen.var["hvg_rank"]) == list(range(30))


def test_every_perturbed_gene_selected_and_first(raw, screen):
    targets = perturbed_genes(raw.obs["perturbation"].unique())
    selected = list(screen.var_names)
    assert targets <= set(selected)
    assert set(selected[: len(targets)]) == targets
    assert screen.var["perturbed"].tolist() == [g in targets for g in selected]


def test_selection_follows_the_reference_order(screen):
    var = screen.var
    disp = var["dispersions_norm"].fillna(-np.inf).to_numpy()
    keys = list(zip(var["perturbed"], var["marker_count"], disp, strict=True))
    assert keys == sorted(keys, reverse=True)
    # the unperturbed genes with the most markers are selected over the most dispersed ones
    assert var.loc[~var["perturbed"], "marker_count"].max() > 0


def test_dispersion_is_seurat_on_control_and_training_singles(raw, screen):
    import scanpy as sc

    keep = raw.obs["perturbation"].map(lambda lab: len(parse_label(lab)) <= 1).to_numpy()
    work = raw[keep].copy()
    lib = work.X.sum(axis=1)
    target = np.median(lib[(work.obs["perturbation"] == "ctrl").to_numpy()])
    work.X = np.log1p(work.X / lib[:, None] * target)
    table = sc.pp.highly_variable_genes(work, flavor="seurat", inplace=False)
    table.index = raw.var_names
    np.testing.assert_allclose(
        screen.var["dispersions_norm"], table.loc[screen.var_names, "dispersions_norm"], rtol=1e-4
    )


def test_test_labels_are_ranked_first_and_do_not_leak(raw):
    test = ["G06+G05", "G06"]
    a = lc.pp.prepare(raw, n_genes=30, min_cells_per_perturbation=30, test_labels=test)
    assert set(a.var_names[:2]) == {"G05", "G06"}
    assert screen_info(a)["test_labels"] == ["G05+G06", "G06"]
    # Inflating an unperturbed gene in the test cells changes neither markers counts nor
    # dispersions: gene selection only looks at training cells.
    spiked = raw.copy()
    is_test = spiked.obs["perturbation"].isin(["G05+G06", "G06"]).to_numpy()
    col = list(spiked.var_names).index("G40")
    spiked.X[is_test, col] += 500
    b = lc.pp.prepare(spiked, n_genes=30, min_cells_per_perturbation=30, test_labels=test)
    assert list(b.var_names) == list(a.var_names)
    pd.testing.assert_series_equal(a.var["marker_count"], b.var["marker_count"])
    pd.testing.assert_series_equal(a.var["dispersions_norm"], b.var["dispersions_norm"])


def test_markers(screen):
    markers = screen_info(screen)["markers"]
    perturbed = [lab for lab in conditions(screen) if lab != "ctrl"]
    assert sorted(markers) == sorted(perturbed)
    for genes in markers.values():
        assert len(genes) == 20 and set(genes) <= set(screen.var_names)
    # perturbing G03 raises G03 strongly: it is G03's top marker
    assert markers["G03"][0] == "G03"


def test_wilcoxon_scores_match_scanpy(raw):
    import scanpy as sc

    is_ctrl = (raw.obs["perturbation"] == "ctrl").to_numpy()
    log = preprocess.selection_log1p(sp.csr_matrix(raw.X), is_ctrl)
    labels = ["G00", "G00+G01", "G05"]
    ours = preprocess.wilcoxon_scores(log, raw.obs["perturbation"], "ctrl", labels, chunk=7)
    work = ad.AnnData(
        log, obs=raw.obs.assign(perturbation=pd.Categorical(raw.obs["perturbation"])), var=raw.var
    )
    sc.tl.rank_genes_groups(
        work, "perturbation", groups=labels, reference="ctrl", method="wilcoxon", n_genes=60
    )
    result = work.uns["rank_genes_groups"]
    for lab in labels:
        theirs = pd.Series(np.asarray(result["scores"][lab], float), index=result["names"][lab])
        np.testing.assert_allclose(ours[lab], theirs[raw.var_names].to_numpy(), atol=1e-4)


def test_input_not_modified(raw):
    before = raw.copy()
    lc.pp.prepare(raw, n_genes=20, min_cells_per_perturbation=30)
    np.testing.assert_array_equal(raw.X, before.X)
    pd.testing.assert_frame_equal(raw.obs, before.obs)
    pd.testing.assert_frame_equal(raw.var, before.var)
    assert raw.uns.keys() == before.uns.keys() and list(raw.layers) == list(before.layers)


def test_refused_input_is_untouched():
    a = count_screen(n_genes=30, n_perturbed=4, n_doubles=2)
    a.X = np.log1p(a.X)
    before = a.X.copy()
    with pytest.raises(InvalidCountsError):
        lc.pp.prepare(a, n_genes=10, min_cells_per_perturbation=30)
    np.testing.assert_array_equal(a.X, before)


def test_n_genes_smaller_than_perturbed_genes(raw):
    with pytest.raises(GeneSelectionError, match="smaller than the 8 perturbed genes") as info:
        lc.pp.prepare(raw, n_genes=5, min_cells_per_perturbation=30)
    assert "n_genes >= 8" in str(info.value)


def test_n_genes_larger_than_available(raw):
    with pytest.raises(GeneSelectionError, match="only 60 genes pass QC") as info:
        lc.pp.prepare(raw, n_genes=61, min_cells_per_perturbation=30)
    assert "n_genes=None" in str(info.value)
    assert lc.pp.prepare(raw, n_genes=None, min_cells_per_perturbation=30).n_vars == 60


@pytest.mark.parametrize("bad", [0, -3, 2.5, "100", True])
def test_n_genes_must_be_a_positive_integer(raw, bad):
    with pytest.raises(GeneSelectionError, match="positive integer"):
        lc.pp.prepare(raw, n_genes=bad, min_cells_per_perturbation=30)


def test_drop_unselected_perturbations(raw):
    with pytest.warns(UserWarning, match="not among the 5 selected genes"):
        a = lc.pp.prepare(
            raw, n_genes=5, min_cells_per_perturbation=30, drop_unselected_perturbations=True
        )
    assert perturbed_genes(a.obs["perturbation"].unique()) <= set(a.var_names)
    assert screen_info(a)["dropped_perturbations"]["targets_not_selected"]


def test_sparse_and_dense_give_the_same_screen():
    dense = count_screen(n_genes=40, n_perturbed=5, n_doubles=3, seed=3)
    sparse = count_screen(n_genes=40, n_perturbed=5, n_doubles=3, seed=3, sparse=True)
    a = lc.pp.prepare(dense, n_genes=20, min_cells_per_perturbation=30)
    b = lc.pp.prepare(sparse, n_genes=20, min_cells_per_perturbation=30)
    assert list(a.var_names) == list(b.var_names)
    np.testing.assert_allclose(a.X, b.X, rtol=1e-6)
    assert screen_info(a)["markers"] == screen_info(b)["markers"]


def test_qc_thresholds_are_applied_and_recorded():
    a = count_screen(n_genes=40, n_perturbed=5, n_doubles=3, seed=1)
    a.X[:, 39] = 0
    a.X[:3, 39] = 1  # gene G39 detected in 3 cells only
    a.X[5] = 0
    a.X[5, :2] = 7  # one control cell with 2 detected genes
    out = lc.pp.prepare(
        a, n_genes=None, min_genes_per_cell=10, min_cells_per_gene=4, min_cells_per_perturbation=30
    )
    info = screen_info(out)
    assert "G39" not in out.var_names and out.n_vars == 39
    assert a.obs_names[5] not in out.obs_names
    assert (info["min_genes_per_cell"], info["min_cells_per_gene"]) == (10, 4)
    assert info["min_cells_per_perturbation"] == 30
    assert info["cells"]["input"] == a.n_obs and info["cells"]["output"] == out.n_obs
    assert info["genes"] == {"input": 40, "after_qc": 39, "output": 39}


def test_default_thresholds_scale_down_for_small_screens(raw):
    info = screen_info(lc.pp.prepare(raw, n_genes=30, min_cells_per_perturbation=30))
    assert info["min_genes_per_cell"] == 2  # 5 % of 30 selected genes
    assert info["min_cells_per_gene"] == 8  # 1 % of 760 cells
    assert preprocess.auto_min_genes_per_cell(1000) == 20
    assert preprocess.auto_min_cells_per_gene(100_000) == 200


def test_target_removed_by_gene_qc_drops_the_perturbation():
    a = count_screen(n_genes=40, n_perturbed=5, n_doubles=3, seed=2)
    col = list(a.var_names).index("G04")
    a.X[:, col] = 0
    a.X[:2, col] = 3
    with pytest.warns(UserWarning, match="removed by gene QC"):
        out = lc.pp.prepare(a, n_genes=None, min_cells_per_gene=5, min_cells_per_perturbation=30)
    assert "G04" not in out.var_names
    assert not any("G04" in lab for lab in out.obs["perturbation"].unique())
    assert "G04" in screen_info(out)["dropped_perturbations"]["targets_removed_by_gene_qc"]


def test_bad_thresholds_raise(raw):
    with pytest.raises(ScreenError, match="min_cells_per_perturbation"):
        lc.pp.prepare(raw, n_genes=30, min_cells_per_perturbation=0)


def test_round_trip_h5ad(screen, tmp_path):
    path = tmp_path / "screen.h5ad"
    screen.write_h5ad(path)
    back = ad.read_h5ad(path)
    info = screen_info(back)
    assert info["control"] == "ctrl"
    assert list(info["markers"]["G03"]) == screen_info(screen)["markers"]["G03"]
    np.testing.assert_array_equal(back.X, screen.X)
    assert back.var["perturbed"].tolist() == screen.var["perturbed"].tolist()


def test_prepare_then_split_and_subset(screen):
    split = lc.pp.split(screen, scheme="custom", test=["G01+G00"])
    train = split.subset(screen, "train")
    assert "G00+G01" not in set(train.obs["perturbation"])
    assert train.n_obs + split.subset(screen, "test").n_obs == screen.n_obs
    assert lc.pp.split(screen, scheme="random", seed=1).test  # combinations exist


def test_default_n_genes_keeps_all_genes_of_a_small_screen(raw):
    # "auto": the paper's 1000 genes, or every QC-passing gene when fewer exist (no error).
    out = lc.pp.prepare(raw, min_cells_per_perturbation=30)
    full = lc.pp.prepare(raw, min_cells_per_perturbation=30, n_genes=None)
    assert out.n_vars == full.n_vars < 1000
    assert list(out.var_names) == list(full.var_names)
    with pytest.raises(GeneSelectionError, match="n_genes=1000"):
        lc.pp.prepare(raw, min_cells_per_perturbation=30, n_genes=1000)
