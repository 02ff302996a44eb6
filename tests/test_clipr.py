"""CLIPR: the linear solve, the model wrapper and the moments estimator, on exact linear models."""

from __future__ import annotations

import numpy as np
import pytest

import lcdiff as lc
from lcdiff.causal import (
    CliprError,
    LinearSDEOracle,
    MomentsError,
    clipr,
    clipr_solve,
    moments_solve,
    stationary_covariance,
)
from lcdiff.errors import NotFittedError


def random_stable_system(d: int, seed: int, density: float = 0.3):
    """A random sparse stable drift A, bias b and on-target shifts u (state units)."""
    rng = np.random.default_rng(seed)
    weights = (rng.random((d, d)) < density) * rng.uniform(1, 3, (d, d))
    weights *= rng.choice([-1.0, 1.0], (d, d))
    np.fill_diagonal(weights, 0.0)
    drift = weights - (np.linalg.eigvals(weights).real.max() + 0.5) * np.eye(d)
    bias = rng.uniform(-3, 3, d)
    shifts = rng.uniform(5, 15, d) * rng.choice([-1.0, 1.0], d)
    return drift, bias, shifts


def oracle(d=12, seed=0, mode="drift", n_targets=None, **kwargs):
    drift, bias, shifts = random_stable_system(d, seed)
    genes = [f"G{i:02d}" for i in range(d)]
    targets = genes if n_targets is None else genes[:n_targets]
    return LinearSDEOracle(drift, bias, shifts, genes, trained_targets=targets, mode=mode, **kwargs)


# ---------------------------------------------------------------------------------------------
# clipr_solve
# ---------------------------------------------------------------------------------------------
def test_clipr_solve_recovers_a_square_system_exactly():
    rng = np.random.default_rng(1)
    d = 15
    a = rng.normal(size=(d, d)) - 4 * np.eye(d)
    x = rng.normal(size=(d, d))
    f0 = -a @ x
    for kwargs in (
        {"method": "pinv"},
        {"method": "tsvd", "tsvd": 1.0},
        {"tikhonov": 0.0},
        {"tikhonov": 1e-12},
    ):
        np.testing.assert_allclose(clipr_solve(f0, x, **kwargs), a, atol=1e-6)


def test_tikhonov_is_the_ridge_solution_for_fewer_queries_than_genes():
    rng = np.random.default_rng(2)
    d, k, tau = 10, 4, 0.3
    f0, x = rng.normal(size=(d, k)), rng.normal(size=(d, k))
    expected = -f0 @ x.T @ np.linalg.inv(x @ x.T + tau * np.eye(d))  # the reference's form
    got = clipr_solve(f0, x, tikhonov=tau)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    # It minimizes ‖A X + F0‖² + τ‖A‖²: the gradient vanishes.
    grad = (got @ x + f0) @ x.T + tau * got
    np.testing.assert_allclose(grad, 0.0, atol=1e-10)
    # More regularization shrinks A.
    assert np.linalg.norm(clipr_solve(f0, x, tikhonov=10.0)) < np.linalg.norm(got)


def test_truncated_svd_keeps_the_requested_rank():
    rng = np.random.default_rng(3)
    d = 10
    f0, x = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    a = clipr_solve(f0, x, method="tsvd", tsvd=0.3)  # keeps floor(10 * 0.3) = 3 values
    assert np.linalg.matrix_rank(a) == 3


def test_clipr_solve_drops_diverged_queries_with_a_warning():
    rng = np.random.default_rng(4)
    f0, x = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    x_bad = x.copy()
    x_bad[2, 1] = np.nan
    with pytest.warns(RuntimeWarning, match="Dropping 1 of 5"):
        got = clipr_solve(f0, x_bad, tikhonov=0.1)
    keep = [0, 2, 3, 4]
    np.testing.assert_allclose(got, clipr_solve(f0[:, keep], x[:, keep], tikhonov=0.1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fixed_points": np.zeros((4, 3))}, "both be"),
        ({"method": "lasso"}, "Unknown CLIPR solver"),
        ({"tikhonov": -1.0}, ">= 0"),
        ({"method": "tsvd"}, "tsvd in"),
    ],
)
def test_clipr_solve_rejects_bad_input(kwargs, match):
    args = {"f0": np.ones((4, 2)), "fixed_points": np.eye(4)[:, :2], **kwargs}
    with pytest.raises(CliprError, match=match):
        clipr_solve(**args)


# ---------------------------------------------------------------------------------------------
# lc.tl.clipr, paper method
# ---------------------------------------------------------------------------------------------
def test_paper_clipr_is_exact_on_an_affine_drift():
    model = oracle(d=12, mode="drift")
    # Non-trivial standardization, so that both changes of variables are exercised.
    assert not np.allclose(model.state_mean, 0) and not np.allclose(model.state_scale, 1)
    res = lc.tl.clipr(model, tikhonov=0.0, return_details=True)
    np.testing.assert_allclose(res.drift, model.a, atol=1e-6)
    # Orientation: row = source, column = target, i.e. effects[i, j] = A[j, i].
    assert res.effects.index.tolist() == model.genes
    np.testing.assert_allclose(res.effects.to_numpy(), model.a.T, atol=1e-6)
    # b and c_q as in the reference: b = −A x*_ctrl = the true bias, c_q = the true shift.
    np.testing.assert_allclose(res.bias, model.b, atol=1e-6)
    _, _, shifts = random_stable_system(12, seed=0)
    np.testing.assert_allclose(res.shifts, np.diag(shifts), atol=1e-6)
    assert res.queries == model.genes and res.f0.shape == res.fixed_points.shape == (12, 12)


def test_paper_clipr_on_the_exact_score_returns_minus_the_precision():
    model = oracle(d=10, mode="score")
    got = clipr(model, tikhonov=0.0, return_details=True).drift
    np.testing.assert_allclose(got, -np.linalg.inv(model.cov), atol=1e-6)
    assert np.allclose(got, got.T, atol=1e-6)  # symmetric: the paper read-out loses direction


def test_paper_clipr_queries_only_trained_targets_in_gene_order():
    model = oracle(d=8, n_targets=None)
    model.trained_targets = ["G05", "G01", "G03"]
    res = clipr(model, tikhonov=1e-3, return_details=True)
    assert res.queries == ["G01", "G03", "G05"]
    assert res.f0.shape == (8, 3) and res.effects.shape == (8, 8)


def test_clipr_writes_varp_in_the_screen_gene_order():
    import anndata as ad
    import pandas as pd

    model = oracle(d=6)
    order = model.genes[::-1]
    screen = ad.AnnData(np.zeros((2, 6)), var=pd.DataFrame(index=order))
    effects = clipr(model, tikhonov=0.0, screen=screen, key_added="effects")
    np.testing.assert_allclose(screen.varp["effects"], effects.loc[order, order].to_numpy())
    assert screen.uns["clipr"]["effects"]["method"] == "paper"
    other = ad.AnnData(np.zeros((2, 6)), var=pd.DataFrame(index=[f"X{i}" for i in range(6)]))
    with pytest.raises(CliprError, match="var_names"):
        clipr(model, screen=other)


def test_clipr_refuses_unfitted_or_foreign_models():
    model = oracle(d=5)
    model.is_fitted = False
    with pytest.raises(NotFittedError):
        clipr(model)
    with pytest.raises(CliprError, match="lacks"):
        clipr(object())
    with pytest.raises(CliprError, match="Unknown CLIPR method"):
        clipr(oracle(d=5), method="magic")
    empty = oracle(d=5)
    empty.trained_targets = []
    with pytest.raises(CliprError, match="nothing"):
        clipr(empty)


# ---------------------------------------------------------------------------------------------
# Paper method: the reference point of the linearization
# ---------------------------------------------------------------------------------------------
class FarFieldOracle(LinearSDEOracle):
    """Affine drift inside a box around the data; half as strong (saturating) far outside it.

    The fixed points (stationary means) sit inside the box, so they stay exact zeros of the
    drift; the state origin sits outside it, where the drift stops being affine, as a learned
    drift does when it extrapolates.
    """

    box = 40.0

    def _state_drift(self, s, labels):
        base = super()._state_drift(s, labels)
        outside = np.max(np.abs(s - self.state_mean), axis=-1, keepdims=True) > self.box
        return np.where(outside, 0.5 * base, base)


def far_system(d=8, seed=0, cls=LinearSDEOracle, **kwargs):
    """Every mean far from the origin (bias pushes the states out to ≈ 100)."""
    drift, bias, shifts = random_stable_system(d, seed)
    far_bias = bias - drift @ np.full(d, 100.0)  # moves every stationary mean by +100
    return cls(drift, far_bias, shifts, [f"G{i}" for i in range(d)], **kwargs)


@pytest.mark.parametrize("reference", ["origin", "control"])
def test_paper_clipr_is_exact_on_an_affine_drift_for_either_reference(reference):
    model = oracle(d=12, mode="drift")
    res = clipr(model, tikhonov=0.0, reference=reference, return_details=True)
    np.testing.assert_allclose(res.drift, model.a, atol=1e-6)
    np.testing.assert_allclose(res.bias, model.b, atol=1e-6)
    _, _, shifts = random_stable_system(12, seed=0)
    np.testing.assert_allclose(res.shifts, np.diag(shifts), atol=1e-6)
    # The drift was read where asked, and the result says so.
    point = np.zeros(12) if reference == "origin" else model.state_mean
    np.testing.assert_allclose(res.extra["reference_point"], point)
    expected_f = model._state_drift(np.broadcast_to(point, (12, 1, 12)), res.queries)[:, 0].T
    np.testing.assert_allclose(res.f0, expected_f, atol=1e-9)
    assert res.params["reference"] == reference
    # The stored fixed points are the uncentred ones for both references.
    np.testing.assert_allclose(res.fixed_points, model.stationary_means(res.queries).T)


def test_default_reference_is_the_published_origin_estimator():
    model = oracle(d=10, mode="score", n_targets=6)
    tau = 1e-3
    # The published read-out written out independently: F0 = drift at s = 0, X uncentred.
    x = model.stationary_means(model.trained_targets).T
    f0 = model._state_drift(np.zeros((6, 1, 10)), model.trained_targets)[:, 0, :].T
    expected = -f0 @ x.T @ np.linalg.inv(x @ x.T + tau * np.eye(10))
    default = clipr(model, tikhonov=tau, return_details=True)
    np.testing.assert_allclose(default.drift, expected, atol=1e-8)
    explicit = clipr(model, tikhonov=tau, reference="origin").to_numpy()
    np.testing.assert_array_equal(explicit, default.effects.to_numpy())
    # With fewer queries than genes the two references solve different regressions.
    control = clipr(model, tikhonov=tau, reference="control").to_numpy()
    assert not np.allclose(control, explicit, atol=1e-3)


def test_control_reference_is_exact_where_the_origin_is_outside_the_affine_region():
    model = far_system(cls=FarFieldOracle)
    assert np.abs(model.state_mean).min() > 50  # the origin is far outside the box
    at_control = clipr(model, tikhonov=0.0, reference="control", return_details=True)
    np.testing.assert_allclose(at_control.drift, model.a, atol=1e-6)
    at_origin = clipr(model, tikhonov=0.0, return_details=True)
    np.testing.assert_allclose(at_origin.drift, 0.5 * model.a, atol=1e-6)  # the far-field slope


def test_reference_is_recorded_in_the_screen():
    import anndata as ad
    import pandas as pd

    model = oracle(d=6)
    screen = ad.AnnData(np.zeros((2, 6)), var=pd.DataFrame(index=model.genes))
    clipr(model, tikhonov=0.0, screen=screen)
    clipr(model, tikhonov=0.0, reference="control", screen=screen)
    record = screen.uns["clipr"]
    assert record["clipr_paper"]["reference"] == "origin"
    assert record["clipr_paper_control"]["reference"] == "control"
    np.testing.assert_allclose(screen.varp["clipr_paper_control"], model.a.T, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reference": "mean"}, "Unknown CLIPR reference 'mean'.*'origin'.*'control'"),
        ({"reference": None}, "Unknown CLIPR reference"),
        ({"method": "moments", "reference": "control"}, "applies to method='paper' only"),
    ],
)
def test_clipr_rejects_a_bad_reference(kwargs, match):
    with pytest.raises(CliprError, match=match):
        clipr(oracle(d=5), **kwargs)


# ---------------------------------------------------------------------------------------------
# Moments estimator
# ---------------------------------------------------------------------------------------------
def exact_moments(model, targets):
    labels = [model.control, *targets]
    means = model.stationary_means(labels)
    idx = [model.genes.index(t) for t in targets]
    return means[0], model.cov, means[1:], np.array(idx)


@pytest.mark.parametrize("method", ["closed_form", "cg"])
def test_moments_solve_is_exact_when_every_gene_is_perturbed(method):
    model = oracle(d=12, seed=3, diffusion=np.linspace(0.5, 2.0, 12))
    mu0, cov, means, targets = exact_moments(model, model.genes[::-1])  # any target order
    sol = moments_solve(
        mu0, cov, means, targets, model.diffusion, method=method, ridge=1e-12, return_details=True
    )
    np.testing.assert_allclose(sol.drift, model.a, atol=1e-6)
    _, _, shifts = random_stable_system(12, seed=3)
    np.testing.assert_allclose(sol.shifts, shifts[targets], atol=1e-6)
    assert sol.method == method and sol.residual < 1e-8


def test_moments_solve_scales_with_the_assumed_diffusion():
    model = oracle(d=8, seed=5)
    mu0, cov, means, targets = exact_moments(model, model.genes)
    a1 = moments_solve(mu0, cov, means, targets, 1.0)
    a3 = moments_solve(mu0, cov, means, targets, 3.0)
    np.testing.assert_allclose(a3, 3.0 * a1, atol=1e-8)


def test_moments_solve_with_fewer_perturbations_satisfies_both_equation_sets():
    model = oracle(d=20, seed=6)
    mu0, cov, means, targets = exact_moments(model, model.genes[:12])
    sol = moments_solve(mu0, cov, means, targets, 1.0, return_details=True)
    assert sol.method == "cg" and sol.iterations > 0
    # Lyapunov holds exactly by construction; the mean equations up to the CG tolerance.
    lyap = sol.drift @ cov + cov @ sol.drift.T + np.eye(20)
    np.testing.assert_allclose(lyap, 0.0, atol=1e-8)
    assert sol.residual < 1e-6
    np.testing.assert_allclose(sol.skew, -sol.skew.T)


def test_moments_beats_the_paper_read_out_of_the_exact_score_when_half_is_perturbed():
    from lcdiff.eval import causal_auroc

    data = lc.simulate.linear_sde(50, 25, "er", cells_per_condition=2, seed=0)
    true = data.varp["causal_matrix"]
    model = LinearSDEOracle.from_simulation(data, mode="score")
    mu0, cov, means, targets = exact_moments(model, model.trained_targets)
    moments_auroc = causal_auroc(moments_solve(mu0, cov, means, targets, 1.0).T, true)
    paper_auroc = causal_auroc(clipr(model, tikhonov=1e-3).to_numpy(), true)
    assert moments_auroc > 0.97  # the quick check: ≈ 0.99 at p/d = 0.5
    assert moments_auroc > paper_auroc + 0.3


def test_tl_clipr_moments_is_exact_on_exact_moment_samples():
    d = 10
    drift, bias, shifts = random_stable_system(d, seed=7)
    scale = np.linspace(0.5, 3.0, d)
    model = LinearSDEOracle(
        drift,
        bias,
        shifts,
        [f"G{i}" for i in range(d)],
        diffusion=2.0 * scale**2,  # what the model's √2 diffusion in z means in state units
        state_mean=np.zeros(d),
        state_scale=scale,
        exact_moments=True,
    )
    for covariance in ("control", "pooled"):
        res = clipr(
            model,
            method="moments",
            moments_from="samples",
            n_cells=50,
            cov_shrinkage=0.0,
            covariance=covariance,
            moments_solver="auto",
            return_details=True,
        )
        np.testing.assert_allclose(res.drift, drift, atol=1e-6)
        np.testing.assert_allclose(res.bias, bias, atol=1e-6)
        assert res.method == "moments" and res.extra["solver"] == "closed_form"


@pytest.mark.parametrize("solver, ridge", [("auto", 1e-6), ("cg", 1e-12)])
def test_tl_clipr_moments_from_the_score_is_exact_on_a_gaussian_score_model(solver, ridge):
    d = 10
    drift, bias, shifts = random_stable_system(d, seed=11)
    scale = np.linspace(0.5, 3.0, d)
    model = LinearSDEOracle(
        drift,
        bias,
        shifts,
        [f"G{i}" for i in range(d)],
        mode="score",
        diffusion=2.0 * scale**2,
        state_mean=np.linspace(-1, 1, d),
        state_scale=scale,
    )
    res = clipr(model, method="moments", moments_solver=solver, ridge=ridge, return_details=True)
    np.testing.assert_allclose(res.extra["covariance"], model.cov, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.drift, drift, atol=1e-6)
    assert res.params["moments_from"] == "score" and res.params["floored_eigenvalues"] == 0


def test_tl_clipr_moments_from_finite_samples_shrinks_and_stays_close():
    model = oracle(d=8, seed=8, diffusion=1.0)
    res = clipr(
        model,
        method="moments",
        moments_from="samples",
        n_cells=4000,
        diffusion=1.0,
        moments_solver="auto",
        return_details=True,
    )
    assert 0.0 <= res.params["cov_shrinkage"] < 0.2
    rel = np.linalg.norm(res.drift - model.a) / np.linalg.norm(model.a)
    assert rel < 0.2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cov_ctrl": np.zeros((3, 3))}, "positive definite"),
        ({"cov_ctrl": np.eye(4)}, r"\[d, d\]"),
        ({"targets": np.array([0, 5])}, "lie in"),
        ({"targets": np.array([0.0, 1.0])}, "integer"),
        ({"diffusion": -1.0}, "positive"),
        ({"method": "closed_form"}, "every gene"),
        ({"means": np.full((2, 3), np.nan)}, "NaN"),
    ],
)
def test_moments_solve_rejects_bad_input(kwargs, match):
    args = {
        "mean_ctrl": np.zeros(3),
        "cov_ctrl": np.eye(3),
        "means": np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        "targets": np.array([0, 1]),
        "diffusion": 1.0,
        **kwargs,
    }
    with pytest.raises(MomentsError, match=match):
        moments_solve(**args)


def test_stationary_covariance_solves_the_lyapunov_equation():
    drift, _, _ = random_stable_system(6, seed=9)
    cov = stationary_covariance(drift, 2.0)
    np.testing.assert_allclose(drift @ cov + cov @ drift.T, -2.0 * np.eye(6), atol=1e-10)
    with pytest.raises(lc.causal.OracleError, match="not stable"):
        stationary_covariance(np.eye(3), 1.0)


# ---------------------------------------------------------------------------------------------
# Oracle rows of the paper benchmark (issue 5): ER, d = 100, exact population moments.
# ---------------------------------------------------------------------------------------------
PAPER_SCORE_AUROC = {0.3: 0.45, 0.5: 0.56, 0.7: 0.69, 1.0: 0.96}


def _oracle_row(frac: float, seed: int, mode: str) -> dict:
    data = lc.simulate.linear_sde(100, int(100 * frac), "er", cells_per_condition=2, seed=seed)
    model = LinearSDEOracle.from_simulation(data, mode=mode)
    effects = clipr(model, tikhonov=1e-3)
    return lc.eval.causal_metrics(effects.to_numpy(), data.varp["causal_matrix"])


@pytest.mark.parametrize("frac", [0.3, 1.0])
def test_oracle_rows_one_system(frac):
    score = _oracle_row(frac, seed=0, mode="score")
    assert abs(score["causal_auroc"] - PAPER_SCORE_AUROC[frac]) <= 0.03
    if frac == 1.0:
        assert abs(score["causal_pearson"] - 0.63) <= 0.03
        drift = _oracle_row(frac, seed=0, mode="drift")
        assert drift["causal_auroc"] > 0.999


@pytest.mark.slow
@pytest.mark.parametrize("frac", [0.3, 0.5, 0.7, 1.0])
def test_oracle_rows_three_systems(frac):
    rows = [_oracle_row(frac, seed, "score") for seed in range(3)]
    auroc = np.mean([r["causal_auroc"] for r in rows])
    assert abs(auroc - PAPER_SCORE_AUROC[frac]) <= 0.03
    if frac == 1.0:
        assert abs(np.mean([r["causal_pearson"] for r in rows]) - 0.63) <= 0.03
        drift = [_oracle_row(frac, seed, "drift")["causal_auroc"] for seed in range(3)]
        assert min(drift) > 0.999
