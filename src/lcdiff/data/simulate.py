"""Simulators with known ground truth.

Two simulators live here:

- :func:`linear_sde`, the paper's synthetic benchmark for causal recovery: a linear SDE on a
  random directed graph, observed without noise through exact stationary Gaussian samples.
- :func:`screen`, a nonlinear Perturb-seq simulator: a sparse gene network with saturating
  interactions defines a latent stationary SDE, sampled by Euler–Maruyama, observed through
  negative-binomial (or zero-inflated Poisson) counts with varying library sizes.

Both return an AnnData whose ``obs["perturbation"]`` holds canonical labels, whose
``uns["lcdiff"]`` names the control label (so the screen accessors work), whose
``varp["causal_matrix"]`` holds the true causal matrix (row = source gene, column = target
gene) and whose ``uns["simulation"]`` records every parameter. Everything stored is
h5ad-serializable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.linalg
from anndata import AnnData
from threadpoolctl import threadpool_limits

from lcdiff.data.labels import format_label, parse_label
from lcdiff.data.normalize import dense, log1p_cp10k
from lcdiff.data.screen import PERTURBATION_KEY, UNS_KEY
from lcdiff.errors import ConfigError

CONTROL = "ctrl"

# --- the paper's linear benchmark (lcd-evaluation §2.9) ------------------------------------
ER_EDGES_PER_GENE = 10
BA_EDGES_PER_NEW_GENE = 10
BA_POWER = 1.0
SFO_FLIP_PROBABILITY = 0.1
WEIGHT_RANGE = (1.0, 3.0)
STABILITY_MARGIN = 0.5  # largest real eigenvalue of the drift after the diagonal shift is -0.5
BIAS_RANGE = (-3.0, 3.0)
SHIFT_RANGE = (5.0, 15.0)
GRAPH_FAMILIES = ("er", "sfo")


def _single_threaded_blas(func):
    """Run ``func`` with BLAS/LAPACK limited to one thread.

    The simulators' products are small or medium (cells × regulators × genes, d ≤ 1000);
    multi-threaded BLAS gains little there and, on a busy machine, its synchronization makes
    them up to ~100 times slower.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _is_real(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def gene_names(n: int, prefix: str = "g", width: int = 4) -> list[str]:
    """Synthetic gene names ``prefix`` + zero-padded index (``g0000``, ``g0001``, ...)."""
    width = max(width, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def erdos_renyi_graph(d: int, rng: np.random.Generator, edges_per_gene: float = 10) -> np.ndarray:
    """Directed Erdős–Rényi graph, cycles allowed, about ``edges_per_gene`` out-edges per gene.

    Each ordered pair ``(i, j)``, ``i != j``, is an edge with probability
    ``min(edges_per_gene * d / (d (d - 1)), 0.99)``.

    Returns
    -------
    ``[d, d]`` int8 adjacency; ``g[i, j] = 1`` means ``i → j``; zero diagonal.
    """
    p = min(edges_per_gene * d / (d * (d - 1)), 0.99)
    g = (rng.random((d, d)) < p).astype(np.int8)
    np.fill_diagonal(g, 0)
    perm = rng.permutation(d)
    return g[np.ix_(perm, perm)]


def barabasi_albert_graph(
    d: int, rng: np.random.Generator, m: int = 10, power: float = 1.0
) -> np.ndarray:
    """Directed Barabási–Albert graph: each new gene sends edges to ``min(t, m)`` older genes.

    Gene ``t`` (t = 1, ..., d−1) picks distinct older genes with probability proportional to
    ``(in-degree + 1) ** power``, so early genes become high in-degree hubs (the
    preferential-attachment rule of igraph's ``Barabasi(directed=True)``).

    Returns
    -------
    ``[d, d]`` int8 adjacency, ``g[new, old] = 1`` (edges point from new to old genes).
    """
    g = np.zeros((d, d), dtype=np.int8)
    in_degree = np.zeros(d)
    for t in range(1, d):
        weights = (in_degree[:t] + 1.0) ** power
        k = min(t, m)
        olds = rng.choice(t, size=k, replace=False, p=weights / weights.sum())
        g[t, olds] = 1
        in_degree[olds] += 1
    return g


def scale_free_outgoing_graph(
    d: int,
    rng: np.random.Generator,
    m: int = 10,
    power: float = 1.0,
    flip_probability: float = 0.1,
) -> np.ndarray:
    """Scale-free graph whose hubs have a high OUT-degree ("sfo" in the paper).

    A Barabási–Albert graph (:func:`barabasi_albert_graph`) with permuted genes; each edge is
    reversed with probability ``flip_probability``; finally the graph is transposed so that the
    hubs point to many genes (power-law out-degree, in-degree about ``m`` for most genes).

    Returns
    -------
    ``[d, d]`` int8 adjacency; ``g[i, j] = 1`` means ``i → j``.
    """
    g = barabasi_albert_graph(d, rng, m=m, power=power)
    perm = rng.permutation(d)
    g = g[np.ix_(perm, perm)]
    sources, targets = np.nonzero(g)
    flip = rng.random(sources.size) < flip_probability
    g[sources[flip], targets[flip]] = 0
    g[targets[flip], sources[flip]] = 1
    return np.ascontiguousarray(g.T)


def _stable_causal_matrix(graph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Weights ±U(1, 3) on the edges, then a diagonal shift to a largest real eigenvalue −0.5."""
    d = graph.shape[0]
    magnitude = rng.uniform(*WEIGHT_RANGE, size=(d, d))
    sign = rng.choice([-1.0, 1.0], size=(d, d))
    weights = graph * magnitude * sign
    np.fill_diagonal(weights, 0.0)
    max_real = np.linalg.eigvals(weights).real.max()
    return weights - (max_real + STABILITY_MARGIN) * np.eye(d)


@_single_threaded_blas
def linear_sde(
    d: int,
    n_perturbed: int,
    graph: str = "er",
    cells_per_condition: int = 200,
    seed: int = 0,
) -> AnnData:
    """The paper's synthetic linear-SDE screen (lcd-evaluation §2.9).

    The system is ``dx = (A x + b + c_q) dt + dW`` with unit diffusion, where

    - the graph is Erdős–Rényi (``"er"``, about 10 out-edges per gene, cycles allowed) or
      scale-free with power-law out-degree (``"sfo"``: Barabási–Albert with m = 10, 10 % of
      edges reversed, transposed);
    - ``W = graph ⊙ U(1, 3) ⊙ random sign`` (zero diagonal), ``a_causal = W − (λ_max + 0.5) I``
      with ``λ_max`` the largest real part of an eigenvalue of ``W``, so the largest real
      eigenvalue of ``a_causal`` is −0.5; the drift matrix is ``A = a_causalᵀ``
      (``a_causal[i, j]`` is the effect of gene i on gene j);
    - ``b ~ U(−3, 3)^d``; every gene j has a shift ``u_j = ±U(5, 15)``, and condition j adds
      ``c_j = u_j e_j`` (a shift intervention on gene j); the perturbed genes are the first
      ``n_perturbed`` genes of a random permutation; the control has ``c = 0``;
    - cells are exact stationary samples ``N(−A⁻¹(b + c_q), Σ)`` with ``AΣ + ΣAᵀ = −I``;
      there is no measurement noise.

    Parameters come from ``np.random.default_rng((0, 0, 1, seed))`` and samples from
    ``np.random.default_rng((1, 0, 1, seed))``, as in the reference (one seed = one "fold").

    Parameters
    ----------
    d
        Number of genes (>= 2).
    n_perturbed
        Number of single-gene perturbations, ``0 <= n_perturbed <= d``.
    graph
        ``"er"`` or ``"sfo"``.
    cells_per_condition
        Cells per condition, control included.
    seed
        Non-negative integer; the same seed gives the same system and the same cells.

    Returns
    -------
    AnnData ``[(n_perturbed + 1) · cells_per_condition, d]`` with

    - ``X``: float32 stationary states (continuous, may be negative; no counts layer);
    - ``obs["perturbation"]``: ``"ctrl"`` or the perturbed gene's name; var names ``g0000``...;
    - ``uns["lcdiff"]``: ``{"control": "ctrl", "perturbation_key": "perturbation",
      "kind": "linear_sde"}``;
    - ``varp["causal_matrix"]``: ``a_causal`` ``[d, d]`` (row = source, column = target);
    - ``uns["simulation"]``: ``drift`` (A), ``bias`` (b), ``shifts`` (``{"u": [d],
      "targets": perturbed gene names}``), ``diffusion`` (1.0), ``stationary_covariance``
      (Σ), ``means`` (label → exact stationary mean), ``graph`` (adjacency, ``[i, j] = 1``
      for ``i → j``), ``graph_family``, ``seed``, ``cells_per_condition``.

    Raises
    ------
    ConfigError
        For an unknown graph family or out-of-range sizes or seed.
    """
    d = _check_int("d", d, 2)
    n_perturbed = _check_int("n_perturbed", n_perturbed, 0)
    cells_per_condition = _check_int("cells_per_condition", cells_per_condition, 1)
    seed = _check_int("seed", seed, 0)
    if n_perturbed > d:
        raise ConfigError(f"n_perturbed ({n_perturbed}) cannot exceed the number of genes d ({d}).")
    if graph not in GRAPH_FAMILIES:
        raise ConfigError(f"Unknown graph family {graph!r}; choose one of {GRAPH_FAMILIES}.")

    param_rng = np.random.default_rng((0, 0, 1, seed))
    sample_rng = np.random.default_rng((1, 0, 1, seed))

    if graph == "er":
        adjacency = erdos_renyi_graph(d, param_rng, ER_EDGES_PER_GENE)
    else:
        adjacency = scale_free_outgoing_graph(
            d, param_rng, BA_EDGES_PER_NEW_GENE, BA_POWER, SFO_FLIP_PROBABILITY
        )
    a_causal = _stable_causal_matrix(adjacency, param_rng)
    drift = a_causal.T.copy()
    bias = param_rng.uniform(*BIAS_RANGE, size=d)
    shift_u = param_rng.uniform(*SHIFT_RANGE, size=d) * param_rng.choice([-1.0, 1.0], size=d)
    perturbed = np.sort(param_rng.permutation(d)[:n_perturbed])

    genes = gene_names(d)
    covariance = scipy.linalg.solve_continuous_lyapunov(drift, -np.eye(d))
    covariance = 0.5 * (covariance + covariance.T)
    chol = np.linalg.cholesky(covariance)

    labels = [CONTROL] + [genes[j] for j in perturbed]
    # Shift vectors of all conditions as columns (control first), solved with one factorization.
    shifts = np.zeros((d, len(labels)))
    shifts[perturbed, np.arange(1, len(labels))] = shift_u[perturbed]
    mean_matrix = np.linalg.solve(drift, -(bias[:, None] + shifts))
    means = {label: mean_matrix[:, q] for q, label in enumerate(labels)}

    # float32 keeps the d × d products cheap for d = 1000; its error is far below sampling noise.
    chol_t = chol.T.astype(np.float32)
    X = np.empty((len(labels) * cells_per_condition, d), dtype=np.float32)
    for q in range(len(labels)):
        noise = sample_rng.standard_normal((cells_per_condition, d), dtype=np.float32)
        rows = slice(q * cells_per_condition, (q + 1) * cells_per_condition)
        X[rows] = mean_matrix[:, q].astype(np.float32) + noise @ chol_t

    obs = pd.DataFrame(
        {
            PERTURBATION_KEY: pd.Categorical(
                np.repeat(labels, cells_per_condition), categories=labels
            )
        },
        index=[f"cell{i:07d}" for i in range(X.shape[0])],
    )
    adata = AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns[UNS_KEY] = {
        "control": CONTROL,
        "perturbation_key": PERTURBATION_KEY,
        "kind": "linear_sde",
    }
    adata.varp["causal_matrix"] = a_causal
    adata.uns["simulation"] = {
        "kind": "linear_sde",
        "drift": drift,
        "bias": bias,
        "shifts": {"u": shift_u, "targets": np.array([genes[j] for j in perturbed], dtype=str)},
        "diffusion": 1.0,
        "stationary_covariance": covariance,
        "means": means,
        "graph": adjacency,
        "graph_family": graph,
        "seed": seed,
        "cells_per_condition": cells_per_condition,
    }
    return adata


# --- the nonlinear count-level screen ------------------------------------------------------
SCREEN_KIND = "nonlinear_screen"
OBSERVATIONS = ("nb", "zip")
REGULATOR_FRACTION = 0.3  # share of genes that regulate others (perturbed genes are among them)
MEAN_EXTRA_REGULATORS = 1.0  # in-degree = 1 + Poisson(1)
ACTIVATION_PROBABILITY = 0.6  # an edge activates its target, otherwise it represses it
COOPERATIVE_FRACTION = 0.4  # share of genes activated only by two regulators at once (AND)
ACTIVATION_WEIGHT_RANGE = (0.5, 1.5)  # relative weights; scaled to sum to 1 − basal per target
REPRESSION_WEIGHT_RANGE = (1.0, 3.0)
BASAL_RANGE = (0.05, 0.2)  # activator-independent share of production, and repression floor
RELATIVE_HALF_SATURATION_RANGE = (0.5, 1.0)  # h_i / y_i at control
DECAY_RANGE = (1.0, 1.5)
LATENT_NOISE = 0.5
KNOCKDOWN_RANGE = (2.0, 3.0)  # drop of the target's log expression, ≈ 87–95 % knock-down
ACTIVATION_RANGE = (1.0, 2.0)  # rise of the target's log expression, ≈ 2.7–7.4 fold
BASELINE_LOG_ABUNDANCE_SD = 0.7
BASELINE_LOG_ABUNDANCE_CLIP = 2.0
LIBRARY_SIZE_LOG_SD = 0.35
DISPERSION_RANGE = (3.0, 10.0)  # negative binomial: variance = mean + mean² / θ
ZERO_INFLATION_RANGE = (0.02, 0.15)
EM_DT = 0.1
EM_BURN_IN_STEPS = 50
FIXED_POINT_DT = 0.2
FIXED_POINT_TOL = 1e-9
FIXED_POINT_MAX_STEPS = 20_000
NONADDITIVE_Z = 5.0


@dataclass(frozen=True)
class GeneNetwork:
    """Regulatory dynamics of the nonlinear screen, in log-expression space.

    For a state ``x`` (log expression, ``[n, d]``) and ``y = exp(x)``, gene j's drift is

        ``f_j(x) = γ_j (ρ_j (log A_j(y) + log R_j(y)) − x_j) + c_j``

    with activation ``A_j = b_j + Σ_i a_ij g_i`` where ``g_i = y_i / (h_i + y_i)``
    (Michaelis–Menten; ``b_j + Σ_i a_ij = 1``) or, for cooperative ("AND") targets, ``A_j = b_j
    + (1 − b_j) g_p g_q`` for its two activators p, q; and leaky repression ``R_j = ℓ_j + (1 −
    ℓ_j) / (1 + Σ_i r_ij y_i / h_i)``.
    Without noise and shift, ``x_j = ρ_j log(A_j R_j)``: the log of a production rate that
    saturates in every regulator. ``ρ_j`` is 1/2 for genes with both activators and repressors and 1
    otherwise; then ``Σ_i |∂ f_j / ∂ x_i| < γ_j`` everywhere (for AND targets this needs
    ``b_j >= 0.05``), so the drift is a contraction and every condition has one fixed point and
    one stationary law.

    Attributes
    ----------
    activation, repression
        ``[d, d]`` non-negative weights ``a_ij``, ``r_ij`` (row = source i, column = target j);
        for AND targets ``activation`` holds ``(1 − b_j) / 2`` on both inputs (for display).
    cooperative
        ``[m, 3]`` int rows ``(target, activator p, activator q)`` of the AND targets.
    half_saturation
        ``[d]`` ``h_i`` of each regulator.
    basal, floor, damping, decay
        ``[d]`` ``b_j``, ``ℓ_j``, ``ρ_j``, ``γ_j``.
    regulators
        Indices of the genes with outgoing edges.
    """

    activation: np.ndarray
    repression: np.ndarray
    half_saturation: np.ndarray
    basal: np.ndarray
    floor: np.ndarray
    damping: np.ndarray
    decay: np.ndarray
    regulators: np.ndarray
    cooperative: np.ndarray

    @property
    def signed_weights(self) -> np.ndarray:
        """``[d, d]`` ``a_ij − r_ij`` (row = source, column = target)."""
        return self.activation - self.repression

    @property
    def _additive_activation(self) -> np.ndarray:
        additive = self.activation.copy()
        additive[:, self.cooperative[:, 0]] = 0.0
        return additive

    def _arrays(self, dtype) -> dict:
        """Parameters cast to ``dtype`` and restricted to regulator rows (cached per dtype)."""
        cache = self.__dict__.setdefault("_cache", {})  # frozen dataclass: bypass __setattr__
        key = np.dtype(dtype).str
        if key not in cache:
            reg = self.regulators
            position = {int(g): k for k, g in enumerate(reg)}
            cache[key] = {
                "half": self.half_saturation[reg].astype(dtype),
                "activation": self._additive_activation[reg].astype(dtype),
                "repression": self.repression[reg].astype(dtype),
                "basal": self.basal.astype(dtype),
                "floor": self.floor.astype(dtype),
                "rate": (self.decay * self.damping).astype(dtype),
                "decay": self.decay.astype(dtype),
                "and_target": self.cooperative[:, 0],
                "and_p": np.array([position[int(p)] for p in self.cooperative[:, 1]], dtype=int),
                "and_q": np.array([position[int(q)] for q in self.cooperative[:, 2]], dtype=int),
                "and_weight": (1 - self.basal[self.cooperative[:, 0]]).astype(dtype),
            }
        return cache[key]

    def _terms(self, x: np.ndarray):
        """Activation ``A``, repression load ``Σ r y / h`` and repression ``R``, each ``[n, d]``."""
        arr = self._arrays(x.dtype)
        ratio = np.exp(x[:, self.regulators]) / arr["half"]  # y / h of each regulator
        g = ratio / (1 + ratio)
        act = arr["basal"] + g @ arr["activation"]
        act[:, arr["and_target"]] += arr["and_weight"] * g[:, arr["and_p"]] * g[:, arr["and_q"]]
        load = ratio @ arr["repression"]
        rep = arr["floor"] + (1 - arr["floor"]) / (1 + load)
        return act, load, rep

    def drift(self, x: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Drift ``[n, d]`` at states ``x`` ``[n, d]`` under shifts ``c`` (``[n, d]``/``[d]``)."""
        act, _, rep = self._terms(x)
        arr = self._arrays(x.dtype)
        return arr["rate"] * np.log(act * rep) - arr["decay"] * x + shift

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """``J[j, i] = ∂f_j / ∂x_i`` at one state ``x`` ``[d]`` (shifts do not enter)."""
        x = np.asarray(x, dtype=np.float64)[None, :]
        act, load, rep = (term[0] for term in self._terms(x))
        y = np.exp(x[0])
        h = self.half_saturation
        g = y / (h + y)
        d_log_act = (g * (1 - g))[:, None] * self._additive_activation / act[None, :]
        for target, p, q in self.cooperative:
            product = (1 - self.basal[target]) * g[p] * g[q]
            d_log_act[p, target] += product * (1 - g[p]) / act[target]
            d_log_act[q, target] += product * (1 - g[q]) / act[target]
        d_rep = -((1 - self.floor) / (1 + load) ** 2)[None, :] * (y / h)[:, None] * self.repression
        d_log_rep = d_rep / rep[None, :]
        sensitivity = (d_log_act + d_log_rep) * (self.decay * self.damping)[None, :]  # [i, j]
        return sensitivity.T - np.diag(self.decay)

    def fixed_points(self, shifts: np.ndarray) -> np.ndarray:
        """Deterministic fixed point of every row of ``shifts`` ``[k, d]``, by forward Euler."""
        x = np.zeros_like(shifts, dtype=np.float64)
        for _ in range(FIXED_POINT_MAX_STEPS):
            step = self.drift(x, shifts)
            x = x + FIXED_POINT_DT * step
            if np.abs(step).max() < FIXED_POINT_TOL:
                return x
        raise RuntimeError("fixed-point iteration did not converge")  # contraction: unreachable

    @classmethod
    def from_uns(cls, simulation: dict) -> GeneNetwork:
        """Rebuild the network from ``uns["simulation"]`` of a :func:`screen` result."""
        fields = (
            "activation",
            "repression",
            "half_saturation",
            "basal",
            "floor",
            "damping",
            "decay",
            "regulators",
            "cooperative",
        )
        return cls(**{name: np.asarray(simulation[name]) for name in fields})

    def to_uns(self) -> dict:
        return {
            "activation": self.activation,
            "repression": self.repression,
            "half_saturation": self.half_saturation,
            "basal": self.basal,
            "floor": self.floor,
            "damping": self.damping,
            "decay": self.decay,
            "regulators": self.regulators,
            "cooperative": self.cooperative,
        }


def _screen_network(n_genes: int, n_regulators: int, rng: np.random.Generator) -> GeneNetwork:
    """Random sparse :class:`GeneNetwork` whose edges leave a set of regulators.

    Every gene receives ``1 + Poisson(1)`` inputs from the regulators (not itself), chosen with
    probability proportional to a heavy-tailed (Pareto) propensity so that a few regulators are
    hubs; each input activates (probability 0.6) or represses. Instead, 40 % of the genes are AND
    targets of two uniformly chosen regulators.
    """
    regulators = np.sort(rng.permutation(n_genes)[:n_regulators])
    propensity = 1.0 + rng.pareto(1.5, size=n_regulators)
    basal = rng.uniform(*BASAL_RANGE, size=n_genes)
    floor = rng.uniform(*BASAL_RANGE, size=n_genes)
    activation = np.zeros((n_genes, n_genes))
    repression = np.zeros((n_genes, n_genes))
    cooperative = []
    for target in range(n_genes):
        allowed = regulators != target
        if rng.random() < COOPERATIVE_FRACTION and allowed.sum() >= 2:
            # An AND target: two regulators, uniformly chosen (not hub-biased), act jointly.
            p, q = rng.choice(regulators[allowed], size=2, replace=False)
            cooperative.append((target, p, q))
            activation[[p, q], target] = (1 - basal[target]) / 2
            continue
        k = min(1 + rng.poisson(MEAN_EXTRA_REGULATORS), int(allowed.sum()))
        weights = propensity * allowed
        sources = rng.choice(regulators, size=k, replace=False, p=weights / weights.sum())
        activating = rng.random(k) < ACTIVATION_PROBABILITY
        act_w = rng.uniform(*ACTIVATION_WEIGHT_RANGE, size=k)
        rep_w = rng.uniform(*REPRESSION_WEIGHT_RANGE, size=k)
        activators = sources[activating]
        if activators.size:
            share = act_w[activating] / act_w[activating].sum()
            activation[activators, target] = (1 - basal[target]) * share
        repression[sources[~activating], target] = rep_w[~activating]
    has_act = activation.any(axis=0)
    has_rep = repression.any(axis=0)
    basal = np.where(has_act, basal, 1.0)  # no activators: constant production
    damping = np.where(has_act & has_rep, 0.5, 1.0)
    # Each regulator's half-saturation level is a fraction κ of its own control level, so that
    # every regulator works in the responsive part of its curve (g = 1 / (1 + κ) at control).
    # With h = κ the state x = 0 has exactly these activities; the control fixed point is then
    # x_c = ρ (log A + log R) at x = 0, and h = κ exp(x_c) puts it there.
    relative_half_saturation = rng.uniform(*RELATIVE_HALF_SATURATION_RANGE, size=n_genes)
    decay = rng.uniform(*DECAY_RANGE, size=n_genes)
    network = GeneNetwork(
        activation,
        repression,
        relative_half_saturation,
        basal,
        floor,
        damping,
        decay,
        regulators,
        np.asarray(cooperative, dtype=np.int64).reshape(-1, 3),
    )
    control = network.drift(np.zeros((1, n_genes)), 0.0)[0] / decay  # = ρ (log A + log R) at 0
    return replace(network, half_saturation=relative_half_saturation * np.exp(control))


def _choose_doubles(perturbed, shift_u, network: GeneNetwork, n_doubles: int, rng):
    """Pairs of perturbed genes: half screened for interaction, half uniformly at random.

    Like real combinatorial screens, which enrich for pairs expected to interact, half of the
    doubles are the pairs whose deterministic fixed point departs most from additivity (largest
    ``max_g |x*_AB − x*_A − x*_B + x*_ctrl|``); the rest are drawn at random from the remaining
    pairs.
    """
    pairs = [(a, b) for i, a in enumerate(perturbed) for b in perturbed[i + 1 :]]
    d = shift_u.size
    shifts = np.zeros((1 + len(perturbed) + len(pairs), d))
    for k, a in enumerate(perturbed):
        shifts[1 + k, a] = shift_u[a]
    for k, (a, b) in enumerate(pairs):
        shifts[1 + len(perturbed) + k, [a, b]] = shift_u[[a, b]]
    fixed = network.fixed_points(shifts)
    single = {a: fixed[1 + k] for k, a in enumerate(perturbed)}
    gap = np.array(
        [
            np.abs(fixed[1 + len(perturbed) + k] - single[a] - single[b] + fixed[0]).max()
            for k, (a, b) in enumerate(pairs)
        ]
    )
    n_screened = n_doubles // 2
    chosen = list(np.argsort(-gap, kind="stable")[:n_screened])
    rest = rng.permutation(np.setdiff1d(np.arange(len(pairs)), chosen))
    chosen += list(rest[: n_doubles - n_screened])
    return [pairs[i] for i in sorted(chosen)]


def _sample_counts(logits, library_size, observation, noise_param, rng) -> np.ndarray:
    """Counts ``[n, d]`` from expression shares ``softmax(logits)`` times the library size."""
    shares = np.exp(logits - logits.max(axis=1, keepdims=True))
    shares /= shares.sum(axis=1, keepdims=True)
    mean = shares * library_size[:, None]
    if observation == "nb":
        rate = rng.gamma(noise_param, mean / noise_param)  # Gamma–Poisson = negative binomial
        return rng.poisson(rate)
    keep = rng.random(mean.shape) >= noise_param  # zero-inflated Poisson
    return rng.poisson(mean) * keep


def additivity_report(
    adata: AnnData,
    control: str = CONTROL,
    z_threshold: float = NONADDITIVE_Z,
    layer: str | None = None,
    log_normalize: bool = True,
) -> pd.DataFrame:
    """Test each double against the additive prediction from its singles.

    On log1p CP10k means (``log_normalize=True``; otherwise on the values as given), the additive
    prediction of ``A+B`` is ``m_ctrl + (m_A − m_ctrl) + (m_B − m_ctrl)``. Its error, gene by gene,
    is divided by the standard error of the four sample means combined; a double is called
    non-additive when some gene's ``|z|`` exceeds ``z_threshold`` (5 by default: with 100 genes
    and 40 doubles, fewer than 0.01 false calls are expected).

    Parameters
    ----------
    adata
        Cells × genes with ``obs["perturbation"]`` (raw counts in ``X`` or ``layer``).
    control
        The control label.
    z_threshold
        Calls a double non-additive above this ``|z|``.
    layer
        Layer to read (``None``: ``X``).
    log_normalize
        Apply ``log1p_cp10k`` first (for counts); ``False`` for continuous states.

    Returns
    -------
    DataFrame indexed by double label with ``max_abs_z``, ``max_abs_error`` (largest absolute
    gap between observed and additive mean) and ``nonadditive`` (bool). Doubles whose singles
    are missing are skipped.
    """
    values = dense(adata.X if layer is None else adata.layers[layer])
    values = log1p_cp10k(values) if log_normalize else np.asarray(values, dtype=np.float64)
    labels = adata.obs[PERTURBATION_KEY].astype(str).to_numpy()
    stats = {}
    for label in np.unique(labels):
        cells = values[labels == label].astype(np.float64)
        stats[label] = (cells.mean(axis=0), cells.var(axis=0, ddof=1) / cells.shape[0])
    rows = {}
    for label in stats:
        genes = parse_label(label, control)
        if len(genes) != 2 or any(g not in stats for g in genes) or control not in stats:
            continue
        (m0, v0), (ma, va), (mb, vb), (mab, vab) = (
            stats[control],
            stats[genes[0]],
            stats[genes[1]],
            stats[label],
        )
        error = mab - (ma + mb - m0)
        z = error / np.sqrt(v0 + va + vb + vab + 1e-12)
        rows[label] = {
            "max_abs_z": float(np.abs(z).max()),
            "max_abs_error": float(np.abs(error).max()),
            "nonadditive": bool(np.abs(z).max() > z_threshold),
        }
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["max_abs_z", "max_abs_error", "nonadditive"]
    )


@_single_threaded_blas
def screen(
    n_genes: int = 100,
    n_perturbed: int = 25,
    n_doubles: int = 40,
    cells_per_condition: int = 250,
    control_cells: int | None = None,
    observation: str = "nb",
    mean_library_size: float = 3000.0,
    knockdown_fraction: float = 0.7,
    seed: int = 0,
) -> AnnData:
    """A nonlinear Perturb-seq screen with known ground truth (raw counts, unprepared).

    **Latent dynamics.** Each cell has a latent log-expression state ``x ∈ R^d`` following the
    SDE ``dx = f(x) dt + σ dB`` with ``σ = 0.5`` and the drift of :class:`GeneNetwork`,

        ``f_j(x) = γ_j (ρ_j log(A_j(y) R_j(y)) − x_j) + c_j``,   ``y = exp(x)``,

    where ``γ_j ~ U(1, 1.5)`` is the self-decay, ``A_j`` a saturating (Michaelis–Menten)
    activation with a basal share ``b_j ~ U(0.05, 0.2)``, ``R_j`` a saturating leaky repression
    (floor ``ℓ_j ~ U(0.05, 0.2)``) and ``c_j`` the perturbation shift. The network is sparse and
    directed: 30 % of the genes are regulators; 40 % of all genes are AND targets of two
    uniformly chosen regulators (``A_j = b_j + (1 − b_j) g_p g_q``, ``g = y / (h + y)``); every
    other gene has ``1 + Poisson(1)`` regulators (hub-biased choice), each activating
    (probability 0.6, weights sharing ``1 − b_j``) or repressing (weights ``U(1, 3)``). Each
    regulator's half-saturation ``h_i`` is ``U(0.5, 1)`` times its control level, so every
    regulator works in the responsive part of its curve. The drift is a contraction (see
    :class:`GeneNetwork`), so each condition has one fixed point and one stationary law.

    **Why doubles are non-additive.** Production saturates: knocking down both inputs of an AND
    target, or both activators of a target, drives it to its basal floor, so the double moves it
    much less than the sum of the singles in log space (and more for redundant activators),
    while an activation runs into the ceiling ``g → 1``.

    **Perturbations.** The perturbed genes are regulators. Each is knocked down (probability
    ``knockdown_fraction``; the shift ``c_j = −γ_j·U(2, 3)`` lowers its log expression by about
    2–3, an 87–95 % knock-down) or activated (``c_j = +γ_j·U(1, 2)``). Every perturbed gene has a
    single; of the ``n_doubles`` doubles, half are the pairs whose deterministic fixed point is
    least additive (as combinatorial screens enrich for pairs expected to interact) and half are
    random pairs. A double adds both shifts.

    **Sampling.** For each condition the deterministic fixed point is found first; then one
    independent Euler–Maruyama chain per cell (``dt = 0.1``, float32) starts there, spread by
    each gene's own stationary standard deviation, and runs 50 steps (5 time units, several
    relaxation times ``1/γ``) of burn-in; its final state is the cell.

    **Counts.** Expression shares are ``softmax(μ + x)``; ``μ`` is chosen so that the control
    log-abundances are ``N(0, 0.7²)`` clipped to ±2 (every gene is detected in most cells). Each
    cell's library size is log-normal (mean ``mean_library_size``, log-sd 0.35); counts are
    negative binomial (``"nb"``, dispersion ``θ_g ~ U(3, 10)``) or zero-inflated Poisson
    (``"zip"``, zero-inflation ``π_g ~ U(0.02, 0.15)``) around share × library size.

    **Non-additivity, measured** (stored in ``uns["simulation"]["additivity"]``; computed by
    :func:`additivity_report` on log1p CP10k means, a double being non-additive when some gene
    misses the additive prediction by more than 5 standard errors of the sampling noise): with
    the default settings (``seed=0``, the embedded ``toy_screen``) 13 of the 40 doubles (32.5 %)
    are non-additive; on the latent states themselves 22 of 40 (55 %) are.

    Parameters
    ----------
    n_genes
        Number of genes ``d`` (>= 4), named ``G001``, ``G002``, ...
    n_perturbed
        Perturbed genes (each has a single), at most 30 % of ``n_genes`` (the regulators).
    n_doubles
        Number of doubles, at most ``n_perturbed (n_perturbed − 1) / 2``.
    cells_per_condition
        Cells of each perturbed condition.
    control_cells
        Control cells (default ``2 · cells_per_condition``).
    observation
        ``"nb"`` (negative binomial) or ``"zip"`` (zero-inflated Poisson).
    mean_library_size
        Mean total counts per cell over the simulated genes.
    knockdown_fraction
        Probability that a perturbed gene is knocked down rather than activated.
    seed
        Non-negative integer; the same seed gives the same screen.

    Returns
    -------
    AnnData ``[cells, n_genes]`` with

    - ``X``: raw integer counts (float32, dense); ``obsm["latent"]``: the latent states ``x``;
    - ``obs["perturbation"]``: ``"ctrl"``, ``"G004"``, ``"G004+G017"``, ...;
    - ``varp["causal_matrix"]``: the Jacobian of the drift at the control fixed point,
      transposed (row = source, column = target; diagonal = self-decay terms);
    - ``uns["simulation"]``: ``kind``, ``network`` (W), ``graph`` (``W != 0``), ``decay``,
      ``saturation``, ``offset``, ``noise``, ``shifts`` (``{"u": [d] shift vector, "targets",
      "mode"}``), ``jacobian`` (``J[j, i] = ∂f_j/∂x_i`` at the control fixed point),
      ``fixed_points`` (label → deterministic fixed point), ``latent_means`` (label → mean
      latent state), ``baseline_log_abundance``, ``observation``, ``dispersion`` or
      ``zero_inflation``, ``mean_library_size``, ``library_size_log_sd``, ``dt``,
      ``burn_in_steps``, ``seed``, ``additivity`` (``fraction``, ``n_nonadditive``,
      ``n_doubles``, ``z_threshold``, ``nonadditive_labels``, ``latent_fraction``).

    There is no ``uns["lcdiff"]``: the result is a raw screen; run ``lc.pp.prepare`` on it.
    After gene selection ``varp`` follows the kept genes, while the matrices in
    ``uns["simulation"]`` keep the full gene order of ``uns["simulation"]["genes"]``.

    Raises
    ------
    ConfigError
        For out-of-range sizes, an unknown observation model or a bad seed.
    """
    n_genes = _check_int("n_genes", n_genes, 4)
    n_perturbed = _check_int("n_perturbed", n_perturbed, 1)
    n_doubles = _check_int("n_doubles", n_doubles, 0)
    cells_per_condition = _check_int("cells_per_condition", cells_per_condition, 1)
    control_cells = 2 * cells_per_condition if control_cells is None else control_cells
    control_cells = _check_int("control_cells", control_cells, 1)
    seed = _check_int("seed", seed, 0)
    n_regulators = max(int(round(REGULATOR_FRACTION * n_genes)), 2)
    if n_perturbed > n_regulators:
        raise ConfigError(
            f"n_perturbed ({n_perturbed}) exceeds the {n_regulators} regulators of a "
            f"{n_genes}-gene screen (30 %); lower n_perturbed or raise n_genes."
        )
    max_doubles = n_perturbed * (n_perturbed - 1) // 2
    if n_doubles > max_doubles:
        raise ConfigError(
            f"n_doubles ({n_doubles}) exceeds the {max_doubles} pairs of {n_perturbed} perturbed "
            "genes; lower n_doubles or raise n_perturbed."
        )
    if observation not in OBSERVATIONS:
        raise ConfigError(
            f"Unknown observation model {observation!r}; choose one of {OBSERVATIONS}."
        )
    if not (
        _is_real(mean_library_size) and np.isfinite(mean_library_size) and mean_library_size > 0
    ):
        raise ConfigError(f"mean_library_size must be positive; got {mean_library_size!r}.")
    if not (_is_real(knockdown_fraction) and 0.0 <= knockdown_fraction <= 1.0):
        raise ConfigError(f"knockdown_fraction must lie in [0, 1]; got {knockdown_fraction!r}.")

    param_rng = np.random.default_rng((0, 1, 2, seed))
    sample_rng = np.random.default_rng((1, 1, 2, seed))
    # Numbered like a list of synthetic symbols, starting at G001.
    genes = [f"G{i + 1:0{max(3, len(str(n_genes)))}d}" for i in range(n_genes)]

    network = _screen_network(n_genes, n_regulators, param_rng)
    decay = network.decay
    perturbed = np.sort(param_rng.permutation(network.regulators)[:n_perturbed])
    knockdown = param_rng.random(n_perturbed) < knockdown_fraction
    size = np.where(
        knockdown,
        -param_rng.uniform(*KNOCKDOWN_RANGE, size=n_perturbed),
        param_rng.uniform(*ACTIVATION_RANGE, size=n_perturbed),
    )
    shift_u = np.zeros(n_genes)
    shift_u[perturbed] = decay[perturbed] * size
    doubles = _choose_doubles(perturbed, shift_u, network, n_doubles, param_rng)
    # Control log-abundance of each gene; the offset below removes the control fixed point, so
    # that every gene's control expression share is set here (and every gene is detected).
    control_log_abundance = np.clip(
        param_rng.normal(0.0, BASELINE_LOG_ABUNDANCE_SD, size=n_genes),
        -BASELINE_LOG_ABUNDANCE_CLIP,
        BASELINE_LOG_ABUNDANCE_CLIP,
    )
    if observation == "nb":
        noise_param = param_rng.uniform(*DISPERSION_RANGE, size=n_genes)
    else:
        noise_param = param_rng.uniform(*ZERO_INFLATION_RANGE, size=n_genes)

    target_sets = [()] + [(j,) for j in perturbed] + doubles
    labels = [format_label([genes[j] for j in ts], CONTROL) for ts in target_sets]
    shifts = np.zeros((len(target_sets), n_genes))
    for q, ts in enumerate(target_sets):
        shifts[q, list(ts)] = shift_u[list(ts)]
    fixed_points = network.fixed_points(shifts)
    log_abundance = control_log_abundance - fixed_points[0]

    n_cells = np.full(len(labels), cells_per_condition)
    n_cells[0] = control_cells
    condition_of_cell = np.repeat(np.arange(len(labels)), n_cells)
    latent = _euler_maruyama(
        fixed_points[condition_of_cell],
        shifts[condition_of_cell],
        network,
        sample_rng,
    )

    library_size = mean_library_size * np.exp(
        LIBRARY_SIZE_LOG_SD * sample_rng.standard_normal(latent.shape[0])
        - 0.5 * LIBRARY_SIZE_LOG_SD**2
    )
    counts = _sample_counts(
        log_abundance + latent, library_size, observation, noise_param, sample_rng
    )

    jacobian = network.jacobian(fixed_points[0])  # J[j, i] = ∂f_j / ∂x_i at control

    obs = pd.DataFrame(
        {
            PERTURBATION_KEY: pd.Categorical(
                np.asarray(labels)[condition_of_cell], categories=labels
            )
        },
        index=[f"cell{i:06d}" for i in range(latent.shape[0])],
    )
    adata = AnnData(X=counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=genes))
    adata.obsm["latent"] = latent.astype(np.float32)
    adata.varp["causal_matrix"] = jacobian.T.copy()

    report = additivity_report(adata, CONTROL)
    latent_report = _latent_additivity(adata, CONTROL)
    adata.uns["simulation"] = {
        "kind": SCREEN_KIND,
        "genes": np.asarray(genes, dtype=str),
        "network": network.signed_weights,
        "graph": (network.signed_weights != 0).astype(np.int8),
        **network.to_uns(),
        "noise": LATENT_NOISE,
        "shifts": {
            "u": shift_u,
            "targets": np.asarray([genes[j] for j in perturbed], dtype=str),
            "mode": np.where(knockdown, "knockdown", "activation").astype(str),
        },
        "jacobian": jacobian,
        "fixed_points": {label: fixed_points[q] for q, label in enumerate(labels)},
        "latent_means": {
            label: latent[condition_of_cell == q].mean(axis=0) for q, label in enumerate(labels)
        },
        "baseline_log_abundance": log_abundance,
        "observation": observation,
        ("dispersion" if observation == "nb" else "zero_inflation"): noise_param,
        "mean_library_size": float(mean_library_size),
        "library_size_log_sd": LIBRARY_SIZE_LOG_SD,
        "dt": EM_DT,
        "burn_in_steps": EM_BURN_IN_STEPS,
        "seed": seed,
        "additivity": {
            "fraction": float(report["nonadditive"].mean()) if len(report) else 0.0,
            "n_nonadditive": int(report["nonadditive"].sum()),
            "n_doubles": len(report),
            "z_threshold": NONADDITIVE_Z,
            "nonadditive_labels": np.asarray(report.index[report["nonadditive"]], dtype=str),
            "latent_fraction": (
                float(latent_report["nonadditive"].mean()) if len(latent_report) else 0.0
            ),
        },
    }
    return adata


def _latent_additivity(adata: AnnData, control: str) -> pd.DataFrame:
    """:func:`additivity_report` on the latent states (``obsm["latent"]``)."""
    view = AnnData(X=np.asarray(adata.obsm["latent"]), obs=adata.obs[[PERTURBATION_KEY]])
    return additivity_report(view, control, log_normalize=False)


def _euler_maruyama(x0, shift, network: GeneNetwork, rng) -> np.ndarray:
    """Final states ``[n, d]`` of independent Euler–Maruyama chains (float32 for speed)."""
    # Start at the fixed point plus the stationary spread of each gene on its own (σ² / 2γ), so
    # that the burn-in only has to build up the correlations the network induces.
    spread = LATENT_NOISE / np.sqrt(2.0 * network.decay)
    x = (x0 + spread * rng.standard_normal(x0.shape)).astype(np.float32)
    shift = shift.astype(np.float32)
    dt = np.float32(EM_DT)
    noise_scale = np.float32(LATENT_NOISE * np.sqrt(EM_DT))
    noise = np.empty_like(x)
    for _ in range(EM_BURN_IN_STEPS):
        step = network.drift(x, shift)
        step *= dt
        rng.standard_normal(out=noise, dtype=np.float32)
        noise *= noise_scale
        x += step
        x += noise
    return x.astype(np.float64)
