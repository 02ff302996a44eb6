"""Hyperparameters of LCD and the named presets.

A configuration is a frozen :class:`LCDConfig`. :func:`make_config` builds one from a preset
name plus keyword overrides and refuses unknown names or invalid values with
:class:`~lcdiff.errors.ConfigError`.

Presets
-------
``"paper"``
    Every hyperparameter of the authors' final real-data runs (reference ``lcd-model.md`` §10),
    Norman-style defaults except the weight decay (1.0, the value shared by all other datasets).
    Per-dataset variants are separate preset names:

    - ``"paper-norman"``: weight decay 0.3, LSE temperatures (1, 20), 250k noise-model steps;
    - ``"paper-wessels"``: LSE temperatures (1, 100), 100k noise-model steps;
    - ``"paper-replogle"``: score hidden width 2048, 100k score steps;
    - ``"paper-linear"``: no noise model (states = the screen's ``X``), for ``linear_sde`` data
      with d <= 300;
    - ``"paper-linear-1000"``: as ``paper-linear`` with 100k score steps (d = 1000).
``"fast"``
    Sized to fit the embedded toy screen (~100 genes, ~65 conditions) on two CPU cores in a few
    minutes: a narrower generator (32 wide, 2 residual blocks, one wide block of 128), 512 Monte
    Carlo samples, a 256-wide score network trained for 16,000 steps of 512 states, higher
    learning rates, and the paper's 30 noise levels sampled with 20 Langevin steps each instead
    of 500 (``anneal_dt`` raised 25× so that each level lasts as long): 600 score evaluations
    per predicted cell instead of 15,000. ``benchmarks/fast_vs_paper.py`` checks that this
    reaches the held-out quality of the paper's schedule. See the README section
    "Fitting LCD" for the measured fit time.
``"fast-zinb"``
    ``"fast"`` with the opt-in ``noise_model="zinb"``: a departure from the paper's model that
    replaces the Poisson by a negative binomial with a learned per-gene dispersion shared by all
    conditions. The paper's generator draws states from a ``generator_hidden``-dimensional
    noise, so it cannot give each gene its own independent overdispersion, and the Monte-Carlo
    objective with prior samples favours too-concentrated states; counts decoded from the
    ``fast`` generators are therefore too narrow. On the toy screen (negative-binomial counts)
    this lowers the MMD² of decoded training conditions from about 0.02 to the sampling floor.
``"tiny"``
    For tests: runs in seconds on one core.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lcdiff.errors import ConfigError

#: Accepted values of ``LCDConfig.noise_model``.
NOISE_MODELS = ("zip", "zinb", None)


@dataclass(frozen=True)
class LCDConfig:
    """All hyperparameters of one LCD fit (stage A noise model, stage B score model, sampler).

    Stage A (noise model)
        ``noise_model``: ``"zip"`` (zero-inflated Poisson generators, the paper's model),
        ``"zinb"`` (opt-in departure from the paper: zero-inflated negative binomial with a learned
        per-gene dispersion shared by all conditions, so independent per-gene overdispersion need
        not be carried by the latent states) or ``None`` (train the score model directly on
        ``screen.X``). ``generator_hidden`` (also the latent noise dimension),
        ``generator_layers`` residual blocks at that width, then ``generator_wide_layers``
        residual blocks in gene space with ``generator_wide_hidden`` units. ``mc_samples`` prior
        samples per step, ``noise_batch_size`` cells per step (all from one condition),
        ``noise_steps``, Adam (b1 = 0, ``noise_b2``) with linear warm-up over ``noise_warmup``
        steps to ``noise_lr`` then cosine decay to 0, global-norm clipping ``noise_grad_clip``.
        ``lse_temperatures``: the tempered log-mean-exp temperatures averaged in the loss.
        ``unit_scaling``/``min_unit_scaling``: per-gene rate unit from control moments.
        ``n_states``: latent states drawn per condition after training.
    Stage B (score model)
        ``score_hidden`` (H), ``score_layers`` (L hidden layers), ``embed_dim`` (E), ``n_levels``
        noise levels ``geomspace(sigma_min, sigma_max)``, ``score_batch_size``, ``score_steps``,
        AdamW with cosine decay from ``score_lr`` and ``weight_decay``; ``score_grad_clip`` 0
        means no clipping; ``loss_weighting`` is the exponent λ of the σ^λ DSM weight.
    Sampler
        ``anneal_dt`` and ``anneal_steps`` per level: step η_i = anneal_dt·(σ_i/σ_min)²;
        ``condition_chunk_size`` conditions per compiled call.
    Training infrastructure
        ``checkpoint_every`` steps between checkpoints; ``progress_every`` steps between
        progress-bar refreshes. ``devices``: how many of the visible JAX devices stage B and
        the sampler are split over (``None`` = all; see :mod:`lcdiff.model.sharding`).
    """

    # stage A
    noise_model: str | None = "zip"
    generator_hidden: int = 64
    generator_layers: int = 4
    generator_wide_layers: int = 2
    generator_wide_hidden: int = 256
    mc_samples: int = 20000
    noise_batch_size: int = 64
    noise_steps: int = 250_000
    noise_lr: float = 3e-4
    noise_warmup: int = 5000
    noise_b2: float = 0.99
    noise_grad_clip: float = 1.0
    lse_temperatures: tuple[float, ...] = (1.0, 20.0)
    unit_scaling: bool = True
    min_unit_scaling: float = 1.0
    n_states: int = 10_000
    # stage B
    score_hidden: int = 1024
    score_layers: int = 2
    embed_dim: int = 1024
    n_levels: int = 30
    sigma_min: float = 0.01
    sigma_max: float = 10.0
    score_batch_size: int = 8192
    score_steps: int = 50_000
    score_lr: float = 1e-3
    weight_decay: float = 1.0
    score_grad_clip: float = 0.0
    loss_weighting: float = 2.0
    # sampler
    anneal_dt: float = 1e-6
    anneal_steps: int = 500
    condition_chunk_size: int = 32
    # infrastructure
    checkpoint_every: int = 1000
    progress_every: int = 50
    devices: int | None = None
    preset: str = field(default="paper", compare=False)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["lse_temperatures"] = list(self.lse_temperatures)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> LCDConfig:
        """Inverse of :meth:`to_dict`; validates like :func:`make_config`."""
        values = dict(values)
        preset = values.pop("preset", "custom")
        return _build(dict(values), preset)

    def training_fingerprint(self) -> dict:
        """The fields that change training results (used to refuse a mismatching resume)."""
        out = self.to_dict()
        for key in (
            "checkpoint_every",
            "progress_every",
            "preset",
            "anneal_dt",
            "anneal_steps",
            "condition_chunk_size",
            "devices",  # the device count changes results only by float rounding
        ):
            out.pop(key)
        return out


#: The stage-A (noise model) hyperparameters: two configurations that agree on these train the
#: same noise model from the same seed (``LCD.fit(noise_model_from=...)`` checks them).
NOISE_FIELDS = (
    "noise_model",
    "generator_hidden",
    "generator_layers",
    "generator_wide_layers",
    "generator_wide_hidden",
    "mc_samples",
    "noise_batch_size",
    "noise_steps",
    "noise_lr",
    "noise_warmup",
    "noise_b2",
    "noise_grad_clip",
    "lse_temperatures",
    "unit_scaling",
    "min_unit_scaling",
)

PRESETS: dict[str, dict] = {
    "paper": {},
    "paper-norman": {"weight_decay": 0.3, "lse_temperatures": (1.0, 20.0)},
    "paper-wessels": {"noise_steps": 100_000, "lse_temperatures": (1.0, 100.0)},
    "paper-replogle": {"score_hidden": 2048, "score_steps": 100_000},
    "paper-linear": {"noise_model": None},
    "paper-linear-1000": {"noise_model": None, "score_steps": 100_000},
    "fast": {
        "generator_hidden": 32,
        "generator_layers": 2,
        "generator_wide_layers": 1,
        "generator_wide_hidden": 128,
        "mc_samples": 512,
        "noise_batch_size": 64,
        "noise_steps": 6000,
        "noise_lr": 3e-3,
        "noise_warmup": 300,
        "n_states": 2000,
        "score_hidden": 256,
        "score_layers": 2,
        "embed_dim": 256,
        "n_levels": 30,
        "score_batch_size": 512,
        "score_steps": 16000,
        "score_lr": 2e-3,
        "weight_decay": 0.1,
        # the paper's 30 levels, each lasting as long as in its 500-step schedule (dt·steps =
        # 1e-6·500), with 20 steps: 25× fewer score evaluations (benchmarks/fast_vs_paper.py)
        "anneal_dt": 2.5e-5,
        "anneal_steps": 20,
        "checkpoint_every": 500,
    },
    "tiny": {
        "generator_hidden": 8,
        "generator_layers": 1,
        "generator_wide_layers": 1,
        "generator_wide_hidden": 16,
        "mc_samples": 64,
        "noise_batch_size": 16,
        "noise_steps": 40,
        "noise_lr": 1e-2,
        "noise_warmup": 5,
        "n_states": 128,
        "score_hidden": 32,
        "score_layers": 2,
        "embed_dim": 16,
        "n_levels": 10,
        "score_batch_size": 64,
        "score_steps": 40,
        "score_lr": 3e-3,
        "weight_decay": 0.01,
        "anneal_dt": 1e-4,
        "anneal_steps": 5,
        "checkpoint_every": 10,
        "progress_every": 10,
    },
}
# Opt-in departure from the paper (see the module docstring): the fast preset with a
# zero-inflated negative-binomial noise model.
PRESETS["fast-zinb"] = {**PRESETS["fast"], "noise_model": "zinb"}


def make_config(preset: str = "fast", **overrides) -> LCDConfig:
    """Configuration of a preset with keyword overrides.

    Parameters
    ----------
    preset
        One of :data:`PRESETS` (``"paper"``, ``"paper-norman"``, ``"paper-wessels"``,
        ``"paper-replogle"``, ``"paper-linear"``, ``"paper-linear-1000"``, ``"fast"``,
        ``"fast-zinb"``,
        ``"tiny"``).
    **overrides
        Any :class:`LCDConfig` field, e.g. ``noise_model=None`` or ``score_steps=1000``.

    Raises
    ------
    ConfigError
        For an unknown preset, an unknown field or an invalid value.
    """
    if preset not in PRESETS:
        raise ConfigError(
            f"Unknown LCD preset {preset!r}; choose one of {sorted(PRESETS)} "
            "(or pass individual hyperparameters as keyword overrides)."
        )
    values = {**PRESETS[preset], **overrides}
    return _build(values, preset)


def _build(values: dict, preset: str) -> LCDConfig:
    known = {f.name for f in dataclasses.fields(LCDConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"Unknown LCD hyperparameter(s) {unknown}; valid names are "
            f"{sorted(known - {'preset'})}."
        )
    if "lse_temperatures" in values:
        temps = values["lse_temperatures"]
        temps = (temps,) if isinstance(temps, int | float) else temps
        values["lse_temperatures"] = tuple(float(t) for t in temps)
    try:
        config = LCDConfig(**values, preset=preset)
    except TypeError as exc:  # pragma: no cover - guarded by the field check above
        raise ConfigError(str(exc)) from exc
    _validate(config)
    return config


def _validate(c: LCDConfig) -> None:
    positive_ints = [
        "generator_hidden",
        "generator_layers",
        "generator_wide_hidden",
        "mc_samples",
        "noise_batch_size",
        "noise_steps",
        "n_states",
        "score_hidden",
        "score_layers",
        "embed_dim",
        "n_levels",
        "score_batch_size",
        "score_steps",
        "anneal_steps",
        "condition_chunk_size",
        "checkpoint_every",
        "progress_every",
    ]
    for name in positive_ints:
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(
                f"LCD hyperparameter {name} must be a positive integer, got {value!r}."
            )
    if not isinstance(c.generator_wide_layers, int) or c.generator_wide_layers < 0:
        raise ConfigError(
            "generator_wide_layers must be a non-negative integer, got "
            f"{c.generator_wide_layers!r}."
        )
    if c.noise_model not in NOISE_MODELS:
        raise ConfigError(
            "noise_model must be 'zip' (the paper's), 'zinb' (opt-in negative binomial) or None "
            f"(train on screen.X directly), got {c.noise_model!r}."
        )
    positive_floats = [
        "noise_lr",
        "score_lr",
        "sigma_min",
        "sigma_max",
        "anneal_dt",
        "min_unit_scaling",
    ]
    for name in positive_floats:
        value = getattr(c, name)
        if not isinstance(value, int | float) or not value > 0:
            raise ConfigError(
                f"LCD hyperparameter {name} must be a positive number, got {value!r}."
            )
    if not c.sigma_max > c.sigma_min:
        raise ConfigError(
            f"sigma_max ({c.sigma_max}) must be larger than sigma_min ({c.sigma_min})."
        )
    if c.n_levels < 2:
        raise ConfigError(f"n_levels must be at least 2, got {c.n_levels}.")
    if not 0.0 <= c.noise_b2 < 1.0:
        raise ConfigError(f"noise_b2 must lie in [0, 1), got {c.noise_b2}.")
    if c.weight_decay < 0 or c.noise_grad_clip < 0 or c.score_grad_clip < 0:
        raise ConfigError("weight_decay, noise_grad_clip and score_grad_clip must be >= 0.")
    if not c.lse_temperatures or any(not t > 0 for t in c.lse_temperatures):
        raise ConfigError(
            f"lse_temperatures must be a non-empty tuple of positive numbers, got "
            f"{c.lse_temperatures!r}."
        )
    if c.devices is not None and (
        not isinstance(c.devices, int) or isinstance(c.devices, bool) or c.devices < 1
    ):
        raise ConfigError(
            f"devices must be a positive integer or None (all visible devices), got {c.devices!r}."
        )
    if c.noise_warmup < 0:
        raise ConfigError(f"noise_warmup must be >= 0, got {c.noise_warmup}.")
