"""Stage B + sampler on a Gaussian family with known score (``noise_model=None``).

Conditions are N(μ_S, Σ) with a shared covariance Σ and means μ_S = μ_0 + Σ_{j∈S} δ_j (a
perturbation shifts the mean, combinations add shifts), as for a linear SDE with shift
interventions. The exact score is −Σ⁻¹(x − μ_S); in the model's standardized space
z = (s − m)/c it is −(Σ_z + σ²I)⁻¹(z − μ_z) at noise level σ (Σ_z = C⁻¹ΣC⁻¹, C = diag(c)).
One double is held out of training: the model must predict it through the sum of embeddings.

The fast test uses σ_min = 0.05: the σ²-weighted DSM signal for the score at σ = 0.01 is buried
under O(1) target noise and needs far more steps than a unit test can afford (the slow test
trains longer at the paper's σ_min = 0.01 and checks the same properties at a looser tolerance).
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from lcdiff.model.lcd import LCD

D = 5
TRAIN = ["ctrl", "G0", "G1", "G2", "G3", "G4", "G0+G1", "G1+G2", "G2+G3", "G3+G4", "G0+G4", "G0+G3"]
HELDOUT = "G1+G3"


class GaussianFamily:
    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        a = rng.normal(0.0, 0.4, (D, D))
        self.sigma = a @ a.T + 0.5 * np.eye(D)
        self.mu0 = rng.normal(0.0, 1.0, D)
        self.shifts = {f"G{j}": rng.choice([-1, 1], D) * rng.uniform(0.5, 1.5, D) for j in range(D)}
        self.chol = np.linalg.cholesky(self.sigma)
        self.rng = rng

    def mean(self, label: str) -> np.ndarray:
        out = self.mu0.copy()
        for g in [] if label == "ctrl" else label.split("+"):
            out += self.shifts[g]
        return out

    def sample(self, label: str, n: int) -> np.ndarray:
        return self.mean(label) + self.rng.normal(size=(n, D)) @ self.chol.T

    def screen(self, n: int) -> ad.AnnData:
        x = np.concatenate([self.sample(lab, n) for lab in TRAIN]).astype(np.float32)
        obs = [lab for lab in TRAIN for _ in range(n)]
        adata = ad.AnnData(
            X=x,
            obs=pd.DataFrame({"perturbation": obs}, index=[f"c{i}" for i in range(len(obs))]),
            var=pd.DataFrame(index=[f"G{j}" for j in range(D)]),
        )
        adata.uns["lcdiff"] = {"control": "ctrl", "perturbation_key": "perturbation"}
        return adata


def _check(
    model: LCD, family: GaussianFamily, score_tol: float, mean_tol: float, cov_tol: float
) -> None:
    c = model.state_scale
    sigma_z = family.sigma / np.outer(c, c)
    s_min = float(model.sigmas[-1])
    exact_precision = np.linalg.inv(sigma_z + s_min**2 * np.eye(D))
    for label in ["ctrl", "G2", "G0+G1", HELDOUT]:
        s = family.sample(label, 400)  # fresh points, never seen in training
        z = (s - model.state_mean) / c
        mu_z = (family.mean(label) - model.state_mean) / c
        exact = -(z - mu_z) @ exact_precision
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learned = model.drift(z[None], [label])[0]
        rel = np.linalg.norm(learned - exact) / np.linalg.norm(exact)
        assert rel < score_tol, f"score error {rel:.3f} for {label}"

    # 6000 chains: the relative Frobenius error of a sample covariance from 2000 cells is ~0.05
    # by itself, as large as the margin between the model's covariance error (~0.27 over seeds
    # 1-4 of the per-cell random streams, issue 17) and the tolerance
    samples = model.sample_states([HELDOUT], n_cells=6000, seed=1)[0]
    std = np.sqrt(np.diag(family.sigma))
    mean_err = np.abs(samples.mean(0) - family.mean(HELDOUT)) / std
    assert mean_err.max() < mean_tol, mean_err
    # the held-out mean is far from what a "no effect" answer (the control mean) would give
    assert (np.abs(family.mean(HELDOUT) - family.mu0) / std).max() > 1.0
    cov = np.cov(samples.T)
    cov_err = np.linalg.norm(cov - family.sigma) / np.linalg.norm(family.sigma)
    assert cov_err < cov_tol, cov_err
    # and a wrong covariance (the identity at matching scale) would fail the same check
    wrong = np.diag(np.diag(family.sigma))
    assert np.linalg.norm(wrong - family.sigma) / np.linalg.norm(family.sigma) > cov_tol


def test_gaussian_family_score_and_heldout_moments():
    family = GaussianFamily(0)
    model = LCD(
        family.screen(400),
        preset="tiny",
        noise_model=None,
        score_steps=3000,
        score_hidden=64,
        embed_dim=16,
        score_batch_size=512,
        score_lr=3e-3,
        weight_decay=0.01,
        n_levels=8,
        sigma_min=0.05,
        anneal_dt=2.5e-4,
        anneal_steps=50,
    ).fit(progress=False)
    _check(model, family, score_tol=0.4, mean_tol=0.25, cov_tol=0.3)


@pytest.mark.slow
def test_gaussian_family_paper_sigma_min():
    family = GaussianFamily(1)
    model = LCD(
        family.screen(1000),
        preset="tiny",
        noise_model=None,
        score_steps=30000,
        score_hidden=128,
        embed_dim=32,
        score_batch_size=1024,
        score_lr=2e-3,
        weight_decay=0.01,
        n_levels=15,
        sigma_min=0.01,
        anneal_dt=1e-5,
        anneal_steps=100,
    ).fit(progress=False)
    _check(model, family, score_tol=0.5, mean_tol=0.25, cov_tol=0.3)
