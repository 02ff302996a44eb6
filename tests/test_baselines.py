"""Baselines: each definition checked against a hand computation on a small prepared screen."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import lcdiff as lc
from lcdiff.data.normalize import log1p_cp10k
from lcdiff.errors import (
    ConfigError,
    DependencyError,
    NotFittedError,
    SplitError,
    UnknownPerturbationError,
)
from lcdiff.eval.baselines import (
    AdditiveBaseline,
    ControlBaseline,
    LinearBaseline,
    MeanBaseline,
    PeperBaseline,
    PooledBaseline,
    get,
)

N_GENES = 30
TARGETS = [f"g{i:02d}" for i in range(6)]


def make_screen(
    cells_per_condition: int = 60, seed: int = 0, interaction: float = 0.0, singles=TARGETS
) -> AnnData:
    """A prepared-like screen (contract of lcdiff.data.screen) with additive gene effects.

    Conditions: ctrl, singles of ``singles``, every pair of TARGETS. Log-rates are
    base + Σ_j effect_j (+ ``interaction`` on gene 10 for doubles).
    """
    rng = np.random.default_rng(seed)
    genes = [f"g{i:02d}" for i in range(N_GENES)]
    base = np.log(rng.uniform(3, 20, N_GENES))
    effects = {}
    for j, g in enumerate(TARGETS):
        e = np.zeros(N_GENES)
        e[j] = 1.5
        e[rng.choice(np.arange(6, N_GENES), 5, replace=False)] = rng.normal(0, 0.8, 5)
        effects[g] = e
    labels = ["ctrl", *singles] + ["+".join(p) for p in itertools.combinations(TARGETS, 2)]
    counts, obs = [], []
    for lab in labels:
        rate = base.copy()
        targets = [] if lab == "ctrl" else lab.split("+")
        for g in targets:
            rate = rate + effects[g]
        if len(targets) == 2:
            rate[10] += interaction
        counts.append(rng.poisson(np.exp(rate), size=(cells_per_condition, N_GENES)))
        obs += [lab] * cells_per_condition
    counts = np.concatenate(counts).astype(np.float32)
    x = log1p_cp10k(counts)
    adata = AnnData(
        X=x,
        obs=pd.DataFrame(
            {"perturbation": pd.Categorical(obs)}, index=[f"c{i}" for i in range(len(obs))]
        ),
        var=pd.DataFrame(index=genes),
    )
    adata.layers["counts"] = counts
    adata.obs["n_targets"] = [0 if lab == "ctrl" else len(lab.split("+")) for lab in obs]
    adata.var["perturbed"] = [g in TARGETS for g in genes]
    adata.var["hvg_rank"] = np.argsort(np.argsort(-x.var(axis=0))).astype(int)
    ctrl_mean = x[np.asarray(obs) == "ctrl"].mean(axis=0)
    markers = {}
    for lab in labels[1:]:
        diff = np.abs(x[np.asarray(obs) == lab].mean(axis=0) - ctrl_mean)
        markers[lab] = [genes[i] for i in np.argsort(-diff)[:5]]
    adata.uns["lcdiff"] = {
        "control": "ctrl",
        "perturbation_key": "perturbation",
        "markers": markers,
    }
    return adata


@dataclass(frozen=True)
class SimpleSplit:
    """Stand-in with the fields of lcdiff.data.splits.Split the baselines read."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    scheme: str = "custom"
    fold: int = 1
    seed: int = 0

    def subset(self, screen, part="train"):
        keep = screen.obs["perturbation"].astype(str).isin(getattr(self, part)).to_numpy()
        return screen[keep].copy()


def doubles_split(screen, n_test: int = 4) -> SimpleSplit:
    labels = lc.data.screen.conditions(screen)
    doubles = [lab for lab in labels if "+" in lab]
    test = tuple(doubles[:n_test])
    train = tuple(lab for lab in labels if lab not in test)
    return SimpleSplit(train=train, test=test)


def cells_of(adata, label):
    return np.asarray(adata.X[(adata.obs["perturbation"].astype(str) == label).to_numpy()])


@pytest.fixture(scope="module")
def screen():
    return make_screen()


@pytest.fixture(scope="module")
def split(screen):
    return doubles_split(screen)


def test_control_samples_training_control_cells(screen, split):
    pred = ControlBaseline().fit(screen, split).predict(list(split.test[:2]), n_cells=40)
    assert pred.shape == (80, N_GENES)
    assert list(pred.obs["perturbation"].astype(str).unique()) == list(split.test[:2])
    assert list(pred.var_names) == list(screen.var_names)
    assert pred.uns["lcdiff"]["method"] == "control"
    assert "counts" not in pred.layers
    ctrl = {tuple(r) for r in cells_of(screen, "ctrl")}
    assert all(tuple(r) in ctrl for r in np.asarray(pred.X))
    # 40 <= 60 control cells: drawn without replacement, so no repeated cell within a label
    block = cells_of(pred, split.test[0])
    assert len({tuple(r) for r in block}) == 40


def test_pooled_samples_only_training_perturbation_cells(screen, split):
    pred = PooledBaseline().fit(screen, split).predict(split.test[0], n_cells=300)
    train_pert = [lab for lab in split.train if lab != "ctrl"]
    allowed = {tuple(r) for lab in train_pert for r in cells_of(screen, lab)}
    forbidden = {tuple(r) for lab in (*split.test, "ctrl") for r in cells_of(screen, lab)}
    rows = {tuple(r) for r in np.asarray(pred.X)}
    assert rows <= allowed
    assert not rows & forbidden


def test_additive_is_control_plus_sum_of_single_shifts(screen, split):
    model = AdditiveBaseline().fit(screen, split)
    label = split.test[0]
    a, b = label.split("+")
    ctrl = cells_of(screen, "ctrl").astype(np.float64)
    c_bar = ctrl.mean(axis=0)
    expected_shift = (cells_of(screen, a).mean(0) - c_bar) + (cells_of(screen, b).mean(0) - c_bar)
    np.testing.assert_allclose(model.shift(label), expected_shift, atol=1e-5)
    # n_cells == n_control without replacement: a permutation of the control cells
    pred = model.predict(label, n_cells=ctrl.shape[0])
    np.testing.assert_allclose(np.asarray(pred.X).mean(0), c_bar + expected_shift, atol=1e-4)
    assert pred.uns["lcdiff"]["fallback_genes"] == {}


def test_additive_falls_back_to_pooled_shift_for_genes_never_perturbed_alone():
    screen = make_screen(singles=TARGETS[1:])  # g00 never perturbed alone
    split = doubles_split(screen, n_test=2)
    model = AdditiveBaseline().fit(screen, split)
    label = "g00+g05"
    assert label not in split.test
    ctrl = cells_of(screen, "ctrl").astype(np.float64)
    train_pert = [lab for lab in split.train if lab != "ctrl"]
    pooled = np.concatenate([cells_of(screen, lab) for lab in train_pert]).astype(np.float64)
    fallback = pooled.mean(0) - ctrl.mean(0)
    single = cells_of(screen, "g05").mean(0) - ctrl.mean(0)
    np.testing.assert_allclose(model.shift(label), fallback + single, atol=1e-5)
    pred = model.predict([label, "g05"], n_cells=10)
    assert pred.uns["lcdiff"]["fallback_genes"] == {label: ["g00"]}


def test_mean_baseline_shifts_control_to_the_training_centroid(screen, split):
    model = MeanBaseline().fit(screen, split)
    ctrl = cells_of(screen, "ctrl").astype(np.float64)
    train_pert = [lab for lab in split.train if lab != "ctrl"]
    centroid = np.mean([cells_of(screen, lab).mean(0) for lab in train_pert], axis=0)
    np.testing.assert_allclose(model.shift(split.test[0]), centroid - ctrl.mean(0), atol=1e-5)
    np.testing.assert_allclose(model.shift(split.test[0]), model.shift(split.test[1]))


def _true_shift(screen, label):
    return cells_of(screen, label).mean(0) - cells_of(screen, "ctrl").mean(0)


def test_linear_beats_mean_on_held_out_doubles_and_fits_training(screen, split):
    linear = LinearBaseline(n_components=8, ridge=1e-3).fit(screen, split)
    mean = MeanBaseline().fit(screen, split)
    err_lin = [
        np.sqrt(np.mean((linear.shift(t) - _true_shift(screen, t)) ** 2)) for t in split.test
    ]
    err_mean = [np.sqrt(np.mean((mean.shift(t) - _true_shift(screen, t)) ** 2)) for t in split.test]
    assert np.mean(err_lin) < 0.5 * np.mean(err_mean)
    # training conditions are reproduced closely (low-rank fit of the pseudobulk changes)
    train_err = [
        np.sqrt(np.mean((linear.shift(t) - _true_shift(screen, t)) ** 2))
        for t in split.train
        if t != "ctrl"
    ]
    assert np.mean(train_err) < np.mean(err_mean)
    # a combination's embedding is the sum of its genes' embeddings
    np.testing.assert_allclose(
        linear.embed("g00+g01"), linear.embed("g00") + linear.embed("g01"), atol=1e-12
    )


def test_linear_auto_selects_k_and_ridge_on_training_data_only(screen, split):
    auto = LinearBaseline().fit(screen, split)
    sel = auto.selected
    assert sel["ridge"] in lc.eval.baselines.LINEAR_GRID_RIDGE
    assert 1 <= sel["n_components"] <= len(split.train) - 1
    assert np.isfinite(sel["validation_rmse"])
    fixed = LinearBaseline(n_components=sel["n_components"], ridge=sel["ridge"]).fit(screen, split)
    np.testing.assert_allclose(auto.shift(split.test[0]), fixed.shift(split.test[0]))
    # the choice depends on training data only: scrambling the held-out cells changes nothing
    scrambled = screen.copy()
    test_mask = scrambled.obs["perturbation"].astype(str).isin(split.test).to_numpy()
    scrambled.X[test_mask] = np.random.default_rng(1).permutation(scrambled.X[test_mask], axis=1)
    again = LinearBaseline().fit(scrambled, split)
    assert again.selected == sel
    pred = auto.predict(split.test[0], n_cells=5)
    assert pred.uns["lcdiff"]["linear"]["n_components"] == sel["n_components"]
    with pytest.raises(ConfigError, match="n_components"):
        LinearBaseline(n_components="many")


def test_linear_says_it_cannot_predict_unmodelled_genes(screen, split):
    linear = LinearBaseline().fit(screen, split)
    reason = linear.cannot_predict("NOTAGENE+g00")
    assert reason is not None and "NOTAGENE" in reason
    assert linear.cannot_predict("g00+g01") is None
    with pytest.raises(UnknownPerturbationError, match="NOTAGENE"):
        linear.predict(["g00+g01", "NOTAGENE+g00"], n_cells=5)


def test_peper_without_training_equals_salt(screen, split):
    salt = AdditiveBaseline().fit(screen, split)
    untrained = PeperBaseline(steps=0, hidden=8).fit(screen, split)
    for label in split.test:
        np.testing.assert_allclose(untrained.shift(label), salt.shift(label), atol=1e-5)
    model = PeperBaseline(steps=300, hidden=16, lr=3e-3, batch_size=64).fit(screen, split)
    loss = model.loss_history
    assert loss.shape == (300,) and np.all(np.isfinite(loss))
    pred = model.predict(list(split.test), n_cells=20)
    assert pred.shape == (20 * len(split.test), N_GENES)
    assert np.all(np.isfinite(pred.X))
    assert pred.uns["lcdiff"]["method"] == "peper"


def test_peper_learns_an_interaction_salt_cannot_represent():
    screen = make_screen(interaction=1.5, seed=3)
    split = doubles_split(screen)
    salt = AdditiveBaseline().fit(screen, split)
    peper = PeperBaseline(steps=1500, hidden=32, lr=3e-3).fit(screen, split)

    def err(model):
        return np.mean([abs(model.shift(t)[10] - _true_shift(screen, t)[10]) for t in split.test])

    assert err(peper) < 0.7 * err(salt)


def test_peper_rejects_unknown_settings():
    with pytest.raises(ConfigError, match="hiden"):
        PeperBaseline(hiden=3)
    with pytest.raises(ConfigError, match="preset"):
        PeperBaseline(preset="huge")


def test_predictions_are_reproducible_by_seed(screen, split):
    model = AdditiveBaseline().fit(screen, split)
    a = model.predict(split.test[0], n_cells=30, seed=1).X
    b = model.predict(split.test[0], n_cells=30, seed=1).X
    c = model.predict(split.test[0], n_cells=30, seed=2).X
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_reads_only_training_conditions(screen, split):
    model = PooledBaseline().fit(screen, split)
    assert set(model.data.labels) == set(split.train) - {"ctrl"}
    assert not set(model.data.labels) & set(split.test)


def test_errors_are_typed_and_helpful(screen, split):
    with pytest.raises(NotFittedError, match="fit"):
        ControlBaseline().predict("g00")
    no_ctrl = SimpleSplit(train=tuple(t for t in split.train if t != "ctrl"), test=split.test)
    with pytest.raises(SplitError, match="control"):
        AdditiveBaseline().fit(screen, no_ctrl)
    bad = SimpleSplit(train=("ctrl", "NOPE"), test=())
    with pytest.raises(SplitError, match="NOPE"):
        AdditiveBaseline().fit(screen, bad)
    with pytest.raises(ConfigError, match="Unknown method"):
        get("magic")
    with pytest.raises(ConfigError):
        ControlBaseline().fit(screen, split).predict("g00", n_cells=0)


def test_registry_and_aliases():
    assert isinstance(get("salt"), AdditiveBaseline)
    assert isinstance(get("perturbed"), PooledBaseline)
    assert isinstance(get("linear", n_components=3), LinearBaseline)
    assert isinstance(lc.baselines.get("mean"), MeanBaseline)


@pytest.mark.parametrize("name,dist", [("gears", "cell-gears"), ("cpa", "cpa-tools")])
def test_missing_peer_raises_dependency_error_with_install_hint(name, dist, tmp_path, monkeypatch):
    monkeypatch.setenv("LCDIFF_PEERS_DIR", str(tmp_path))
    monkeypatch.delenv(f"LCDIFF_PEER_{name.upper()}", raising=False)
    with pytest.raises(DependencyError) as info:
        get(name)
    message = str(info.value)
    assert f"lcdiff peers install {name}" in message and dist in message
