"""Gene modules of a causal matrix, and the effect-map / dendrogram figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import lcdiff as lc
from lcdiff.causal import ModuleError, gene_modules, shortest_path_distances

BLOCKS = {"A": 6, "B": 7, "C": 5}


def block_matrix(seed: int = 0) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Three blocks of strong (|w| ∈ [10, 30]) effects, two loners weakly tied to block A."""
    rng = np.random.default_rng(seed)
    genes, groups = [], {}
    for name, size in BLOCKS.items():
        groups[name] = [f"{name}{i}" for i in range(size)]
        genes += groups[name]
    genes += ["L0", "L1"]
    order = rng.permutation(len(genes))  # the clustering must not depend on the input order
    genes = [genes[i] for i in order]
    mat = pd.DataFrame(0.0, index=genes, columns=genes)
    for members in groups.values():
        for i in members:
            for j in members:
                if i != j and rng.random() < 0.7:
                    mat.loc[i, j] = rng.uniform(10, 30) * rng.choice([-1, 1])
        for a, b in zip(members[:-1], members[1:], strict=True):  # keep each block connected
            mat.loc[a, b] = 15.0
    mat.loc["L0", "A0"] = 1.0  # edge length ≈ 1 > cut height: a loner
    mat.loc["C1", "L1"] = -0.5
    return mat, groups


def test_block_structure_gives_the_planted_modules():
    effects, groups = block_matrix()
    mods = gene_modules(effects, height=0.175, min_size=5)
    for members in groups.values():
        labels = set(mods.labels[members])
        assert len(labels) == 1 and labels != {-1}
    assert len({int(mods.labels[m[0]]) for m in groups.values()}) == 3
    assert mods.labels["L0"] == -1 and mods.labels["L1"] == -1
    # modules are numbered 0.. in leaf order, and members() lists them in that order
    members = mods.members()
    assert sorted(members) == [0, 1, 2]
    assert sorted(len(v) for v in members.values()) == sorted(BLOCKS.values())
    assert set(mods.order) == set(effects.index)


def test_min_size_and_height_are_honoured():
    effects, groups = block_matrix()
    mods = gene_modules(effects, min_size=7)
    assert (mods.labels[groups["B"]] >= 0).all()
    assert (mods.labels[groups["A"] + groups["C"]] == -1).all()
    # Cutting above the loners' edge length pulls L0 into block A's module.
    loose = gene_modules(effects, height=1.5, min_size=5)
    assert loose.labels["L0"] == loose.labels["A0"] != -1


def test_shortest_paths_follow_chains_in_either_direction():
    eff = np.zeros((3, 3))
    eff[0, 1] = 10.0  # 0 → 1
    eff[2, 1] = -5.0  # 2 → 1 (sign ignored)
    dist = shortest_path_distances(eff)
    np.testing.assert_allclose(dist[0, 1], 0.1, rtol=1e-6)
    np.testing.assert_allclose(dist[0, 2], 0.1 + 0.2, rtol=1e-6)  # through gene 1
    np.testing.assert_allclose(dist, dist.T)
    assert np.all(np.diag(dist) == 0)


def test_unreachable_pairs_get_five_times_the_largest_distance():
    eff = np.zeros((4, 4))
    eff[0, 1] = 2.0
    eff[2, 3] = 4.0
    dist = shortest_path_distances(eff, eps=0.0)  # no ε: the two pairs are disconnected
    assert dist[0, 2] == pytest.approx(5 * 0.5)
    assert dist[0, 1] == pytest.approx(0.5) and dist[2, 3] == pytest.approx(0.25)


def test_gene_modules_rejects_bad_input():
    with pytest.raises(ModuleError, match="square"):
        gene_modules(np.ones((3, 4)))
    with pytest.raises(ModuleError, match="NaN"):
        gene_modules(np.full((3, 3), np.nan))
    with pytest.raises(ModuleError, match="height"):
        gene_modules(np.eye(3), height=0)


def test_plots_return_figures_in_module_order():
    effects, _ = block_matrix()
    mods = lc.tl.gene_modules(effects)
    fig = lc.pl.effects(effects, mods)
    assert isinstance(fig, Figure)
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(image), effects.loc[mods.order, mods.order].to_numpy())
    fig2 = lc.pl.module_dendrogram(mods)
    assert isinstance(fig2, Figure)
    assert "3 modules" in fig2.axes[0].get_legend().get_title().get_text()
    plain = lc.pl.effects_heatmap(effects)
    assert isinstance(plain, Figure)
    import matplotlib.pyplot as plt

    plt.close("all")
