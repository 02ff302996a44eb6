"""Several devices and streamed states (lcdiff.model.sharding, lcdiff.model.streaming).

The multi-device test runs in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4
(the flag must be set before JAX starts; this process already runs JAX on one CPU device) and
compares a tiny fit + predict on 1 and 4 devices there, and against this process's fit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcdiff.errors import ConfigError
from lcdiff.model.config import make_config
from lcdiff.model.dsm import make_score_step, score_optimizer
from lcdiff.model.lcd import LCD
from lcdiff.model.noise import init_noise_state, make_noise_step, sample_all_states
from lcdiff.model.score import init_score_params, noise_levels
from lcdiff.model.sharding import check_batch_divisible, device_mesh
from lcdiff.model.standardize import Standardizer
from lcdiff.model.streaming import (
    CellStates,
    GeneratorStates,
    _generator_rows,
    fit_standardizer,
    make_stream_score_step,
    stream_data,
)

TESTS = Path(__file__).resolve().parent
LABELS = ["G0+G2", "G1", "ctrl", "G2", "G0+G1"]
SHORT = {"noise_steps": 20, "score_steps": 20}  # enough steps to amplify any mismatch

# Runs in the 4-device subprocess: the same tiny fits on devices=1 and devices=4.
SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_model_lcd import tiny_screen
    from lcdiff.model.lcd import LCD
    from lcdiff.model.dsm import score_optimizer
    from lcdiff.model.score import init_score_params
    from lcdiff.model.sharding import device_mesh, put_replicated, put_split
    from lcdiff.model.standardize import Standardizer
    from lcdiff.model.streaming import CellStates, make_stream_score_step, stream_data

    assert jax.device_count() == 4, jax.devices()
    out = {{}}
    screen = tiny_screen()
    for name, kw in (("zip", {{}}), ("cells", {{"noise_model": None}})):
        model = LCD(screen, preset="tiny", seed=0, devices=4, **{short}, **kw).fit(progress=False)
        pred = model.predict({labels!r}, n_cells=8, seed=3)
        out[f"{{name}}_state"] = pred.obsm["lcd_state"]
        out[f"{{name}}_out"] = np.asarray(model._score_params["out"]["w"])
        if model._noise is not None:  # stage A ran with its M prior samples split over 4 devices
            out[f"{{name}}_gen"] = np.asarray(model._noise["gen"]["proj_w"])
            out[f"{{name}}_pi"] = np.asarray(model._noise["logit_pi"])
    mesh = device_mesh(4)
    out["split_devices"] = len(put_split(np.zeros((8, 3)), mesh).sharding.device_set)
    # the stage-B step is data parallel: its compiled program all-reduces the gradients
    config = model.config
    params = init_score_params(jax.random.PRNGKey(0), 6, 32, 16, 2)
    state = put_replicated({{"params": params, "opt": score_optimizer(config).init(params),
                            "step": np.int32(0)}}, mesh)
    cells = [np.ones((5, 6), np.float32)] * 2
    data = stream_data(CellStates(cells), Standardizer.fit(cells), np.zeros((2, 6)),
                       np.zeros(6, bool), model.sigmas, mesh)
    step = make_stream_score_step(config, "cells", mesh)
    hlo = step.lower(state, data, jax.random.PRNGKey(0)).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    # the stage-A step splits the M prior samples: its program reduces across the devices
    from lcdiff.model.noise import init_noise_state, make_noise_step
    from lcdiff.model.sharding import replicated
    noise_state = put_replicated(init_noise_state(jax.random.PRNGKey(0), 2, 6, config), mesh)
    noise_data = put_replicated((np.ones((10, 6), np.float32), np.array([0, 5], np.int32),
                                 np.array([5, 5], np.int32), np.ones(6, np.float32)), mesh)
    noise_step = make_noise_step(config, "matrix", mesh)
    lowered = noise_step.lower(noise_state, noise_data, jax.random.PRNGKey(0))
    noise_hlo = lowered.compile().as_text()
    out["noise_all_reduce"] = "all-reduce" in noise_hlo
    new_state, _ = noise_step(noise_state, noise_data, jax.random.PRNGKey(0))
    out["noise_state_replicated"] = new_state["gen"]["proj_w"].sharding == replicated(mesh)
    np.savez({path!r}, **out)
    """
)


@pytest.fixture(scope="module")
def tiny_screen_fixture():
    sys.path.insert(0, str(TESTS))
    from test_model_lcd import tiny_screen

    return tiny_screen()


def test_one_and_four_devices_give_the_same_fit_and_prediction(
    tiny_screen_fixture, tmp_path, monkeypatch
):
    # the fit must stream states: materializing all conditions' states is refused here
    import lcdiff.model.lcd as lcd_module
    import lcdiff.model.noise as noise_module

    def refuse(*args, **kwargs):
        raise AssertionError("LCD.fit materialized every condition's states")

    monkeypatch.setattr(noise_module, "sample_all_states", refuse)
    assert not hasattr(lcd_module, "sample_all_states")
    path = tmp_path / "four.npz"
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT.format(tests=str(TESTS), labels=LABELS, path=str(path), short=SHORT),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    four = dict(np.load(path))
    assert int(four["split_devices"]) == 4  # inputs really are split over 4 devices
    assert bool(four["all_reduce"])
    assert bool(four["noise_all_reduce"])  # stage A really is split (its M samples) over 4 devices
    assert bool(four["noise_state_replicated"])
    for name, kw in (("zip", {}), ("cells", {"noise_model": None})):
        here = LCD(tiny_screen_fixture, preset="tiny", seed=0, **SHORT, **kw).fit(progress=False)
        state = here.predict(LABELS, n_cells=8, seed=3).obsm["lcd_state"]
        out_w = here._score_params["out"]["w"]
        np.testing.assert_allclose(four[f"{name}_out"], out_w, rtol=1e-4, atol=1e-5, err_msg=name)
        if here._noise is not None:  # stage A alone: generators and π after 20 sharded steps
            np.testing.assert_allclose(
                four[f"{name}_gen"],
                here._noise["gen"]["proj_w"],
                rtol=1e-4,
                atol=1e-5,
                err_msg=name,
            )
            np.testing.assert_allclose(
                four[f"{name}_pi"], here._noise["logit_pi"], rtol=1e-4, atol=1e-5, err_msg=name
            )
            # and the stage-A parameters moved away from their initialization (20 steps)
            init = init_noise_state(
                jax.random.split(jax.random.split(jax.random.PRNGKey(0), 3)[0])[0],
                len(here.train_labels),
                len(here.genes),
                here.config,
            )
            assert np.abs(np.asarray(init["gen"]["proj_w"]) - four[f"{name}_gen"]).max() > 1e-3
        np.testing.assert_allclose(four[f"{name}_state"], state, rtol=1e-4, atol=1e-4, err_msg=name)
        # another Langevin seed lands far away: the tolerance above is meaningful
        other = here.predict(LABELS, n_cells=8, seed=4).obsm["lcd_state"]
        assert np.abs(other - state).max() > 0.1


def test_device_count_is_validated():
    with pytest.raises(ConfigError, match="visible"):
        device_mesh(jax.device_count() + 1)
    with pytest.raises(ConfigError, match="positive integer"):
        make_config("tiny", devices=0)
    with pytest.raises(ConfigError, match="multiple of 4"):
        check_batch_divisible(30, _FakeMesh(4))
    with pytest.raises(ConfigError, match="mc_samples=30 .*multiple of 4"):
        make_noise_step(make_config("tiny", mc_samples=30), "matrix", _FakeMesh(4))
    assert (
        make_config("tiny", devices=None).training_fingerprint()
        == make_config("tiny", devices=1).training_fingerprint()
    )  # resuming on another device count is allowed


class _FakeMesh:
    def __init__(self, n):
        self.devices = np.empty(n, object)


def test_streamed_standardizer_equals_materialized():
    rng = np.random.default_rng(0)
    cells = [
        rng.normal(i, 1 + i, size=(n, 7)).astype(np.float32) for i, n in enumerate([50, 13, 200, 1])
    ]
    cells[2][:, 3] = 5.0  # a constant gene keeps scale 1 in both
    streamed = fit_standardizer(CellStates(cells))
    full = Standardizer.fit(cells)
    np.testing.assert_allclose(streamed.mean, full.mean, rtol=1e-6)
    np.testing.assert_allclose(streamed.scale, full.scale, rtol=1e-6)


def test_generator_rows_equal_materialized_states():
    config = make_config("tiny", generator_hidden=4)
    gen = init_noise_state(jax.random.PRNGKey(1), 3, 6, config)["gen"]
    key = jax.random.PRNGKey(7)
    n = 4100  # crosses the 4096-row prior block
    full = sample_all_states(gen, key, n, 4)
    source = GeneratorStates(jax.tree.map(np.asarray, gen), key, n, 4)
    np.testing.assert_allclose(source.condition(2), full[2], rtol=1e-6, atol=1e-6)
    pick = jnp.array([0, 5, 4095, 4096, 4099, 17])
    for e in range(3):
        rows = _generator_rows(gen, key, jnp.int32(e), pick, n, 4)
        np.testing.assert_allclose(rows, full[e][np.asarray(pick)], rtol=1e-5, atol=1e-5)


def test_streamed_step_replays_the_materialized_step():
    """With cells as states, the streamed step draws exactly what the array-based step draws."""
    rng = np.random.default_rng(0)
    d = 5
    cells = [rng.normal(size=(n, d)).astype(np.float32) for n in (40, 17, 25)]
    targets = np.eye(3, d, k=0, dtype=np.float32)
    targets[0] = 0
    seen = targets.any(0)
    config = make_config("tiny", noise_model=None, score_batch_size=16)
    sigmas = noise_levels(config.sigma_min, config.sigma_max, config.n_levels)
    st = Standardizer.fit(cells)
    sizes = np.array([len(c) for c in cells], np.int32)
    padded = np.zeros((3, sizes.max(), d), np.float32)
    for i, c in enumerate(cells):
        padded[i, : len(c)] = st.transform(c)

    def fresh():
        params = init_score_params(jax.random.PRNGKey(0), d, 32, 16, 2)
        return {
            "params": params,
            "opt": score_optimizer(config).init(params),
            "step": jnp.zeros((), jnp.int32),
        }

    key = jax.random.PRNGKey(3)
    old_step = make_score_step(config)
    old_state, old_data = fresh(), (padded, sizes, targets, seen, sigmas)
    mesh = device_mesh(1)
    new_step = make_stream_score_step(config, "cells", mesh)
    new_state = fresh()
    new_data = stream_data(CellStates(cells), st, targets, seen, sigmas, mesh)
    for _ in range(6):
        old_state, old_loss = old_step(old_state, old_data, key)
        new_state, new_loss = new_step(new_state, new_data, key)
        np.testing.assert_allclose(float(new_loss), float(old_loss), rtol=1e-6)
    for a, b in zip(
        jax.tree.leaves(new_state["params"]), jax.tree.leaves(old_state["params"]), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
