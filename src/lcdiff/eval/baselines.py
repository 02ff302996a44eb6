"""Reference models that every LCD result is measured against.

Each baseline follows the same two-step interface as :class:`lcdiff.LCD`::

    model = lc.baselines.get("additive").fit(screen, split)   # train on split.train only
    pred = model.predict(["A+B"], n_cells=1000, seed=0)        # AnnData like LCD.predict

``fit`` reads the *training* conditions of a prepared screen (``split.train``; every condition
when ``split`` is None). ``predict`` returns ``n_cells`` cells per queried label with
``obs["perturbation"]``, ``X`` = log1p CP10k (the evaluation scale of every method) and
``uns["lcdiff"]`` naming the method. None of these baselines produces counts, so there is no
``counts`` layer.

A baseline that cannot predict a label says why through :meth:`Baseline.cannot_predict`
(``None`` when it can); ``predict`` raises :class:`~lcdiff.errors.UnknownPerturbationError`
with that reason for such a label. The benchmark runner asks first and records the reason in
its table instead of silently dropping the condition.

Definitions (lcd-evaluation §5; c̄ = training control mean, μ_j = mean shift of the training
single-gene condition ``j`` relative to c̄, or the pooled-perturbed shift when ``j`` was never
perturbed alone):

========== ===========================================================================
control    random training control cells, the same law for every condition
pooled     random cells pooled from every training perturbation condition
additive   SALT: random control cells + Σ_{j∈T} μ_j
mean       random control cells + (centroid − c̄), centroid = mean of training condition means
linear     random control cells + b + G W p(T) (see :class:`LinearBaseline`)
peper      random control cells + Σ_j μ_j + g(Σ_j h(μ_j)), g and h small MLPs trained with Adam
========== ===========================================================================

Shift-based predictions are not clipped at zero: they live on the log1p scale exactly as the
reference adds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from lcdiff.data.labels import canonical_label, parse_label
from lcdiff.data.normalize import dense
from lcdiff.data.screen import PERTURBATION_KEY, control_label
from lcdiff.errors import (
    ConfigError,
    NotFittedError,
    SplitError,
    UnknownPerturbationError,
)
from lcdiff.peers.adapters import CpaAdapter, GearsAdapter

X_SCALE_TEXT = (
    "log1p of counts per 10k (library size over the modelled genes); baseline predictions are "
    "observed cells, shifted ones (additive, mean, linear, peper) may be slightly negative"
)


# --- training data of one split ---------------------------------------------------------------
@dataclass(frozen=True)
class TrainingData:
    """The training conditions of a prepared screen, on the log1p CP10k scale.

    Attributes
    ----------
    genes
        Gene names (columns), ``[d]``.
    control
        The control label.
    control_cells
        ``[n_ctrl, d]`` training control cells.
    cells
        Label → ``[n_e, d]`` cells of each training *perturbation* condition (control excluded).
    """

    genes: tuple[str, ...]
    control: str
    control_cells: np.ndarray
    cells: dict[str, np.ndarray]

    @property
    def control_mean(self) -> np.ndarray:
        """``[d]`` mean of the training control cells (c̄)."""
        return self.control_cells.mean(axis=0)

    @property
    def labels(self) -> list[str]:
        """Training perturbation labels (control excluded)."""
        return list(self.cells)

    def condition_mean(self, label: str) -> np.ndarray:
        """``[d]`` mean of one training perturbation condition."""
        return self.cells[label].mean(axis=0)

    @property
    def centroid(self) -> np.ndarray:
        """``[d]`` average of the training perturbation means, each condition weighted equally."""
        if not self.cells:
            return self.control_mean
        return np.mean([self.condition_mean(lab) for lab in self.cells], axis=0)

    @property
    def pooled_cells(self) -> np.ndarray:
        """``[n, d]`` all training perturbation cells, control excluded."""
        if not self.cells:
            return self.control_cells
        return np.concatenate(list(self.cells.values()), axis=0)


def training_data(screen: AnnData, split=None) -> TrainingData:
    """Collect the training conditions of ``split`` (all conditions when None) from a screen.

    Parameters
    ----------
    screen
        A prepared screen (``X`` = log1p CP10k, ``obs["perturbation"]``, ``uns["lcdiff"]``).
    split
        An object with a ``train`` sequence of labels (``lcdiff.data.splits.Split``) or None.

    Raises
    ------
    NotPreparedError
        If ``screen`` is not prepared.
    SplitError
        If the split's training set lacks the control or names conditions absent from the screen.
    """
    control = control_label(screen)
    labels = screen.obs[PERTURBATION_KEY].astype(str).to_numpy()
    present = set(labels)
    if split is None:
        train = sorted(present)
    else:
        train = [canonical_label(str(lab), control) for lab in split.train]
        missing = sorted(set(train) - present)
        if missing:
            raise SplitError(
                f"The split's training conditions {missing[:5]} have no cells in this screen; "
                "build the split from the same screen (lc.pp.split(screen, ...))."
            )
    if control not in train:
        raise SplitError(
            f"The training set has no control cells (label {control!r}); every baseline needs "
            "the training control as its reference. Include the control in split.train."
        )
    x = screen.X
    control_cells = dense(x[labels == control]).astype(np.float32)
    cells = {
        lab: dense(x[labels == lab]).astype(np.float32)
        for lab in sorted(set(train) - {control}, key=lambda s: (len(parse_label(s, control)), s))
    }
    return TrainingData(tuple(map(str, screen.var_names)), control, control_cells, cells)


# --- shared helpers ---------------------------------------------------------------------------
def sample_rows(cells: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` distinct random rows of ``cells`` (the reference: permute, take the first n).

    A group with fewer than ``n`` cells gives all of them, never duplicates: a repeated cell sits
    at distance 0 from its copy, which inflates the unbiased MMD and energy distance of every
    method built on resampled cells (control, additive, PEPER, linear).
    """
    return cells[rng.permutation(cells.shape[0])[:n]]


def prediction_anndata(
    blocks: Sequence[tuple[str, np.ndarray]],
    genes: Sequence[str],
    method: str,
    seed: int,
    type_name: str | None = None,
    **extra,
) -> AnnData:
    """Assemble per-label predicted cells into the AnnData that ``LCD.predict`` also returns.

    Parameters
    ----------
    blocks
        ``(label, [n_cells, d] log1p CP10k cells)`` per predicted condition.
    genes
        Gene names, ``[d]``.
    method
        Registered method name, stored in ``uns["lcdiff"]["method"]``.
    seed
        Sampling seed, stored in ``uns["lcdiff"]["seed"]``.
    """
    from lcdiff import __version__

    d = len(genes)
    x = (
        np.concatenate([cells for _, cells in blocks], axis=0).astype(np.float32)
        if blocks
        else np.zeros((0, d), dtype=np.float32)
    )
    labels = (
        np.concatenate([np.full(cells.shape[0], lab, dtype=object) for lab, cells in blocks])
        if blocks
        else np.zeros(0, dtype=object)
    )
    order = list(dict.fromkeys(lab for lab, _ in blocks))
    obs = pd.DataFrame(
        {PERTURBATION_KEY: pd.Categorical(labels, categories=order)},
        index=[f"{method}_{i}" for i in range(x.shape[0])],
    )
    adata = AnnData(X=x, obs=obs, var=pd.DataFrame(index=list(genes)))
    adata.uns["lcdiff"] = {
        "kind": "prediction",
        "model": type_name or method,
        "method": method,
        "version": __version__,
        "seed": int(seed),
        "n_cells": int(x.shape[0] // max(len(order), 1)),
        "perturbation_key": PERTURBATION_KEY,
        "layers": {"X": X_SCALE_TEXT},
        **extra,
    }
    return adata


def _as_label_list(labels: str | Iterable[str], control: str) -> list[str]:
    if isinstance(labels, str):
        labels = [labels]
    return [canonical_label(str(lab), control) for lab in labels]


# --- base class -------------------------------------------------------------------------------
class Baseline:
    """Common machinery: fitted state, label handling and the prediction AnnData.

    Subclasses implement ``_fit(data)`` and ``_sample(label, n_cells, rng) -> [n_cells, d]`` and
    may override ``cannot_predict``.
    """

    name: str = ""
    display_name: str = ""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.data: TrainingData | None = None

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({state})"

    @property
    def is_fitted(self) -> bool:
        return self.data is not None

    @property
    def genes(self) -> list[str]:
        return list(self._fitted().genes)

    @property
    def control(self) -> str:
        return self._fitted().control

    def fit(self, screen: AnnData, split=None) -> Baseline:
        """Fit on the training conditions of ``split`` (every condition when None).

        Parameters
        ----------
        screen
            A prepared screen.
        split
            A :class:`lcdiff.data.splits.Split` (only ``split.train`` is read) or None.

        Returns
        -------
        self
        """
        data = training_data(screen, split)
        self._fit(data)
        self.data = data
        return self

    def cannot_predict(self, label: str) -> str | None:
        """Why ``label`` cannot be predicted, or None when it can."""
        self._fitted()
        return None

    def predict(self, labels: str | Iterable[str], n_cells: int = 1000, seed: int = 0) -> AnnData:
        """Sample ``n_cells`` cells for each label.

        Parameters
        ----------
        labels
            One label or a list (``"A"``, ``"A+B"``, the control label).
        n_cells
            Cells per label.
        seed
            Sampling seed (predictions are reproducible given it).

        Returns
        -------
        AnnData ``[len(labels) * n_cells, d]`` with ``obs["perturbation"]`` and ``X`` on the
        log1p CP10k scale.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        UnknownPerturbationError
            For a label this method cannot predict (the message says why).
        """
        data = self._fitted()
        if int(n_cells) < 1:
            raise ConfigError(f"n_cells must be at least 1, got {n_cells}.")
        queried = _as_label_list(labels, data.control)
        for lab in queried:
            reason = self.cannot_predict(lab)
            if reason is not None:
                raise UnknownPerturbationError(f"{self.name} cannot predict {lab!r}: {reason}")
        rng = np.random.default_rng(seed)
        blocks = [(lab, self._sample(lab, int(n_cells), rng)) for lab in queried]
        return prediction_anndata(blocks, data.genes, self.name, seed, **self._uns_extra(queried))

    # -- to override --
    def _fit(self, data: TrainingData) -> None:
        """Learn from the training data (store what ``_sample`` needs on ``self``)."""

    def _sample(self, label: str, n_cells: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _uns_extra(self, labels: list[str]) -> dict:
        return {}

    def _fitted(self) -> TrainingData:
        if self.data is None:
            raise NotFittedError(
                f"The {self.name!r} baseline is not fitted; call .fit(screen, split) first."
            )
        return self.data


# --- distribution baselines -------------------------------------------------------------------
class ControlBaseline(Baseline):
    """Random training control cells for every condition (the "no effect" prediction)."""

    name = "control"
    display_name = "Control"

    def _sample(self, label, n_cells, rng):
        return sample_rows(self._fitted().control_cells, n_cells, rng)


class PooledBaseline(Baseline):
    """Random cells pooled from every training perturbation condition (control excluded)."""

    name = "pooled"
    display_name = "All Perturb."

    def _fit(self, data):
        if not data.cells:
            raise SplitError(
                "The pooled baseline needs at least one training perturbation condition; the "
                "split's training set holds only control cells."
            )

    def _sample(self, label, n_cells, rng):
        return sample_rows(self._fitted().pooled_cells, n_cells, rng)


class ShiftBaseline(Baseline):
    """Control cells plus a per-label mean shift: subclasses define ``shift(label) -> [d]``."""

    def shift(self, label: str) -> np.ndarray:
        raise NotImplementedError

    def _sample(self, label, n_cells, rng):
        data = self._fitted()
        return sample_rows(data.control_cells, n_cells, rng) + self.shift(label)[None, :]


def single_gene_shifts(data: TrainingData) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """SALT's per-gene shifts μ_j and the fallback shift.

    Returns
    -------
    shifts
        Gene → ``[d]`` (mean of the training single-gene condition of that gene) − c̄.
    fallback
        ``[d]`` (mean of all pooled training perturbation cells) − c̄, used for genes never
        perturbed alone (lcd-evaluation §5).
    """
    c_bar = data.control_mean
    shifts = {}
    for lab, cells in data.cells.items():
        targets = parse_label(lab, data.control)
        if len(targets) == 1:
            shifts[targets[0]] = cells.mean(axis=0) - c_bar
    fallback = data.pooled_cells.mean(axis=0) - c_bar
    return shifts, fallback


class AdditiveBaseline(ShiftBaseline):
    """SALT: control cells + the sum of single-gene mean shifts of the targets.

    A target never perturbed alone in training gets the pooled-perturbed shift (as the
    reference does); ``uns["lcdiff"]["fallback_genes"]`` lists those genes per label.
    """

    name = "additive"
    display_name = "SALT"

    def _fit(self, data):
        self.gene_shifts, self.fallback_shift = single_gene_shifts(data)

    def fallback_genes(self, label: str) -> list[str]:
        """Targets of ``label`` never perturbed alone in training (they get the fallback)."""
        targets = parse_label(label, self._fitted().control)
        return [g for g in targets if g not in self.gene_shifts]

    def shift(self, label):
        targets = parse_label(label, self._fitted().control)
        total = np.zeros(self.fallback_shift.shape, dtype=np.float64)
        for gene in targets:
            total += self.gene_shifts.get(gene, self.fallback_shift)
        return total

    def _uns_extra(self, labels):
        found = {lab: self.fallback_genes(lab) for lab in labels}
        return {"fallback_genes": {lab: genes for lab, genes in found.items() if genes}}


class MeanBaseline(ShiftBaseline):
    """Control cells shifted to the mean of the training perturbations (same for every label)."""

    name = "mean"
    display_name = "Mean"

    def _fit(self, data):
        self._shift = data.centroid - data.control_mean

    def shift(self, label):
        return self._shift


LINEAR_GRID_COMPONENTS: tuple[int, ...] = (5, 10, 20, 40, 80)
LINEAR_GRID_RIDGE: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)


def fit_bilinear(y: np.ndarray, target_rows: Sequence[Sequence[int]], k: int, ridge: float):
    """Fit the low-rank bilinear model of :class:`LinearBaseline` (pure function).

    Parameters
    ----------
    y
        ``[d, E]`` pseudobulk changes (condition mean − control mean), one column per condition.
    target_rows
        For each of the E conditions, the gene (row) indices of its targets.
    k
        Number of components K (capped at the rank of the centred changes).
    ridge
        Relative ridge penalty λ.

    Returns
    -------
    (offset [d], G [d, K], W [K, K])
    """
    offset = y.mean(axis=1)
    yc = y - offset[:, None]
    u, s, _ = np.linalg.svd(yc, full_matrices=False)
    rank = int((s > 1e-10 * max(float(s[0]) if s.size else 0.0, 1e-300)).sum())
    k = max(1, min(int(k), rank if rank else 1))
    g = u[:, :k]
    p = np.stack([g[list(rows)].sum(axis=0) for rows in target_rows])  # [E, K]
    ptp = p.T @ p
    lam_p = ridge * max(float(np.mean(np.diag(ptp))), 1e-12)
    left = np.linalg.solve(g.T @ g + ridge * np.eye(k), g.T @ yc)  # [K, E]
    w = np.linalg.solve(ptp + lam_p * np.eye(k), (left @ p).T).T  # [K, K]
    return offset, g, w


class LinearBaseline(ShiftBaseline):
    """Low-rank bilinear model of pseudobulk changes, after Ahlmann-Eltze et al. (2025).

    With Y the ``[d, E]`` matrix of training pseudobulk changes (condition mean − c̄, one column
    per training perturbation condition, singles and combinations):

    * b = row mean of Y (``[d]``); Yc = Y − b 1ᵀ;
    * G = top-K left singular vectors of Yc (``[d, K]``): a K-dimensional embedding of every
      *gene* (its row of G);
    * perturbation embedding of a condition with targets T: p(T) = Σ_{j∈T} G[j] (``[K]``), so
      combinations are sums of gene embeddings and any modelled gene has an embedding;
    * P = ``[E, K]`` stacked p(T_e); W = argmin ‖Yc − G W Pᵀ‖² + λ‖W‖² solved as the two-sided
      ridge W = (GᵀG + λI)⁻¹ Gᵀ Yc P (PᵀP + λ_P I)⁻¹, with λ_P = λ · mean(diag PᵀP) so that the
      penalty does not depend on the scale of the embeddings (GᵀG = I);
    * predicted shift b + G W p(T) is added to random training control cells.

    With ``n_components="auto"`` / ``ridge="auto"`` (default) K and λ are chosen on the training
    data only: 20 % of the training combinations (or of all training perturbations when there
    are fewer than 5 combinations), drawn with ``seed``, are held out, every pair of the grids
    ``LINEAR_GRID_COMPONENTS`` × ``LINEAR_GRID_RIDGE`` is fitted on the rest and scored by the
    RMSE of the held-out mean changes; the best pair is refitted on all training conditions
    (recorded in ``selected`` and in ``uns["lcdiff"]["linear"]``). Test conditions are never
    looked at.

    A label with a target outside the modelled genes has no embedding and cannot be predicted.

    Parameters
    ----------
    n_components
        K (capped at the rank of Yc), or ``"auto"``.
    ridge
        λ (relative, see above), or ``"auto"``.
    """

    name = "linear"
    display_name = "Linear"

    def __init__(
        self, n_components: int | str = "auto", ridge: float | str = "auto", seed: int = 0
    ) -> None:
        super().__init__(seed)
        bad_k = n_components != "auto" and (isinstance(n_components, str) or n_components < 1)
        bad_r = ridge != "auto" and (isinstance(ridge, str) or ridge < 0)
        if bad_k or bad_r:
            raise ConfigError(
                "LinearBaseline needs n_components >= 1 (or 'auto') and ridge >= 0 (or 'auto'), "
                f"got {n_components!r}, {ridge!r}."
            )
        self.n_components = n_components
        self.ridge = ridge
        self.selected: dict = {}

    def _fit(self, data):
        if not data.cells:
            raise SplitError("The linear baseline needs training perturbation conditions.")
        self._index = {g: i for i, g in enumerate(data.genes)}
        c_bar = data.control_mean.astype(np.float64)
        labels = data.labels
        y = np.stack([data.condition_mean(lab) - c_bar for lab in labels], axis=1)
        rows = [[self._index[g] for g in parse_label(lab, data.control)] for lab in labels]
        ks = LINEAR_GRID_COMPONENTS if self.n_components == "auto" else (self.n_components,)
        ridges = LINEAR_GRID_RIDGE if self.ridge == "auto" else (self.ridge,)
        k, ridge, score = self._select(y, rows, labels, data.control, ks, ridges)
        self.offset, self.gene_embedding, self.weights = fit_bilinear(y, rows, k, ridge)
        self.selected = {
            "n_components": int(self.gene_embedding.shape[1]),
            "ridge": float(ridge),
            "validation_rmse": float("nan") if score is None else score,
        }

    def _select(self, y, rows, labels, control, ks, ridges):
        """(K, λ, validation RMSE or None) by a held-out part of the training conditions."""
        if len(ks) == 1 and len(ridges) == 1:
            return ks[0], ridges[0], None
        combos = [i for i, lab in enumerate(labels) if len(parse_label(lab, control)) > 1]
        pool = combos if len(combos) >= 5 else list(range(len(labels)))
        if len(labels) < 4 or len(pool) < 2:
            return min(10, max(ks)), 0.1, None  # too few conditions to validate
        rng = np.random.default_rng(self.seed)
        held = set(rng.permutation(pool)[: max(1, round(0.2 * len(pool)))].tolist())
        fit_idx = [i for i in range(len(labels)) if i not in held]
        val_idx = sorted(held)
        best = (np.inf, ks[0], ridges[0])
        for k in ks:
            for ridge in ridges:
                offset, g, w = fit_bilinear(y[:, fit_idx], [rows[i] for i in fit_idx], k, ridge)
                pred = np.stack(
                    [offset + g @ (w @ g[rows[i]].sum(axis=0)) for i in val_idx], axis=1
                )
                rmse = float(np.sqrt(np.mean((pred - y[:, val_idx]) ** 2)))
                if rmse < best[0]:
                    best = (rmse, k, ridge)
        return best[1], best[2], best[0]

    def embed(self, label: str, control: str | None = None) -> np.ndarray:
        """``[K]`` perturbation embedding p(T) = Σ_{j∈T} G[j]."""
        control = self._fitted().control if control is None else control
        rows = [self._index[g] for g in parse_label(label, control)]
        return self.gene_embedding[rows].sum(axis=0)

    def cannot_predict(self, label):
        data = self._fitted()
        missing = [g for g in parse_label(label, data.control) if g not in self._index]
        if missing:
            return (
                f"target gene(s) {missing} are not among the modelled genes, so they have no "
                "embedding in the linear model"
            )
        return None

    def shift(self, label):
        return self.offset + self.gene_embedding @ (self.weights @ self.embed(label))

    def _uns_extra(self, labels):
        return {"linear": dict(self.selected)}


# --- PEPER ------------------------------------------------------------------------------------
PEPER_PRESETS: dict[str, dict] = {
    # Small enough for a laptop test run; the structure is the paper's.
    "default": {
        "hidden": 128,
        "layers": 1,
        "steps": 2000,
        "lr": 1e-3,
        "weight_decay": 3e-3,
        "batch_size": 256,
    },
    # lcd-evaluation §5 (Norman selection: wd 0.003, hidden 1024, 2 layers; 30k steps, lr 1e-4).
    "paper": {
        "hidden": 1024,
        "layers": 2,
        "steps": 30000,
        "lr": 1e-4,
        "weight_decay": 3e-3,
        "batch_size": 256,
    },
}


class PeperBaseline(ShiftBaseline):
    """PEPER: SALT plus a learned correction of the summed single-gene shifts.

    mean(T) = c̄ + Σ_{j∈T} μ_j + g(Σ_{j∈T} h(μ_j)), with μ_j the SALT shifts (pooled fallback for
    genes never perturbed alone), h = ``layers`` × (Linear + ReLU) d → H and g = ``layers`` ×
    (Linear + ReLU) followed by Linear H → d. Trained with Adam (decoupled weight decay): each
    step draws one training condition (control included) and ``batch_size`` of its cells, loss
    √(Σ_cells Σ_genes (mean − x)²). The last layer of g starts at zero so training starts from
    SALT. Prediction adds the predicted shift to random control cells.

    Parameters
    ----------
    preset
        ``"default"`` (small, fast) or ``"paper"`` (lcd-evaluation §5).
    **overrides
        Any of ``hidden``, ``layers``, ``steps``, ``lr``, ``weight_decay``, ``batch_size``.
    """

    name = "peper"
    display_name = "PEPER"

    def __init__(self, preset: str = "default", seed: int = 0, **overrides) -> None:
        super().__init__(seed)
        if preset not in PEPER_PRESETS:
            raise ConfigError(
                f"Unknown PEPER preset {preset!r}; choose from {list(PEPER_PRESETS)}."
            )
        config = dict(PEPER_PRESETS[preset])
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            raise ConfigError(f"Unknown PEPER setting(s) {unknown}; known: {sorted(config)}.")
        config.update(overrides)
        if config["layers"] < 1 or config["hidden"] < 1 or config["steps"] < 0:
            raise ConfigError(f"PEPER needs layers >= 1, hidden >= 1, steps >= 0; got {config}.")
        self.config = config
        self.loss_history: np.ndarray | None = None

    def _fit(self, data):
        import jax
        import jax.numpy as jnp
        import optax

        self.gene_shifts, self.fallback_shift = single_gene_shifts(data)
        # Training conditions: control first (no targets), then every perturbation condition.
        env_labels = [data.control, *data.labels]
        vocab = sorted({g for lab in data.labels for g in parse_label(lab, data.control)})
        mu = (
            np.stack([self._gene_shift(g) for g in vocab])
            if vocab
            else np.zeros((0, len(data.genes)))
        )
        membership = np.zeros((len(env_labels), len(vocab)), dtype=np.float32)
        col = {g: i for i, g in enumerate(vocab)}
        for e, lab in enumerate(env_labels):
            for g in parse_label(lab, data.control):
                membership[e, col[g]] = 1.0
        cells = [data.control_cells] + [data.cells[lab] for lab in data.labels]
        counts = np.array([c.shape[0] for c in cells])
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        all_cells = jnp.asarray(np.concatenate(cells, axis=0), dtype=jnp.float32)
        c_bar = jnp.asarray(data.control_mean, dtype=jnp.float32)
        mu_j = jnp.asarray(mu, dtype=jnp.float32)
        member = jnp.asarray(membership)
        salt = member @ mu_j  # [E, d] Σ_j μ_j per training condition

        cfg = self.config
        params = _init_peper(
            jax.random.PRNGKey(self.seed), len(data.genes), cfg["hidden"], cfg["layers"]
        )
        optimizer = optax.adamw(cfg["lr"], weight_decay=cfg["weight_decay"])
        opt_state = optimizer.init(params)
        counts_j, offsets_j = jnp.asarray(counts), jnp.asarray(offsets)
        n_env, batch = len(env_labels), int(cfg["batch_size"])

        def loss_fn(params, e, x):
            agg = member[e] @ _mlp_relu(params["h"], mu_j)  # Σ_j h(μ_j), [H]
            mean = c_bar + salt[e] + _g_forward(params["g"], agg)
            return jnp.sqrt(jnp.sum((mean[None, :] - x) ** 2))

        def step(carry, key):
            params, opt_state = carry
            k_env, k_cells = jax.random.split(key)
            e = jax.random.randint(k_env, (), 0, n_env)
            pick = jax.random.randint(k_cells, (batch,), 0, counts_j[e])
            x = all_cells[offsets_j[e] + pick]
            loss, grads = jax.value_and_grad(loss_fn)(params, e, x)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        run = jax.jit(lambda carry, keys: jax.lax.scan(step, carry, keys))
        keys = jax.random.split(jax.random.PRNGKey(self.seed + 1), max(int(cfg["steps"]), 0))
        if keys.shape[0]:
            (params, opt_state), losses = run((params, opt_state), keys)
            losses = np.asarray(losses)
            if not np.all(np.isfinite(losses)):
                from lcdiff.errors import TrainingDivergedError

                bad = int(np.argmax(~np.isfinite(losses)))
                raise TrainingDivergedError(
                    f"PEPER training loss became non-finite at step {bad}; lower lr "
                    f"(now {cfg['lr']})."
                )
            self.loss_history = losses
        self.params = jax.tree_util.tree_map(np.asarray, params)

    def _gene_shift(self, gene: str) -> np.ndarray:
        return self.gene_shifts.get(gene, self.fallback_shift)

    def shift(self, label):
        data = self._fitted()
        targets = parse_label(label, data.control)
        hidden = self.config["hidden"]
        if targets:
            mu = np.stack([self._gene_shift(g) for g in targets]).astype(np.float32)
            salt = mu.sum(axis=0)
            agg = np.asarray(_mlp_relu(self.params["h"], mu)).sum(axis=0)
        else:
            salt = np.zeros(len(data.genes), dtype=np.float32)
            agg = np.zeros(hidden, dtype=np.float32)
        return salt + np.asarray(_g_forward(self.params["g"], agg))


def _dense_init(key, n_in: int, n_out: int, zero: bool = False) -> dict:
    import jax
    import jax.numpy as jnp

    if zero:
        return {"w": jnp.zeros((n_in, n_out)), "b": jnp.zeros(n_out)}
    scale = jnp.sqrt(2.0 / n_in)  # He initialisation for ReLU layers
    return {"w": jax.random.normal(key, (n_in, n_out)) * scale, "b": jnp.zeros(n_out)}


def _init_peper(key, d: int, hidden: int, layers: int) -> dict:
    import jax

    keys = jax.random.split(key, 2 * layers + 1)
    h = [_dense_init(keys[i], d if i == 0 else hidden, hidden) for i in range(layers)]
    g = [_dense_init(keys[layers + i], hidden, hidden) for i in range(layers)]
    g.append(_dense_init(keys[-1], hidden, d, zero=True))
    return {"h": h, "g": g}


def _mlp_relu(layers, x):
    import jax.numpy as jnp

    for layer in layers:
        x = jnp.maximum(x @ layer["w"] + layer["b"], 0.0)
    return x


def _g_forward(layers, x):
    x = _mlp_relu(layers[:-1], x)
    return x @ layers[-1]["w"] + layers[-1]["b"]


# --- LCD as a benchmark method ----------------------------------------------------------------
class LCDMethod:
    """:class:`lcdiff.LCD` behind the baseline interface (trains on ``split.train`` only).

    Parameters
    ----------
    preset
        LCD preset (``"auto"``, the default, ``"tiny"``, ``"fast"``, ``"paper"``, ...).
    seed
        Model seed.
    progress
        Show LCD's own training progress bars.
    **overrides
        Passed to ``lc.LCD`` (hyperparameter overrides).
    """

    name = "lcd"
    display_name = "LCD"

    def __init__(self, preset: str = "auto", seed: int = 0, progress: bool = False, **overrides):
        self.preset = preset
        self.seed = int(seed)
        self.progress = progress
        self.overrides = overrides
        self.model = None

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def fit(self, screen: AnnData, split=None) -> LCDMethod:
        from lcdiff.model.lcd import LCD

        train = screen if split is None else _subset_train(screen, split)
        self.model = LCD(train, preset=self.preset, seed=self.seed, **self.overrides)
        self.model.fit(progress=self.progress)
        return self

    def cannot_predict(self, label: str) -> str | None:
        model = self._fitted()
        genes = set(model.genes)
        missing = [g for g in parse_label(label, model.control) if g not in genes]
        if missing:
            return f"target gene(s) {missing} are not among the genes LCD models"
        return None

    def predict(self, labels, n_cells: int = 1000, seed: int = 0) -> AnnData:
        pred = self._fitted().predict(labels, n_cells=n_cells, seed=seed)
        pred.uns.setdefault("lcdiff", {})
        pred.uns["lcdiff"].setdefault("method", self.name)
        return pred

    def _fitted(self):
        if self.model is None:
            raise NotFittedError("The 'lcd' method is not fitted; call .fit(screen, split) first.")
        return self.model


def _subset_train(screen: AnnData, split) -> AnnData:
    if hasattr(split, "subset"):
        return split.subset(screen, "train")
    control = control_label(screen)
    train = {canonical_label(str(lab), control) for lab in split.train}
    keep = screen.obs[PERTURBATION_KEY].astype(str).isin(train).to_numpy()
    return screen[keep].copy()


# --- peers: GEARS and CPA, each in its own environment (lcdiff.peers) ---------------------
GearsBaseline = GearsAdapter
CpaBaseline = CpaAdapter


# --- registry ---------------------------------------------------------------------------------
METHODS: dict[str, type] = {
    "control": ControlBaseline,
    "pooled": PooledBaseline,
    "additive": AdditiveBaseline,
    "mean": MeanBaseline,
    "linear": LinearBaseline,
    "peper": PeperBaseline,
    "lcd": LCDMethod,
    "gears": GearsBaseline,
    "cpa": CpaBaseline,
}
ALIASES = {"ctrl": "control", "perturbed": "pooled", "salt": "additive"}


def get(name: str, **kwargs):
    """A new, unfitted method by registered name.

    Parameters
    ----------
    name
        One of ``control``, ``pooled``, ``additive``, ``mean``, ``linear``, ``peper``, ``lcd``,
        ``gears``, ``cpa`` (aliases: ``ctrl``, ``perturbed``, ``salt``).
    **kwargs
        Passed to the method's constructor (e.g. ``preset="tiny"`` for ``lcd``).

    Raises
    ------
    ConfigError
        For an unknown name.
    DependencyError
        For ``gears``/``cpa`` when their environments are not installed
        (``lcdiff peers install gears|cpa``).
    """
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in METHODS:
        raise ConfigError(
            f"Unknown method {name!r}; choose from {sorted(METHODS)} (aliases {sorted(ALIASES)})."
        )
    return METHODS[key](**kwargs)
