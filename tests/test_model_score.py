"""Score network pieces: perturbation embedding, level embedding, output formula, DSM, sampler,
standardizer and configuration presets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcdiff.errors import ConfigError
from lcdiff.model.config import PRESETS, LCDConfig, make_config
from lcdiff.model.dsm import dsm_loss
from lcdiff.model.sampler import _chunk_length, annealed_langevin, step_sizes
from lcdiff.model.score import (
    condition_injections,
    effective_embedding_table,
    init_score_params,
    level_embeddings,
    noise_levels,
    perturbation_embedding,
    score,
    score_from_parts,
    sinusoidal_embedding,
)
from lcdiff.model.standardize import Standardizer

D, H, E = 4, 8, 3


@pytest.fixture(scope="module")
def params():
    return init_score_params(jax.random.PRNGKey(0), D, H, E, layers=2)


def test_perturbation_embedding_control_single_double_unseen(params):
    table = jnp.arange(D * E, dtype=jnp.float32).reshape(D, E)
    seen = jnp.array([True, True, False, False])
    q = jnp.array(
        [[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]], jnp.float32
    )
    e = np.asarray(perturbation_embedding(table, seen, q))
    mean_seen = (table[0] + table[1]) / 2
    np.testing.assert_allclose(e[0], 0.0)
    np.testing.assert_allclose(e[1], table[0])
    np.testing.assert_allclose(e[2], table[0] + table[1])
    np.testing.assert_allclose(e[3], mean_seen)
    np.testing.assert_allclose(e[4], table[0] + mean_seen)
    # nothing seen (a purely observational fit): unseen rows become zeros
    np.testing.assert_allclose(effective_embedding_table(table, jnp.zeros(D, bool)), 0.0)


def test_sinusoidal_embedding_values():
    tau = np.asarray(sinusoidal_embedding(jnp.array([0, 3]), 6, 30))
    np.testing.assert_allclose(tau[0], [0, 0, 0, 1, 1, 1], atol=1e-7)
    freqs = np.exp(-np.arange(3) * np.log(30) / 2)
    np.testing.assert_allclose(
        tau[1], np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]), rtol=1e-5
    )
    assert sinusoidal_embedding(jnp.array([1]), 7, 30).shape == (1, 7)  # odd width zero-padded


def test_noise_levels_descending():
    s = noise_levels(0.01, 10.0, 30)
    assert s[0] == pytest.approx(10.0) and s[-1] == pytest.approx(0.01)
    assert np.all(np.diff(s) < 0)
    eta = step_sizes(s, 1e-6)
    np.testing.assert_allclose(eta, 1e-6 * (s / 0.01) ** 2, rtol=1e-5)
    assert eta[0] == pytest.approx(1.0, rel=1e-4)  # the paper's η at σ = 10


def test_score_output_formula(params):
    """score = (u − σ g − z)/σ² with u = z/√(1+σ²) and g the network output."""
    z = jax.random.normal(jax.random.PRNGKey(1), (5, D))
    sigmas = jnp.asarray(noise_levels(0.01, 10.0, 6))
    targets = jnp.array([1.0, 0, 0, 1.0])
    seen = jnp.ones(D, bool)
    level = 2
    sigma = sigmas[level]
    u = z / jnp.sqrt(1 + sigma**2)
    inject = condition_injections(params, seen, targets)
    temb = level_embeddings(params, 6)[level]
    a = jnp.tanh(u @ params["layers"][0]["w"] + params["layers"][0]["b"] + temb + inject[0])
    a = jnp.tanh(a @ params["layers"][1]["w"] + params["layers"][1]["b"] + inject[1])
    g = a @ params["out"]["w"] + params["out"]["b"]
    expected = (u - sigma * g - z) / sigma**2
    got = score(params, z, level, sigmas, seen, targets)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_dsm_loss_matches_manual(params):
    z = jax.random.normal(jax.random.PRNGKey(2), (6, D))
    sigmas = jnp.asarray(noise_levels(0.1, 5.0, 4))
    targets, seen = jnp.array([0.0, 1, 0, 0]), jnp.ones(D, bool)
    key = jax.random.PRNGKey(7)
    loss = float(dsm_loss(params, z, targets, seen, sigmas, key))
    k_level, k_noise = jax.random.split(key)
    level = jax.random.randint(k_level, (6,), 0, 4)
    eps = jax.random.normal(k_noise, z.shape)
    total = 0.0
    for i in range(6):
        sigma = sigmas[level[i]]
        s = score(params, (z[i] + sigma * eps[i])[None], int(level[i]), sigmas, seen, targets)[0]
        total += float(sigma**2 * 0.5 * jnp.mean((s + eps[i] / sigma) ** 2))
    assert loss == pytest.approx(total / 6, rel=1e-5)


def test_sampler_chunking_and_probability_flow(params):
    sigmas = noise_levels(0.05, 2.0, 4)
    targets = np.eye(D, dtype=np.float32)[[0, 1, 2, 3, 0]]
    seen = np.ones(D, bool)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(5))
    run = lambda chunk, flow=False, keys=keys: annealed_langevin(  # noqa: E731
        params, seen, targets, sigmas, 1e-3, 3, keys, 6, probability_flow=flow, chunk_size=chunk
    )
    all_at_once = run(8)
    assert all_at_once.shape == (5, 6, D)
    np.testing.assert_allclose(run(2), all_at_once, rtol=1e-5, atol=1e-6)  # chunks don't matter
    other_keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(5) + 100)
    z0 = np.zeros((6, D), np.float32)
    flow_a = annealed_langevin(
        params, seen, targets, sigmas, 1e-3, 3, keys, 6, z0=z0, probability_flow=True
    )
    flow_b = annealed_langevin(
        params, seen, targets, sigmas, 1e-3, 3, other_keys, 6, z0=z0, probability_flow=True
    )
    np.testing.assert_array_equal(flow_a, flow_b)  # deterministic: keys unused
    assert not np.allclose(run(8, keys=other_keys), all_at_once)
    # one Euler step of the flow from z0 by hand
    one = annealed_langevin(
        params,
        seen,
        targets[:1],
        sigmas[:1],
        1e-3,
        1,
        keys[:1],
        1,
        z0=z0[:1],
        probability_flow=True,
    )
    eta = step_sizes(sigmas[:1], 1e-3)[0]  # a single level: η = anneal_dt
    temb = level_embeddings(params, 1)[0]
    drift = score_from_parts(
        params,
        jnp.zeros((1, D)),
        sigmas[0],
        temb,
        condition_injections(params, jnp.asarray(seen), targets[0]),
    )
    np.testing.assert_allclose(one[0], eta * np.asarray(drift), rtol=1e-5, atol=1e-7)


def test_chunk_length():
    assert _chunk_length(1, 32) == 1 and _chunk_length(3, 32) == 4
    assert _chunk_length(10, 32) == 12 and _chunk_length(65, 32) == 24
    assert _chunk_length(10, 3) == 3


def test_standardizer_roundtrip():
    rng = np.random.default_rng(0)
    states = [rng.normal(1.0, 2.0, (50, 3)), rng.normal(3.0, 1.0, (30, 3))]
    states[0][:, 2] = 5.0
    states[1][:, 2] = 5.0  # a constant gene keeps unit scale
    st = Standardizer.fit(states, control_index=0)
    np.testing.assert_allclose(st.mean, states[0].mean(0), rtol=1e-5)
    pooled = np.concatenate(states).std(0)
    np.testing.assert_allclose(st.scale[:2], pooled[:2], rtol=1e-5)
    assert st.scale[2] == 1.0
    x = rng.normal(size=(4, 3))
    np.testing.assert_allclose(st.inverse(st.transform(x)), x, rtol=1e-5, atol=1e-5)


def test_presets_and_overrides():
    paper = make_config("paper")
    assert (paper.score_hidden, paper.embed_dim, paper.n_levels, paper.anneal_steps) == (
        1024,
        1024,
        30,
        500,
    )
    assert (paper.mc_samples, paper.noise_batch_size, paper.noise_steps) == (20000, 64, 250_000)
    assert paper.lse_temperatures == (1.0, 20.0) and paper.noise_b2 == 0.99
    assert make_config("paper-norman").weight_decay == 0.3
    assert make_config("paper-wessels").lse_temperatures == (1.0, 100.0)
    assert make_config("paper-replogle").score_hidden == 2048
    assert make_config("paper-linear").noise_model is None
    assert set(PRESETS) >= {"paper", "fast", "tiny"}
    c = make_config("fast", lse_temperatures=[1, 5], noise_model=None)
    assert c.lse_temperatures == (1.0, 5.0) and c.noise_model is None
    assert LCDConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="sigma_max"):
        make_config("tiny", sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ConfigError, match="noise_model"):
        make_config("tiny", noise_model="nb")
