"""The LCD class on the tiny preset: prediction contract, determinism, save/load, checkpoints,
kill-and-resume equivalence and the non-finite-loss error."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import jax
import numpy as np
import pandas as pd
import pytest

from lcdiff.data.normalize import log1p_cp10k
from lcdiff.errors import (
    ConfigError,
    MissingColumnError,
    ModelFileError,
    NotFittedError,
    NotPreparedError,
    TrainingDivergedError,
    UnknownPerturbationError,
)
from lcdiff.model.io import read_checkpoint
from lcdiff.model.lcd import CHECKPOINT_A, CHECKPOINT_B, LCD

GENES = [f"G{i}" for i in range(6)]
TRAIN = ["ctrl", "G0", "G1", "G2", "G0+G1"]


def tiny_screen(seed: int = 0, labels=TRAIN, cells: int = 30) -> ad.AnnData:
    """A prepared-screen-like AnnData: perturbing Gj multiplies gene j's rate by 4."""
    rng = np.random.default_rng(seed)
    base = np.array([2.0, 3.0, 1.0, 5.0, 0.5, 2.0])
    blocks, obs = [], []
    for label in labels:
        rate = base.copy()
        for g in [] if label == "ctrl" else label.split("+"):
            rate[GENES.index(g)] *= 4.0
        blocks.append(rng.poisson(rate, size=(cells, len(GENES))))
        obs += [label] * cells
    counts = np.concatenate(blocks).astype(np.float32)
    screen = ad.AnnData(
        X=log1p_cp10k(counts),
        obs=pd.DataFrame({"perturbation": obs}, index=[f"c{i}" for i in range(len(obs))]),
        var=pd.DataFrame(index=GENES),
    )
    screen.layers["counts"] = counts
    screen.uns["lcdiff"] = {"control": "ctrl", "perturbation_key": "perturbation", "markers": {}}
    return screen


@pytest.fixture(scope="module")
def screen() -> ad.AnnData:
    return tiny_screen()


@pytest.fixture(scope="module")
def fitted(screen) -> LCD:
    return LCD(screen, preset="tiny", seed=0).fit(progress=False)


def _params(model: LCD):
    return jax.tree.leaves((model._score_params, model._noise))


def _assert_same_params(a: LCD, b: LCD) -> None:
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --------------------------------------------------------------------------------------------
def test_attributes(fitted):
    assert fitted.genes == GENES and fitted.control == "ctrl"
    assert fitted.train_labels == TRAIN
    assert fitted.trained_targets == ["G0", "G1", "G2"]
    assert fitted.is_fitted
    assert fitted.state_mean.shape == (6,) and fitted.state_scale.shape == (6,)
    assert np.all(fitted.state_scale > 0)
    assert len(fitted.training_losses["noise"]) == fitted.config.noise_steps
    # stage A learns: the loss drops from the start to the end of training
    losses = fitted.training_losses["noise"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_predict_contract(fitted):
    pred = fitted.predict(["G1+G0", "ctrl", "G2"], n_cells=10, seed=3)
    assert pred.shape == (30, 6)
    assert list(pred.var_names) == GENES
    assert list(pred.obs["perturbation"].astype(str).unique()) == ["G0+G1", "ctrl", "G2"]
    counts = pred.layers["counts"]
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))
    np.testing.assert_allclose(pred.X, log1p_cp10k(counts))
    info = pred.uns["lcdiff"]
    assert info["model"] == "LCD" and info["seed"] == 3 and "counts" in info["layers"]
    assert pred.obsm["lcd_state"].shape == (30, 6)
    assert pred.obs_names.is_unique


def test_predict_deterministic_and_label_independent(fitted):
    a = fitted.predict(["G0", "G1+G2"], n_cells=10, seed=1)
    b = fitted.predict(["G0", "G1+G2"], n_cells=10, seed=1)
    np.testing.assert_array_equal(a.layers["counts"], b.layers["counts"])
    alone = fitted.predict("G1+G2", n_cells=10, seed=1)
    np.testing.assert_array_equal(alone.obsm["lcd_state"], a.obsm["lcd_state"][10:])
    other = fitted.predict(["G0"], n_cells=10, seed=2)
    assert not np.array_equal(other.obsm["lcd_state"], a.obsm["lcd_state"][:10])


def test_unknown_and_unseen_genes(fitted):
    with pytest.raises(UnknownPerturbationError, match="NOTAGENE"):
        fitted.predict(["G0+NOTAGENE"], n_cells=10)
    with pytest.warns(UserWarning, match="G4"):
        pred = fitted.predict(["G4", "G0+G5"], n_cells=10)
    assert pred.n_obs == 20


def test_unseen_gene_uses_mean_embedding(fitted):
    """An untrained gene behaves exactly like the 'average perturbation' of the trained genes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = np.random.default_rng(0).normal(size=(1, 4, 6)).astype(np.float32)
        d4 = fitted.drift(z, ["G4"])
        d5 = fitted.drift(z, ["G5"])
    np.testing.assert_allclose(d4, d5, rtol=1e-6)
    assert not np.allclose(d4, fitted.drift(z, ["ctrl"]))


def test_drift_and_fixed_points_shapes(fitted):
    z = np.zeros((2, 3, 6), np.float32)
    assert fitted.drift(z, ["G0", "ctrl"]).shape == (2, 3, 6)
    assert fitted.drift(z[0], ["G0", "ctrl"], level=0).shape == (2, 3, 6)
    fp = fitted.fixed_points(["G0", "ctrl"])
    assert fp.shape == (2, 6) and np.all(np.isfinite(fp))
    np.testing.assert_array_equal(fp, fitted.fixed_points(["G0", "ctrl"]))  # deterministic
    with pytest.raises(ConfigError):
        fitted.drift(z, ["G0", "ctrl"], level=99)


def test_noise_log_likelihood(fitted, screen):
    counts = screen.layers["counts"][:7]
    ll = fitted.noise_log_likelihood(counts, "ctrl", n_samples=200)
    assert ll.shape == (7,) and np.all(ll < 0) and np.all(np.isfinite(ll))
    with pytest.raises(UnknownPerturbationError):
        fitted.noise_log_likelihood(counts, "G1+G2")


def test_save_load_predict_identical(fitted, tmp_path):
    before = fitted.predict(["G0+G2", "ctrl"], n_cells=10, seed=5)
    fitted.save(tmp_path / "model")
    loaded = LCD.load(tmp_path / "model")
    after = loaded.predict(["G0+G2", "ctrl"], n_cells=10, seed=5)
    np.testing.assert_array_equal(before.layers["counts"], after.layers["counts"])
    np.testing.assert_array_equal(before.X, after.X)
    assert loaded.genes == fitted.genes and loaded.trained_targets == fitted.trained_targets
    assert loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.state_scale, fitted.state_scale)


def test_load_refuses_corrupt_or_incompatible(fitted, tmp_path):
    folder = tmp_path / "m"
    fitted.save(folder)
    with pytest.raises(ModelFileError, match="not a saved LCD model"):
        LCD.load(tmp_path / "missing")
    # corrupt arrays: the checksum no longer matches
    data = bytearray((folder / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        LCD.load(folder)
    # incompatible format version
    fitted.save(folder, force=True)
    record = json.loads((folder / "lcd.json").read_text())
    record["format_version"] = 999
    (folder / "lcd.json").write_text(json.dumps(record))
    with pytest.raises(ModelFileError, match="format version 999"):
        LCD.load(folder)


def test_input_validation(screen):
    with pytest.raises(ConfigError, match="Unknown LCD preset"):
        LCD(screen, preset="huge")
    with pytest.raises(ConfigError, match="Unknown LCD hyperparameter"):
        LCD(screen, preset="tiny", score_stepz=3)
    with pytest.raises(ConfigError, match="positive integer"):
        LCD(screen, preset="tiny", score_steps=0)
    raw = screen.copy()
    del raw.uns["lcdiff"]
    with pytest.raises(NotPreparedError):
        LCD(raw, preset="tiny")
    no_counts = screen.copy()
    del no_counts.layers["counts"]
    with pytest.raises(MissingColumnError, match="noise_model=None"):
        LCD(no_counts, preset="tiny")
    model = LCD(screen, preset="tiny")
    with pytest.raises(NotFittedError):
        model.predict(["G0"])
    with pytest.raises(NotFittedError):
        model.save("unused")


def test_no_noise_model_trains_on_x(screen):
    model = LCD(screen, preset="tiny", noise_model=None, score_steps=5).fit(progress=False)
    pred = model.predict(["G0"], n_cells=10)
    assert "counts" not in pred.layers and pred.X.shape == (10, 6)
    assert model._noise is None


# --------------------------------------------------------------------------------------------
class _Kill(Exception):
    pass


def _kill_at(stage_prefix: str, step: int):
    def callback(stage, s, loss):
        if stage.startswith(stage_prefix) and s == step:
            raise _Kill(f"killed at {stage} {s}")

    return callback


@pytest.mark.parametrize(("stage", "step"), [("A", 25), ("B", 15)])
def test_kill_and_resume_matches_uninterrupted(fitted, screen, tmp_path, stage, step):
    interrupted = LCD(screen, preset="tiny", seed=0)
    interrupted._step_callback = _kill_at(stage, step)
    with pytest.raises(_Kill):
        interrupted.fit(progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / (CHECKPOINT_A if stage == "A" else CHECKPOINT_B)
    meta, _ = read_checkpoint(path)
    assert meta["step"] == (step // 10) * 10  # the last checkpoint before the kill
    resumed = LCD(screen, preset="tiny", seed=0).fit(progress=False, checkpoint_dir=tmp_path)
    _assert_same_params(resumed, fitted)
    np.testing.assert_array_equal(
        resumed.predict(["G0+G2"], n_cells=10).X, fitted.predict(["G0+G2"], n_cells=10).X
    )


def test_resume_refuses_other_seed(screen, tmp_path):
    model = LCD(screen, preset="tiny", seed=0)
    model._step_callback = _kill_at("A", 12)
    with pytest.raises(_Kill):
        model.fit(progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ModelFileError, match="resume=False"):
        LCD(screen, preset="tiny", seed=1).fit(progress=False, checkpoint_dir=tmp_path)


def test_non_finite_loss_raises_and_keeps_checkpoint(screen, tmp_path):
    model = LCD(screen, preset="tiny", noise_model=None, score_lr=1e30, checkpoint_every=1)
    with pytest.raises(TrainingDivergedError, match=r"stage B \(score model\) at step (\d+)") as e:
        model.fit(progress=False, checkpoint_dir=tmp_path)
    failed_step = int(str(e.value).split("at step ")[1].split(":")[0])
    meta, arrays = read_checkpoint(tmp_path / CHECKPOINT_B)
    assert meta["step"] < failed_step
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    assert not model.is_fitted


def test_zinb_noise_model_fits_saves_and_loads(screen, tmp_path):
    """The opt-in negative-binomial noise model: dispersion kept, used in decoding, round-trips."""
    model = LCD(screen, preset="tiny", seed=0, noise_model="zinb").fit(progress=False)
    assert model._noise["log_theta"].shape == (len(GENES),)
    assert "log_theta" not in LCD(screen, preset="tiny").config.to_dict()  # no new config field
    before = model.predict(["G0+G2"], n_cells=50, seed=1)
    assert np.all(np.isfinite(before.layers["counts"]))
    ll = model.noise_log_likelihood(screen.layers["counts"][:5], "ctrl", n_samples=100)
    assert ll.shape == (5,) and np.all(np.isfinite(ll))
    model.save(tmp_path / "zinb")
    loaded = LCD.load(tmp_path / "zinb")
    assert loaded.config.noise_model == "zinb"
    np.testing.assert_array_equal(loaded._noise["log_theta"], model._noise["log_theta"])
    after = loaded.predict(["G0+G2"], n_cells=50, seed=1)
    np.testing.assert_array_equal(before.layers["counts"], after.layers["counts"])
    # decoding ignores nothing: a tiny dispersion gives visibly more variable counts
    model._noise["log_theta"] = np.full(len(GENES), np.log(0.2), np.float32)
    wider = model.predict(["G0+G2"], n_cells=50, seed=1)
    assert wider.layers["counts"].var() > before.layers["counts"].var()
    with pytest.raises(ConfigError, match="zinb"):
        LCD(screen, preset="tiny", noise_model="nb")


# --------------------------------------------------------------------------------------------
def test_noise_model_from_reuses_stage_a_exactly(fitted, screen):
    """Reusing a same-seed stage A equals a full fit with the new stage-B settings."""
    full = LCD(screen, preset="tiny", seed=0, score_steps=25, n_levels=6).fit(progress=False)
    reused = LCD(screen, preset="tiny", seed=0, score_steps=25, n_levels=6)
    reused.fit(progress=False, noise_model_from=fitted)
    assert reused._noise is fitted._noise
    _assert_same_params(reused, full)
    np.testing.assert_array_equal(
        reused.predict(["G0+G2"], n_cells=10).X, full.predict(["G0+G2"], n_cells=10).X
    )
    assert reused.training_losses["noise"] == fitted.training_losses["noise"]


def test_noise_model_from_refuses_mismatches(fitted, screen):
    with pytest.raises(ConfigError, match="stage-A hyperparameters.*mc_samples"):
        LCD(screen, preset="tiny", mc_samples=32).fit(progress=False, noise_model_from=fitted)
    other_data = tiny_screen(seed=1)
    with pytest.raises(ConfigError, match="other training data"):
        LCD(other_data, preset="tiny").fit(progress=False, noise_model_from=fitted)
    with pytest.raises(ConfigError, match="must be a fitted LCD"):
        LCD(screen, preset="tiny").fit(progress=False, noise_model_from=LCD(screen, preset="tiny"))
    with pytest.warns(UserWarning, match="seed 0 in a fit with seed 3"):
        LCD(screen, preset="tiny", seed=3, score_steps=2).fit(
            progress=False, noise_model_from=fitted
        )


def test_warns_when_score_network_is_narrower_than_the_genes(screen):
    message = r"score_hidden=4 is smaller than the number of genes \(6\)"
    with pytest.warns(UserWarning, match=message):
        LCD(screen, preset="tiny", score_hidden=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LCD(screen, preset="tiny", score_hidden=6)  # as wide as the genes: no warning
