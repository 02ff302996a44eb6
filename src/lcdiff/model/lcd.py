"""The user-facing LCD model: fit on a prepared screen, predict any perturbation combination.

Pipeline of :meth:`LCD.fit` (reference ``lcd-model.md``):

1. stage A (:mod:`lcdiff.model.noise`): one ZIP generator per training condition, fitted to the
   raw counts; then ``n_states`` latent states drawn from each;
2. standardization (:mod:`lcdiff.model.standardize`): control mean, pooled std;
3. stage B (:mod:`lcdiff.model.dsm`, :mod:`lcdiff.model.score`): one score network for all
   conditions, trained by denoising score matching.

:meth:`LCD.predict` runs annealed Langevin dynamics (:mod:`lcdiff.model.sampler`), undoes the
standardization and decodes counts with the noise model. With ``noise_model=None`` stage A is
skipped and the score model trains on ``screen.X`` directly (for ``lc.simulate.linear_sde``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from anndata import AnnData

from lcdiff.data.labels import canonical_label, parse_label
from lcdiff.data.normalize import dense, log1p_cp10k
from lcdiff.data.screen import (
    condition_mask,
    conditions,
    control_label,
    screen_info,
    target_indices,
)
from lcdiff.errors import (
    ConfigError,
    ControlNotFoundError,
    InvalidCountsError,
    LcdiffWarning,
    MissingColumnError,
    ModelError,
    ModelFileError,
    NonFiniteOutputError,
    NotFittedError,
    UnknownPerturbationError,
)
from lcdiff.model import io as model_io
from lcdiff.model.config import AUTO_PRESET, NOISE_FIELDS, LCDConfig, make_config
from lcdiff.model.diagnostics import (
    failures,
    noise_check,
    sampler_check,
    score_check,
    summary_lines,
)
from lcdiff.model.dsm import score_optimizer
from lcdiff.model.noise import decode as zip_decode
from lcdiff.model.noise import (
    init_noise_state,
    make_noise_step,
    mc_log_marginal,
    sample_condition_states,
    state_floor,
    unit_scaling,
)
from lcdiff.model.sampler import annealed_langevin
from lcdiff.model.score import (
    condition_injections,
    init_score_params,
    level_embeddings,
    noise_levels,
    score_from_parts,
)
from lcdiff.model.sharding import device_mesh, put_replicated
from lcdiff.model.standardize import Standardizer
from lcdiff.model.streaming import (
    CellStates,
    GeneratorStates,
    fit_standardizer,
    make_stream_score_step,
    stream_data,
)
from lcdiff.model.train import StepCallback, run_stage

STAGE_A = "A (noise model)"
STAGE_B = "B (score model)"
CHECKPOINT_A = "stage_a.npz"
CHECKPOINT_B = "stage_b.npz"
CHECK_FOLD = 0xC4EC  # fold-in of the post-training checks' key (independent of training draws)


def _version() -> str:
    from lcdiff import __version__

    return __version__


def _warn_if_rank_limited(hidden: int, d: int) -> None:
    """Warn when the score network cannot represent a score in every gene direction.

    The network's output is ``u − σ·g`` with ``g = a W_out + b`` and ``W_out`` of shape
    ``[hidden, d]``: ``g`` always lies in a ``hidden``-dimensional subspace, so with fewer hidden
    units than genes the score in the remaining directions is the same for every condition and
    state (the skip connection's fixed prior). The reference sizes the network above the gene
    count (1024 hidden units for 1000 genes).
    """
    if hidden < d:
        effect = (
            f"the score network's output lies in a {hidden}-dimensional subspace, so in the "
            f"other {d - hidden} directions it gives every condition the same score."
        )
        warnings.warn(
            LcdiffWarning(
                f"score_hidden={hidden} is smaller than the number of genes ({d}): {effect} "
                "Use the Gaussian score head (score_head='gaussian', part of the default "
                f"preset 'auto'), score_hidden >= {d} (the paper uses 1024 for 1000 genes; "
                "stage B then costs more) or fewer genes (lc.pp.prepare(..., n_genes=...)).",
                cli=f"The score network is {hidden} units wide, fewer than the {d} genes: "
                f"{effect} Pass --set score_head=gaussian (part of --preset auto), --set "
                f"score_hidden={d} (stage B then costs more) or model fewer genes "
                f"(--n-genes {hidden}).",
            ),
            stacklevel=3,
        )


def _label_key(seed: int, label: str) -> jax.Array:
    """PRNG key of one label: independent of the other labels queried with it."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(label.encode()) & 0x7FFFFFFF)


@jax.jit
def _drift_batch(params, seen, targets, z, sigma, temb):
    inject = jax.tree.map(lambda a: a[:, None], condition_injections(params, seen, targets))
    return score_from_parts(params, z, sigma, temb, inject)


NOISE_MODEL_NAMES = {"zip": "zero-inflated Poisson", "zinb": "zero-inflated negative-binomial"}


class LCD:
    """Latent causal diffusion fitted on every condition of a prepared screen.

    Parameters
    ----------
    screen
        A prepared screen (``lc.pp.prepare``): counts in ``layers["counts"]``, canonical labels in
        ``obs["perturbation"]`` and the control label in ``uns["lcdiff"]["control"]``. To hold
        conditions out, pass the subset of cells with the training labels. With
        ``noise_model=None`` the screen needs no counts layer and ``X`` is used as the states.
    preset
        ``"auto"`` (default: sized to the screen, with the lcdiff options that make LCD work at
        1000 genes; see :func:`lcdiff.model.config.auto_overrides`), ``"fast"``,
        ``"fast-zinb"``, ``"tiny"``, ``"paper"`` or a dataset variant of it (see
        :mod:`lcdiff.model.config`). ``paper*`` presets are the authors' model unchanged.
    seed
        Seed of every random choice (initialization, batches, states, Langevin noise in fit).
    **overrides
        Any :class:`~lcdiff.model.config.LCDConfig` field.

    Attributes
    ----------
    genes
        Modelled genes (the screen's ``var_names``).
    control
        Control label.
    train_labels
        Conditions trained on (control first).
    trained_targets
        Genes perturbed in training, alone or in a combination (in gene order).
    dropped_labels
        Labels of the screen that the model was not trained on, with the reason (``label →
        reason``): dropped by ``lc.pp.prepare`` (too few cells, unmeasured targets, no
        perturbation such as ``"unassigned"``) or held out of the training screen. Saved with
        the model.
    config
        The :class:`~lcdiff.model.config.LCDConfig`.
    is_fitted
        Whether :meth:`fit` has run (or the model was loaded fitted).
    state_mean, state_scale
        ``[d]`` standardizer: latent state s = state_mean + state_scale · z.

    Examples
    --------
    >>> model = lc.LCD(screen, preset="fast").fit()          # doctest: +SKIP
    >>> pred = model.predict(["A+B"], n_cells=1000)           # doctest: +SKIP
    """

    def __init__(self, screen: AnnData, preset: str = AUTO_PRESET, seed: int = 0, **overrides):
        if not isinstance(screen, AnnData):
            raise ConfigError(
                f"LCD expects a prepared AnnData screen, got {type(screen).__name__}; run "
                "lc.pp.prepare(adata, ...) first."
            )
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an integer, got {seed!r}.")
        make_config(preset, **overrides)  # refuse a bad preset or value before reading the screen
        self.seed = int(seed)
        screen_info(screen)
        self.control: str = control_label(screen)
        self.genes: list[str] = [str(g) for g in screen.var_names]
        labels = conditions(screen)
        if not labels or labels[0] != self.control:
            raise ControlNotFoundError(
                f"The screen has no control cells (label {self.control!r}); LCD standardizes "
                "the latent states by the control, so keep the control cells in the training "
                "screen."
            )
        self.config: LCDConfig = make_config(
            preset, shape=(len(self.genes), len(labels), int(screen.n_obs)), **overrides
        )
        if self.config.score_head == "paper":
            _warn_if_rank_limited(self.config.score_hidden, len(self.genes))
        self.train_labels: list[str] = labels
        self.dropped_labels: dict[str, str] = _dropped_labels(screen, labels)
        self._targets = self._target_masks(labels)
        trained = self._targets.any(axis=0)
        self.trained_targets: list[str] = [g for g, t in zip(self.genes, trained, strict=True) if t]
        self._cells = self._training_cells(screen, labels)
        self.is_fitted = False
        self._noise: dict | None = None
        self._score_params: dict | None = None
        self._standardizer: Standardizer | None = None
        self._step_callback: StepCallback | None = None
        self.training_losses: dict[str, list[float]] = {}
        self.diagnostics: dict = {}

    # ----------------------------------------------------------------------------------------
    # set-up helpers
    # ----------------------------------------------------------------------------------------
    def _target_masks(self, labels: Sequence[str]) -> np.ndarray:
        masks = np.zeros((len(labels), len(self.genes)), np.float32)
        for i, label in enumerate(labels):
            masks[i, target_indices(self.genes, label, self.control)] = 1.0
        return masks

    def _training_cells(self, screen: AnnData, labels: list[str]) -> list[np.ndarray]:
        if self.config.noise_model is None:
            matrix, what = screen.X, "X"
        else:
            if "counts" not in screen.layers:
                raise MissingColumnError(
                    "The screen has no layers['counts'] (raw counts) for the noise model; "
                    "prepare it with lc.pp.prepare, or pass noise_model=None to train on X."
                )
            matrix, what = screen.layers["counts"], "layers['counts']"
        cells = []
        for label in labels:
            x = dense(matrix[condition_mask(screen, label)]).astype(np.float32)
            if not np.isfinite(x).all():
                raise InvalidCountsError(
                    f"{what} of condition {label!r} contains NaN or infinite values; remove or "
                    "fix those cells before fitting."
                )
            if self.config.noise_model is not None and (x < 0).any():
                raise InvalidCountsError(
                    f"layers['counts'] of condition {label!r} has negative values; the noise "
                    "model needs raw UMI counts."
                )
            cells.append(x)
        if self.config.noise_model is not None and cells[0].shape[0] < 2:
            raise ControlNotFoundError(
                "The noise model needs at least 2 control cells to compute the unit scaling."
            )
        return cells

    def _data_fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([self.genes, self.train_labels, self.control]).encode())
        for x in self._cells:
            digest.update(np.ascontiguousarray(x).tobytes())
        return digest.hexdigest()

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("This LCD model is not fitted yet; call model.fit() first.")

    @property
    def state_mean(self) -> np.ndarray:
        self._require_fitted()
        return self._standardizer.mean

    @property
    def state_scale(self) -> np.ndarray:
        self._require_fitted()
        return self._standardizer.scale

    @property
    def sigmas(self) -> np.ndarray:
        """Noise levels, descending (index 0 = largest σ)."""
        c = self.config
        return noise_levels(c.sigma_min, c.sigma_max, c.n_levels)

    @property
    def _seen(self) -> np.ndarray:
        return np.isin(self.genes, self.trained_targets)

    def describe_config(self) -> str:
        """One line naming the preset, the screen's size and the key hyperparameters."""
        c = self.config
        noise = NOISE_MODEL_NAMES.get(c.noise_model, "none (states = X)")
        return (
            f"LCD preset {c.preset!r} for {len(self.genes)} genes, {len(self.train_labels)} "
            f"conditions: noise model {noise}"
            + (" (the paper uses zero-inflated Poisson)" if c.noise_model == "zinb" else "")
            + f", {c.noise_steps} stage-A steps, score head {c.score_head!r}"
            f" (width {c.score_hidden}), {c.score_steps} stage-B steps of {c.score_batch_size}"
            + (f", state floor at rate {c.state_floor:g}" if c.state_floor is not None else "")
            + f", sampler {c.n_levels} levels x {c.anneal_steps} steps."
        )

    def __repr__(self) -> str:
        status = "fitted" if self.is_fitted else "not fitted"
        return (
            f"LCD(preset={self.config.preset!r}, genes={len(self.genes)}, "
            f"conditions={len(self.train_labels)}, noise_model={self.config.noise_model!r}, "
            f"{status})"
        )

    # ----------------------------------------------------------------------------------------
    # fit
    # ----------------------------------------------------------------------------------------
    def fit(
        self,
        progress: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = True,
        noise_model_from: LCD | None = None,
    ) -> LCD:
        """Train stage A (unless ``noise_model=None``) and stage B.

        Parameters
        ----------
        progress
            Show a progress bar per stage (loss and steps per second).
        checkpoint_dir
            Folder for checkpoints, written atomically every ``checkpoint_every`` steps and at
            the end of each stage.
        resume
            Continue from the checkpoints in ``checkpoint_dir`` if present (they must come from
            the same data, configuration and seed); ``False`` starts afresh and overwrites them.
        noise_model_from
            A fitted LCD on the same training screen whose stage A (noise model) is reused:
            only stage B is trained. Stage A is the expensive part of a fit, so this is how to
            try other score-model or sampler settings (``n_levels``, ``score_steps``, ...).
            The stage-A hyperparameters must be equal. With the same ``seed`` the result is
            identical to a full fit.

        Returns
        -------
        ``self``, fitted.

        Raises
        ------
        TrainingDivergedError
            If a loss becomes non-finite (the message names the stage and step).
        ModelFileError
            If a checkpoint is corrupt or was written for other data, configuration or seed.
        ConfigError
            If ``noise_model_from`` is not a fitted LCD on the same data with the same stage-A
            hyperparameters.
        """
        if self._cells is None:
            raise ModelError(
                "This model was loaded from disk and carries no training data; build a new "
                "LCD(screen, ...) to fit again."
            )
        c = self.config
        if progress:
            print(self.describe_config())
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
        fingerprint = {
            "config": c.training_fingerprint(),
            "seed": self.seed,
            "data": self._data_fingerprint(),
        }
        if noise_model_from is not None and noise_model_from.seed != self.seed:
            # another seed's stage A: a stage-B checkpoint of a full fit must not be resumed
            fingerprint["noise_seed"] = noise_model_from.seed
        key = jax.random.PRNGKey(self.seed)
        k_noise, k_states, k_score = jax.random.split(key, 3)

        if c.noise_model is None:
            source = CellStates(self._cells)
            self._noise = None
        else:
            if noise_model_from is not None:
                self._noise = self._reused_noise(noise_model_from)
            else:
                self._noise = self._fit_noise(k_noise, folder, resume, fingerprint, progress)
            floor = (
                state_floor(self._noise["unit_scale"], c.state_floor)
                if c.state_floor is not None
                else None
            )
            source = GeneratorStates(
                self._noise["gen"], k_states, c.n_states, c.generator_hidden, floor
            )
        # states are streamed (one condition, or one batch, at a time): no array of all
        # conditions' states is ever formed (lcdiff.model.streaming)
        self._standardizer = fit_standardizer(source, control_index=0, scale=c.state_scale)
        self._score_params = self._fit_score(k_score, source, folder, resume, fingerprint, progress)
        self.is_fitted = True
        self.diagnostics = self._check_stages(source, jax.random.fold_in(key, CHECK_FOLD))
        for line in summary_lines(self.diagnostics):
            if progress:
                print(line)
        self._warn_failed_stages()
        return self

    def _check_stages(self, source, key: jax.Array) -> dict:
        """Post-training checks of both stages (:mod:`lcdiff.model.diagnostics`)."""
        out = {}
        if self._noise is not None:
            out["noise"] = noise_check(
                self._noise, source, self._cells, self.train_labels, seed=self.seed
            )
        out["score"] = score_check(
            self._score_params,
            source,
            self._standardizer,
            self._targets,
            self._seen,
            self.sigmas,
            key,
        )

        def sample(labels, n_cells):
            return self._langevin(labels, self._target_masks(labels), n_cells, self.seed)

        floor = getattr(source, "floor", None)
        out["sampler"] = sampler_check(
            sample, source, self._standardizer, self.train_labels, floor=floor
        )
        return out

    def _warn_failed_stages(self) -> None:
        for what, api_fix, cli_fix in failures(self.diagnostics):
            warnings.warn(LcdiffWarning(f"{what} {api_fix}", cli=f"{what} {cli_fix}"), stacklevel=3)

    def _load_checkpoint(
        self, path: Path, stage: str, template: dict, fingerprint: dict, key: jax.Array
    ) -> dict | None:
        if not path.is_file():
            return None
        meta, arrays = model_io.read_checkpoint(path)
        if meta.get("stage") != stage or meta.get("fingerprint") != fingerprint:
            raise ModelFileError(
                f"The checkpoint {path} was written for other data, configuration or seed "
                f"(stage {meta.get('stage')!r}); fit with resume=False to overwrite it or use "
                "another checkpoint_dir."
            )
        if not np.array_equal(arrays.get("key"), np.asarray(key)):
            raise ModelFileError(f"The checkpoint {path} holds a different PRNG key; refit.")
        return model_io.unflatten_tree(template, arrays, "state", f"checkpoint {path}")

    def _saver(self, path: Path | None, stage: str, fingerprint: dict, key: jax.Array):
        if path is None:
            return None

        def save(state: dict) -> None:
            arrays = model_io.flatten_tree(state, "state")
            arrays["key"] = np.asarray(key)
            meta = {
                "stage": stage,
                "step": int(state["step"]),
                "fingerprint": fingerprint,
                "lcdiff_version": _version(),
            }
            model_io.write_checkpoint(path, meta, arrays)

        return save

    def _fit_noise(self, key, folder, resume, fingerprint, progress) -> dict:
        c = self.config
        d = len(self.genes)
        unit_scale = (
            unit_scaling(self._cells[0], c.min_unit_scaling)
            if c.unit_scaling
            else np.ones(d, np.float32)
        )
        k_init, k_steps = jax.random.split(key)
        path = folder / CHECKPOINT_A if folder is not None else None
        state = None
        if path is not None and resume:
            template = jax.eval_shape(lambda: init_noise_state(k_init, len(self._cells), d, c))
            state = self._load_checkpoint(path, STAGE_A, template, fingerprint, k_steps)
        if state is None:
            state = init_noise_state(k_init, len(self._cells), d, c)
        sizes = np.array([len(x) for x in self._cells], np.int32)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
        # data parallel over the M prior samples (lcdiff.model.sharding); one device = plain jit
        mesh = device_mesh(c.devices)
        data = put_replicated(
            (np.concatenate(self._cells), offsets, sizes, np.asarray(unit_scale, np.float32)),
            mesh,
        )
        state = put_replicated(state, mesh)
        step = make_noise_step(c, "matrix", mesh)
        state, losses = run_stage(
            STAGE_A,
            step,
            state,
            data,
            k_steps,
            c.noise_steps,
            save_checkpoint=self._saver(path, STAGE_A, fingerprint, k_steps),
            checkpoint_every=c.checkpoint_every,
            progress=progress,
            progress_every=c.progress_every,
            description="LCD stage A (noise model)",
            callback=self._step_callback,
        )
        self.training_losses["noise"] = losses
        return {
            "gen": jax.tree.map(np.asarray, state["gen"]),
            "logit_pi": np.asarray(state["logit_pi"]),
            "unit_scale": np.asarray(unit_scale, np.float32),
            # NB dispersion, only with the opt-in noise_model="zinb"
            **({"log_theta": np.asarray(state["log_theta"])} if "log_theta" in state else {}),
        }

    def _reused_noise(self, other: LCD) -> dict:
        """The fitted stage A of ``other``, after checking it was trained like ours would be."""
        if not isinstance(other, LCD) or not other.is_fitted or other._noise is None:
            raise ConfigError(
                "noise_model_from must be a fitted LCD with a noise model (noise_model 'zip' or "
                f"'zinb'), got {other!r}."
            )
        if other._cells is None or other._data_fingerprint() != self._data_fingerprint():
            raise ConfigError(
                "noise_model_from was fitted on other training data (genes, conditions or "
                "cells differ, or it was loaded from disk); pass a model fitted on the same "
                "training screen."
            )
        ours, theirs = self.config.to_dict(), other.config.to_dict()
        differing = sorted(f for f in NOISE_FIELDS if ours[f] != theirs[f])
        if differing:
            raise ConfigError(
                f"noise_model_from has other stage-A hyperparameters ({differing}); only "
                "stage-B and sampler settings may differ when a noise model is reused."
            )
        if other.seed != self.seed:
            warnings.warn(
                f"Reusing the noise model of a fit with seed {other.seed} in a fit with seed "
                f"{self.seed}: stage B and the states use seed {self.seed}.",
                UserWarning,
                stacklevel=3,
            )
        self.training_losses["noise"] = list(other.training_losses.get("noise", []))
        return other._noise

    def _fit_score(self, key, source, folder, resume, fingerprint, progress) -> dict:
        c = self.config
        mesh = device_mesh(c.devices)
        d = len(self.genes)
        k_init, k_steps = jax.random.split(key)
        optimizer = score_optimizer(c)

        def fresh():
            params = init_score_params(
                k_init, d, c.score_hidden, c.embed_dim, c.score_layers, c.score_head
            )
            return {
                "params": params,
                "opt": optimizer.init(params),
                "step": jnp.zeros((), jnp.int32),
            }

        path = folder / CHECKPOINT_B if folder is not None else None
        state = None
        if path is not None and resume:
            state = self._load_checkpoint(
                path, STAGE_B, jax.eval_shape(fresh), fingerprint, k_steps
            )
        if state is None:
            state = fresh()
        state = put_replicated(state, mesh)
        data = stream_data(source, self._standardizer, self._targets, self._seen, self.sigmas, mesh)
        step = make_stream_score_step(c, source.kind, mesh)
        state, losses = run_stage(
            STAGE_B,
            step,
            state,
            data,
            k_steps,
            c.score_steps,
            save_checkpoint=self._saver(path, STAGE_B, fingerprint, k_steps),
            checkpoint_every=c.checkpoint_every,
            progress=progress,
            progress_every=c.progress_every,
            description="LCD stage B (score model)",
            callback=self._step_callback,
        )
        self.training_losses["score"] = losses
        return jax.tree.map(np.asarray, state["params"])

    # ----------------------------------------------------------------------------------------
    # queries
    # ----------------------------------------------------------------------------------------
    def _query(self, labels) -> tuple[list[str], np.ndarray]:
        """Canonical labels and their ``[k, d]`` target masks; warns about untrained genes."""
        if isinstance(labels, str):
            labels = [labels]
        labels = [canonical_label(lab, self.control) for lab in labels]
        for label in labels:
            if label != self.control and label not in self.genes and _looks_like_control(label):
                raise UnknownPerturbationError(
                    f"{label!r} is not a gene of this model, and this model's control label is "
                    f"{self.control!r}: to predict control cells, ask for {self.control!r}."
                )
        masks = self._target_masks(labels)
        trained = set(self.trained_targets)
        unseen = sorted({g for lab in labels for g in parse_label(lab, self.control)} - trained)
        if unseen:
            warnings.warn(
                f"Genes {unseen} were never perturbed in training; their perturbation embedding "
                "is the mean of the trained genes' embeddings (an 'average perturbation'), so "
                "treat these predictions with care.",
                UserWarning,
                stacklevel=3,
            )
        return labels, masks

    def sample_states(
        self,
        labels,
        n_cells: int = 1000,
        seed: int = 0,
        standardized: bool = False,
        anneal_steps: int | None = None,
        anneal_dt: float | None = None,
    ) -> np.ndarray:
        """Latent states of each label by annealed Langevin dynamics.

        Parameters
        ----------
        labels
            A label or a list of labels (seen or unseen combinations of modelled genes).
        n_cells
            Chains (cells) per label.
        seed
            Seed; cell i of a label depends only on (seed, label, i): not on the other labels
            queried, the number of devices or ``condition_chunk_size``.
        standardized
            Return z (the SDE space) instead of s = state_mean + state_scale · z.
        anneal_steps, anneal_dt
            Sampler settings for this call (Langevin steps per noise level, step-size constant);
            default: the model's configuration. The saved model is not changed.

        Returns
        -------
        ``[k, n_cells, d]`` float32.

        Raises
        ------
        NonFiniteOutputError
            If a sampled state is NaN or infinite (the sampler diverged; a smaller
            ``anneal_dt`` usually helps).
        """
        self._require_fitted()
        if not isinstance(n_cells, int | np.integer) or n_cells < 1:
            raise ConfigError(f"n_cells must be a positive integer, got {n_cells!r}.")
        _check_sampler(anneal_steps, anneal_dt)
        labels, masks = self._query(labels)
        z = self._langevin(
            labels, masks, int(n_cells), int(seed), None, False, anneal_steps, anneal_dt
        )
        bad = [lab for lab, zi in zip(labels, z, strict=True) if not np.isfinite(zi).all()]
        if bad:
            dt = self.config.anneal_dt if anneal_dt is None else anneal_dt
            raise NonFiniteOutputError(
                f"The sampled latent states of {bad[:5]}{' ...' if len(bad) > 5 else ''} are NaN "
                f"or infinite: the Langevin sampler diverged with anneal_dt={dt:g}. Pass a "
                "smaller anneal_dt (or more anneal_steps with a smaller anneal_dt).",
                cli=f"The sampled latent states of {bad[:5]}{' ...' if len(bad) > 5 else ''} are "
                f"NaN or infinite: the Langevin sampler diverged with step size {dt:g}. Pass a "
                "smaller --anneal-dt (with more --anneal-steps).",
            )
        return z if standardized else self._standardizer.inverse(z)

    def _langevin(
        self,
        labels,
        masks,
        n_cells,
        seed,
        z0=None,
        probability_flow=False,
        anneal_steps=None,
        anneal_dt=None,
    ):
        c = self.config
        keys = jnp.stack([_label_key(seed, lab) for lab in labels]) if labels else None
        return annealed_langevin(
            self._score_params,
            self._seen,
            masks,
            self.sigmas,
            c.anneal_dt if anneal_dt is None else float(anneal_dt),
            c.anneal_steps if anneal_steps is None else int(anneal_steps),
            keys,
            n_cells,
            z0=z0,
            probability_flow=probability_flow,
            chunk_size=c.condition_chunk_size,
            mesh=device_mesh(c.devices),
        )

    def predict(
        self,
        labels,
        n_cells: int = 1000,
        seed: int = 0,
        anneal_steps: int | None = None,
        anneal_dt: float | None = None,
    ) -> AnnData:
        """Predicted cells of each label.

        Parameters
        ----------
        labels
            A label or list of labels (``"A"``, ``"A+B"``, any size; the control label). Labels
            are rewritten in canonical form (``"B+A"`` → ``"A+B"``); ``uns["lcdiff"]
            ["renamed_labels"]`` lists the rewritten ones.
        n_cells
            Cells per label.
        seed
            Seed. Cell i of a label (its latent state and its counts) depends only on
            (seed, label, i): the same on any number of devices and for any chunk size.
        anneal_steps, anneal_dt
            Sampler settings for this prediction (Langevin steps per noise level, step-size
            constant); default: the model's configuration. Recorded in ``uns["lcdiff"]
            ["sampler"]``.

        Returns
        -------
        AnnData with ``n_cells`` cells per label: ``obs["perturbation"]``, ``var_names`` = genes,
        ``layers["counts"]`` (ZIP-decoded counts), ``X`` = log1p counts per 10k,
        ``obsm["lcd_state"]`` (standardized latent states), ``uns["lcdiff"]`` describing them.
        With ``noise_model=None``: ``X`` = the states in the screen's ``X`` space, no counts.

        Raises
        ------
        UnknownPerturbationError
            If a label names a gene that is not modelled (or a control label that is not this
            model's).
        NonFiniteOutputError
            If the sampler diverged (NaN or infinite states).
        """
        queried = [labels] if isinstance(labels, str) else list(labels)
        z = self.sample_states(
            queried,
            n_cells=n_cells,
            seed=seed,
            standardized=True,
            anneal_steps=anneal_steps,
            anneal_dt=anneal_dt,
        )
        labels = [canonical_label(lab, self.control) for lab in queried]
        renamed = {str(q): c for q, c in zip(queried, labels, strict=True) if q != c}
        states = self._standardizer.inverse(z)
        k, n, d = z.shape
        obs = pd.DataFrame(
            {"perturbation": pd.Categorical(np.repeat(labels, n))},
            index=[f"{lab}-{i}" for lab in labels for i in range(n)],
        )
        obs.index = pd.Index(_unique(obs.index))
        var = pd.DataFrame(index=pd.Index(self.genes))
        info = {
            "kind": "prediction",
            "model": "LCD",
            "method": "lcd",
            "version": _version(),
            "preset": self.config.preset,
            "seed": int(seed),
            "n_cells": int(n),
            "control": self.control,
            "perturbation_key": "perturbation",
            "renamed_labels": renamed,
            "sampler": {
                "anneal_steps": int(
                    self.config.anneal_steps if anneal_steps is None else anneal_steps
                ),
                "anneal_dt": float(self.config.anneal_dt if anneal_dt is None else anneal_dt),
                "n_levels": int(self.config.n_levels),
                "model_defaults": anneal_steps is None and anneal_dt is None,
            },
        }
        if self._noise is None:
            x = states.reshape(k * n, d)
            info["layers"] = {
                "X": "sampled latent states (the training screen's X space)",
                "obsm_lcd_state": "standardized latent states z (SDE space)",
            }
            adata = AnnData(X=x, obs=obs, var=var)
        else:
            counts = self._decode(states, labels, int(seed))
            info["layers"] = {
                "X": "log1p of counts per 10k (library size over the modelled genes)",
                "counts": "counts decoded from the latent states by the "
                + NOISE_MODEL_NAMES.get(self.config.noise_model, str(self.config.noise_model))
                + " noise model",
                "obsm_lcd_state": "standardized latent states z (SDE space)",
            }
            adata = AnnData(X=log1p_cp10k(counts), obs=obs, var=var)
            adata.layers["counts"] = counts
        adata.obsm["lcd_state"] = z.reshape(k * n, d)
        adata.uns["lcdiff"] = info
        return adata

    def _decode(self, states: np.ndarray, labels: list[str], seed: int) -> np.ndarray:
        """Counts of every cell, ``[k·n, d]``: cell i of a label draws from its own generator,
        seeded by (seed, label, i), so its counts depend on nothing else."""
        k, n, d = states.shape
        rows = []
        for i, label in enumerate(labels):
            tag = zlib.crc32(label.encode())
            for cell in range(n):
                try:
                    counts = zip_decode(
                        states[i, cell],
                        self._noise["unit_scale"],
                        self._noise["logit_pi"],
                        np.random.default_rng([seed % (1 << 64), tag, cell]),
                        log_theta=self._noise.get("log_theta"),
                    )
                except ValueError as exc:  # numpy refuses Poisson rates above ~1e19
                    raise NonFiniteOutputError(
                        f"The predicted counts of {label!r} overflow ({exc}): its latent states "
                        "are far outside the training range; the sampler settings or the model "
                        "are broken."
                    ) from exc
                rows.append(counts)
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, d), np.float32)

    def drift(self, z, labels, level: int = -1) -> np.ndarray:
        """Score (drift of the Langevin SDE) at noise level ``level`` in standardized space.

        Parameters
        ----------
        z
            ``[k, n, d]`` standardized states (``[n, d]`` is broadcast to every label).
        labels
            A label or ``k`` labels.
        level
            Noise-level index (0 = largest σ; default −1 = σ_min, the biological model).

        Returns
        -------
        ``[k, n, d]`` float32.
        """
        self._require_fitted()
        labels, masks = self._query(labels)
        n_levels = self.config.n_levels
        if not -n_levels <= level < n_levels:
            raise ConfigError(f"level must lie in [-{n_levels}, {n_levels - 1}], got {level}.")
        level = level % n_levels
        z = np.asarray(z, np.float32)
        if z.ndim == 2:
            z = np.broadcast_to(z, (len(labels), *z.shape))
        if z.ndim != 3 or z.shape[0] != len(labels) or z.shape[2] != len(self.genes):
            raise ConfigError(
                f"z must have shape [k={len(labels)}, n, d={len(self.genes)}], got {z.shape}."
            )
        temb = level_embeddings(self._score_params, n_levels)[level]
        return np.asarray(
            _drift_batch(
                self._score_params,
                jnp.asarray(self._seen),
                jnp.asarray(masks),
                jnp.asarray(z),
                jnp.float32(self.sigmas[level]),
                temb,
            )
        )

    def fixed_points(self, labels, z0=None) -> np.ndarray:
        """Deterministic (probability-flow) annealed run of one chain per label.

        Parameters
        ----------
        labels
            A label or ``k`` labels.
        z0
            Start in standardized space, ``[d]`` or ``[k, d]``; default 0 (the control mean).

        Returns
        -------
        ``[k, d]`` endpoints in standardized space.
        """
        self._require_fitted()
        labels, masks = self._query(labels)
        d = len(self.genes)
        start = np.zeros((d,), np.float32) if z0 is None else np.asarray(z0, np.float32)
        if start.shape not in ((d,), (len(labels), d)):
            raise ConfigError(f"z0 must have shape [d] or [k, d] with d={d}, got {start.shape}.")
        start = np.broadcast_to(start, (len(labels), d))[:, None, :]
        z = self._langevin(labels, masks, 1, 0, z0=start, probability_flow=True)
        return z[:, 0, :]

    def sample_noise_model(self, label: str, n_cells: int = 1000, seed: int = 0) -> np.ndarray:
        """Counts of a training condition drawn from its stage-A generator (no score model).

        What stage A alone says the condition looks like: comparing these with the observed
        cells measures the noise model's error, comparing :meth:`predict` with these measures
        stage B's.

        Parameters
        ----------
        label
            A training condition.
        n_cells, seed
            Cells to draw and their seed.

        Returns
        -------
        ``[n_cells, d]`` float32 counts.
        """
        self._require_fitted()
        if self._noise is None:
            raise ModelError("This model has no noise model (noise_model=None).")
        label = canonical_label(label, self.control)
        if label not in self.train_labels:
            raise UnknownPerturbationError(
                f"{label!r} is not a training condition; stage A has generators only for the "
                f"{len(self.train_labels)} training conditions."
            )
        if not isinstance(n_cells, int | np.integer) or n_cells < 1:
            raise ConfigError(f"n_cells must be a positive integer, got {n_cells!r}.")
        e = self.train_labels.index(label)
        gen = jax.tree.map(lambda p: p[e], self._noise["gen"])
        key = _label_key(seed, label)
        states = sample_condition_states(gen, key, int(n_cells), self.config.generator_hidden)
        rng = np.random.default_rng([int(seed), zlib.crc32(label.encode()), 1])
        return zip_decode(
            states,
            self._noise["unit_scale"],
            self._noise["logit_pi"],
            rng,
            log_theta=self._noise.get("log_theta"),
        )

    def noise_log_likelihood(
        self, counts, label: str, n_samples: int = 1000, seed: int = 0
    ) -> np.ndarray:
        """Monte-Carlo log-likelihood of each cell's counts under a trained condition's generator.

        log p(x) ≈ logmeanexp_k log ZIP(x | s^(k)), s^(k) ~ G_label, k = 1 … ``n_samples``.

        Parameters
        ----------
        counts
            ``[n, d]`` raw counts (dense or sparse) over the model's genes.
        label
            A training condition (it must have its own generator).
        n_samples, seed
            Monte-Carlo samples and their seed.

        Returns
        -------
        ``[n]`` float32 log-likelihoods (nats).
        """
        self._require_fitted()
        if self._noise is None:
            raise ModelError("This model has no noise model (noise_model=None).")
        label = canonical_label(label, self.control)
        if label not in self.train_labels:
            raise UnknownPerturbationError(
                f"{label!r} is not a training condition; the noise model has generators only for "
                f"{self.train_labels[:10]}{' ...' if len(self.train_labels) > 10 else ''}."
            )
        x = dense(counts).astype(np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.genes):
            raise ConfigError(
                f"counts must have shape [n, {len(self.genes)}] (the model's genes), got {x.shape}."
            )
        e = self.train_labels.index(label)
        gen = jax.tree.map(lambda p: p[e], self._noise["gen"])
        return mc_log_marginal(
            gen,
            self._noise["logit_pi"],
            self._noise["unit_scale"],
            x,
            jax.random.PRNGKey(seed),
            int(n_samples),
            self.config.generator_hidden,
            log_theta=self._noise.get("log_theta"),
        )

    # ----------------------------------------------------------------------------------------
    # save / load
    # ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, force: bool = False) -> None:
        """Save the fitted model to folder ``path`` (``lcd.json`` + ``arrays.npz``, atomic).

        Parameters
        ----------
        path
            A new or empty folder.
        force
            Also write into a non-empty folder: a model saved there is replaced, other files are
            left alone.

        Raises
        ------
        OutputExistsError
            If ``path`` is a non-empty folder and ``force`` is false.
        """
        self._require_fitted()
        arrays = model_io.flatten_tree(self._score_params, "score")
        arrays["standardizer/mean"] = self._standardizer.mean
        arrays["standardizer/scale"] = self._standardizer.scale
        arrays["targets"] = self._targets
        if self._noise is not None:
            arrays.update(model_io.flatten_tree(self._noise, "noise"))
        meta = {
            "lcdiff_version": _version(),
            "config": self.config.to_dict(),
            "seed": self.seed,
            "genes": self.genes,
            "control": self.control,
            "train_labels": self.train_labels,
            "trained_targets": self.trained_targets,
            "diagnostics": self.diagnostics,
            "dropped_labels": self.dropped_labels,
        }
        model_io.write_model(path, meta, arrays, force=force)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LCD:
        """Load a model saved with :meth:`save`.

        Raises
        ------
        ModelFileError
            If the folder is missing, corrupt, or of an incompatible format version.
        """
        meta, arrays = model_io.read_model(path)
        try:
            config = LCDConfig.from_dict(meta["config"])
            if config.devices is not None and config.devices > len(jax.devices()):
                # fitted on more devices than this machine has: predict on all visible ones
                config = dataclasses.replace(config, devices=None)
            model = cls.__new__(cls)
            model.config = config
            model.seed = int(meta["seed"])
            model.genes = [str(g) for g in meta["genes"]]
            model.control = str(meta["control"])
            model.train_labels = [str(x) for x in meta["train_labels"]]
            model.trained_targets = [str(x) for x in meta["trained_targets"]]
            model.dropped_labels = {
                str(k): str(v) for k, v in dict(meta.get("dropped_labels", {})).items()
            }
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelFileError(f"The model record in {path} is incomplete: {exc}.") from exc
        d, m = len(model.genes), len(model.train_labels)
        c = config
        template = jax.eval_shape(
            lambda: init_score_params(
                jax.random.PRNGKey(0), d, c.score_hidden, c.embed_dim, c.score_layers, c.score_head
            )
        )
        model._score_params = model_io.unflatten_tree(template, arrays, "score", "saved model")
        try:
            model._standardizer = Standardizer(
                arrays["standardizer/mean"], arrays["standardizer/scale"]
            )
            model._targets = arrays["targets"]
        except KeyError as exc:
            raise ModelFileError(f"The saved model in {path} lacks {exc}.") from exc
        _check_consistent(model, path)
        if c.noise_model is None:
            model._noise = None
        else:
            gen = jax.eval_shape(lambda: init_noise_state(jax.random.PRNGKey(0), m, d, c))["gen"]
            template = {
                "gen": gen,
                "logit_pi": jax.ShapeDtypeStruct((d,), jnp.float32),
                "unit_scale": jax.ShapeDtypeStruct((d,), jnp.float32),
            }
            if c.noise_model == "zinb":
                template["log_theta"] = jax.ShapeDtypeStruct((d,), jnp.float32)
            model._noise = model_io.unflatten_tree(template, arrays, "noise", "saved model")
        model._cells = None
        model.is_fitted = True
        model._step_callback = None
        model.training_losses = {}
        model.diagnostics = dict(meta.get("diagnostics") or {})
        return model


def _dropped_labels(screen: AnnData, trained: list[str]) -> dict[str, str]:
    """Labels of the prepared screen that are not trained on, with the reason (see
    ``LCD.dropped_labels``)."""
    info = screen.uns.get("lcdiff", {}) or {}
    dropped = info.get("dropped_labels", {}) or {}
    out = {str(k): str(v) for k, v in dict(dropped).items()}
    for label in np.asarray(info.get("labels", []), dtype=object).ravel():
        if str(label) not in trained and str(label) not in out:
            out[str(label)] = "held out of the training screen"
    return dict(sorted(out.items()))


def _check_consistent(model: LCD, path) -> None:
    """Refuse a loaded model whose record and arrays disagree (a mixed-up folder)."""
    targets = np.asarray(model._targets)
    expected = (len(model.train_labels), len(model.genes))
    problems = []
    if targets.shape != expected:
        problems.append(f"target masks of shape {targets.shape}, expected {expected}")
    elif model.train_labels and model.train_labels[0] != model.control:
        problems.append(f"first training label {model.train_labels[0]!r} is not the control")
    elif [g for g, t in zip(model.genes, targets.any(axis=0), strict=True) if t] != (
        model.trained_targets
    ):
        problems.append("trained targets that do not match the target masks")
    if len(model._standardizer.mean) != len(model.genes):
        problems.append(f"a standardizer over {len(model._standardizer.mean)} genes")
    if problems:
        raise ModelFileError(
            f"The saved model in {path} is inconsistent ({'; '.join(problems)}); its files come "
            "from different models. Save the model again or refit."
        )


def _looks_like_control(label: str) -> bool:
    from lcdiff.data.schema import label_kind

    return label_kind(label, control="") in ("control-like", "not a perturbation")


def _check_sampler(anneal_steps, anneal_dt) -> None:
    """Refuse sampler settings that are not a positive integer / a positive finite number."""
    if anneal_steps is not None and (
        isinstance(anneal_steps, bool)
        or not isinstance(anneal_steps, int | np.integer)
        or anneal_steps < 1
    ):
        raise ConfigError(
            f"anneal_steps must be a positive integer, got {anneal_steps!r}.",
            cli=f"--anneal-steps must be a positive integer, got {anneal_steps!r}.",
        )
    if anneal_dt is not None and (
        isinstance(anneal_dt, bool)
        or not isinstance(anneal_dt, int | float | np.integer | np.floating)
        or not np.isfinite(anneal_dt)
        or anneal_dt <= 0
    ):
        raise ConfigError(
            f"anneal_dt must be a positive number, got {anneal_dt!r}.",
            cli=f"--anneal-dt must be a positive number, got {anneal_dt!r}.",
        )


def _unique(names) -> list[str]:
    """Make names unique by suffixing repeats (labels may be queried twice)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}-dup{count}")
    return out
