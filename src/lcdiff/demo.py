"""The demo: LCD and CLIPR end to end on a screen with a known answer, ending in a report.

:func:`run` is what ``lcdiff demo`` (and ``make demo``) calls::

    import lcdiff as lc
    result = lc.demo.run("lcdiff-demo", preset="fast", seed=0)
    result["report"]        # path of report.html
    result["headline"]      # the numbers that matter

Steps, on ``lc.datasets.toy_screen()`` (simulated counts whose causal network is known):

1. hold out a random quarter of the combinations (``lc.pp.split`` scheme ``"random"``: every
   target gene of a held-out combination stays in training), and prepare the screen with the
   held-out labels declared so that gene selection does not look at them;
2. fit LCD on the training conditions;
3. predict the held-out doubles with LCD and every baseline and score all of them with the
   benchmark runner (one fold, LCD fitted once);
4. read the causal effect matrix off the fitted model with both CLIPR estimators and score it
   against the simulator's network;
5. write ``report.html`` with the tables (CSV), figures (PNG), predictions (``.h5ad``) and the
   fitted model beside it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from lcdiff.report import format_value

__all__ = ["BASELINES", "run"]

#: Baselines scored next to LCD (see ``lc.baselines``).
BASELINES: tuple[str, ...] = ("control", "pooled", "additive", "mean", "linear", "peper")
#: Human names of the methods in the report.
DISPLAY_NAMES: dict[str, str] = {
    "lcd": "LCD",
    "control": "control cells",
    "pooled": "pooled perturbed cells",
    "additive": "additive (SALT)",
    "mean": "mean shift",
    "linear": "linear",
    "peper": "PEPER",
}
#: Metrics of the headline table, with a plain-language description.
HEADLINE_METRICS: dict[str, str] = {
    "mmd_20": "MMD on the 20 marker genes (distribution distance, lower is better)",
    "mmd": "MMD on all genes (lower is better)",
    "ed_20": "energy distance on the marker genes (lower is better)",
    "rmse_m_20": "RMSE of the mean on the marker genes (lower is better)",
    "pearson_systema": "correlation of predicted and observed mean changes (higher is better)",
    "classify_topk_auroc_delta_20": "AUROC of finding the 20 most changed genes (higher is better)",
}
HELDOUT_FRACTION = 0.25
N_CELLS = 500  # predicted cells per held-out condition
CLIPR_CELLS = 500  # sampled cells per queried condition for the moments estimator of CLIPR


@dataclass(frozen=True)
class _Settings:
    """The user's choices for one demo run."""

    preset: str
    seed: int
    progress: bool
    n_cells: int
    baselines: tuple[str, ...]
    toy: bool  # running on lc.datasets.toy_screen() (not a screen passed by the caller)


class _Progress:
    """Numbered progress lines with the elapsed time (printed to stdout)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.step = total, enabled, 0
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        self.step += 1
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"[{self.step}/{self.total}] {message} (t = {elapsed:.0f} s)", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class _PrefittedLCD:
    """An LCD already fitted on the split's training conditions, behind the baseline interface.

    The benchmark runner calls ``fit`` once per fold; here it keeps the fitted model, so LCD is
    trained once for the demo (the runner's own ``"lcd"`` method would train it again).
    """

    name = "lcd"
    display_name = "LCD"

    def __init__(self, model) -> None:
        self.model = model

    def __deepcopy__(self, memo):  # the runner copies methods per fold; nothing to copy here
        return self

    def fit(self, screen, split=None) -> _PrefittedLCD:
        return self

    def cannot_predict(self, label: str) -> str | None:
        from lcdiff.data.labels import parse_label

        missing = [g for g in parse_label(label, self.model.control) if g not in self.model.genes]
        return f"target gene(s) {missing} are not modelled" if missing else None

    def predict(self, labels, n_cells: int = 1000, seed: int = 0) -> AnnData:
        return self.model.predict(labels, n_cells=n_cells, seed=seed)


def _true_network(adata: AnnData) -> pd.DataFrame:
    """The simulator's causal matrix (row = source, column = target) as a gene-labelled frame."""
    from lcdiff.errors import DataFormatError

    if "causal_matrix" not in adata.varp:
        raise DataFormatError(
            "The demo screen has no varp['causal_matrix'] (the true network); run the demo on "
            "lc.datasets.toy_screen() or a screen from lc.simulate.screen()."
        )
    genes = list(map(str, adata.var_names))
    return pd.DataFrame(np.asarray(adata.varp["causal_matrix"]), index=genes, columns=genes)


def _score_clipr(effects: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Causal metrics of an effect matrix on the genes it shares with the true network."""
    from lcdiff.eval import causal_metrics

    genes = [g for g in effects.index if g in truth.index and g in effects.columns]
    return causal_metrics(effects.loc[genes, genes], truth.loc[genes, genes])


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from lcdiff import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    packages = ", ".join(f"{p} {installed(p)}" for p in ("jax", "numpy", "anndata", "scanpy"))
    return f"lcdiff {__version__}, {packages}, python {platform.python_version()}"


def _describe_screen(screen: AnnData) -> str:
    from lcdiff.data.labels import parse_label
    from lcdiff.data.screen import conditions, control_label

    control = control_label(screen)
    sizes = [len(parse_label(lab, control)) for lab in conditions(screen)]
    return (
        f"{screen.n_obs} cells × {screen.n_vars} genes; {sizes.count(1)} single and "
        f"{sizes.count(2)} double perturbations plus control"
    )


def _headline_table(summary: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Methods × headline metrics (means over the held-out conditions)."""
    sub = summary[summary["metric"].isin(HEADLINE_METRICS)]
    table = sub.pivot(index="method", columns="metric", values="mean")
    table = table.reindex(index=[m for m in methods if m in table.index])
    table = table[[m for m in HEADLINE_METRICS if m in table.columns]]
    table = table.dropna(axis=1, how="all")  # e.g. a top-k metric with k >= the number of genes
    table.index = pd.Index([DISPLAY_NAMES.get(m, m) for m in table.index], name="method")
    return table


def _verdict(summary: pd.DataFrame, metric: str) -> str:
    """One plain sentence: where LCD ranks on ``metric`` and how it compares with the best."""
    sub = summary[summary["metric"] == metric].dropna(subset=["mean"])
    if "lcd" not in set(sub["method"]):
        return ""
    ascending = not metric.startswith(("pearson", "classify"))
    sub = sub.sort_values("mean", ascending=ascending).reset_index(drop=True)
    rank = int(sub.index[sub["method"] == "lcd"][0]) + 1
    lcd = float(sub.loc[rank - 1, "mean"])
    text = f"On {metric}, LCD ranks {rank} of {len(sub)} methods ({format_value(lcd)})"
    if rank > 1:
        best = sub.loc[0]
        name = DISPLAY_NAMES.get(best["method"], best["method"])
        text += f"; the best is {name} ({format_value(float(best['mean']))})"
        if bool(sub.loc[rank - 1, "tied"]):
            text += ", which a t-test cannot tell apart from LCD"
    return text + "."


def _most_shifted(screen: AnnData, labels: list[str], control: str, k: int) -> list[str]:
    """The ``k`` labels whose observed mean moves furthest from the control mean."""
    from lcdiff.data.screen import condition_cells

    ctrl = condition_cells(screen, control).mean(0)
    shift = {
        lab: float(np.linalg.norm(condition_cells(screen, lab).mean(0) - ctrl)) for lab in labels
    }
    return sorted(labels, key=lambda lab: -shift[lab])[:k]


def _save_png(fig, path: Path) -> bytes:
    from lcdiff.report import figure_to_png

    png = figure_to_png(fig)
    path.write_bytes(png)
    return png


# The demo fits what a user gets from lc.LCD(screen): the screen-sized default configuration.
DEMO_PRESET = "auto"


def _noise_model_description(noise_model) -> str:
    return {
        "zip": "zero-inflated Poisson (the paper's)",
        "zinb": "zero-inflated negative binomial (opt-in; departs from the paper's Poisson)",
        None: "none (states observed directly)",
    }.get(noise_model, str(noise_model))


def run(
    out: str | os.PathLike,
    preset: str = DEMO_PRESET,
    seed: int = 0,
    progress: bool = True,
    *,
    force: bool = False,
    adata: AnnData | None = None,
    n_cells: int = N_CELLS,
    baselines: tuple[str, ...] = BASELINES,
) -> dict:
    """Run the demo and write ``out/report.html`` with its tables, figures and predictions.

    Parameters
    ----------
    out
        Output folder; written as a whole at the end (a temporary folder beside it until then).
    preset
        LCD preset. The default ``"auto"`` is what ``lc.LCD(screen)`` uses (sized to the screen,
        with the zero-inflated negative-binomial noise model and the Gaussian score head);
        ``"fast"`` keeps the paper's zero-inflated Poisson and score head; ``"tiny"`` is a smoke
        run.
    seed
        Seed of the held-out set, the fit and every sampler.
    progress
        Print numbered progress lines and LCD's progress bars.
    force
        Replace an existing ``out``.
    adata
        The raw screen to run on (default ``lc.datasets.toy_screen()``); it needs
        ``obs["perturbation"]`` with control ``"ctrl"``, singles and doubles, and the true
        network in ``varp["causal_matrix"]``.
    n_cells
        Predicted cells per held-out condition.
    baselines
        Baselines scored next to LCD.

    Returns
    -------
    dict with ``report`` (Path), ``out`` (Path), ``headline`` (label → number),
    ``summary_lines`` (what the command prints at the end), ``benchmark`` (the
    :class:`~lcdiff.eval.benchmark.BenchmarkResult`), ``causal`` (DataFrame estimator × causal
    metric), ``effects`` (estimator → effect DataFrame), ``split`` and ``wall_time_s``.

    Raises
    ------
    OutputExistsError, OutputNotWritableError
        If ``out`` exists (without ``force``) or cannot be written; checked before any work.
    """
    import matplotlib

    matplotlib.use("Agg")  # the demo only writes files; never needs a display

    import lcdiff as lc
    from lcdiff.cli import check_output, replace_folder
    from lcdiff.model.config import make_config

    out = check_output(out, force, marker="report.html").absolute()
    make_config(preset)  # refuse an unknown preset before any work
    step = _Progress(total=6, enabled=progress)  # one per step(...) call below

    step("Loading the toy screen" if adata is None else "Loading the screen")
    raw = lc.datasets.toy_screen() if adata is None else adata
    truth = _true_network(raw)
    # Hold out combinations before preparing, so that gene selection does not look at them;
    # then re-split the prepared screen (QC may have dropped a condition).
    held = lc.pp.split(
        raw.obs["perturbation"].astype(str),
        scheme="random",
        test_fraction=HELDOUT_FRACTION,
        seed=seed,
    ).test
    screen = lc.pp.prepare(raw, n_genes=None, test_labels=held)
    present = set(screen.obs["perturbation"].astype(str))
    split = lc.pp.split(
        screen, scheme="custom", test=[lab for lab in held if lab in present], seed=seed
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tmp.chmod(0o755)  # mkdtemp makes the folder private; the results are meant to be shared
    try:
        settings = _Settings(preset, seed, progress, n_cells, tuple(baselines), adata is None)
        result = _run_in(tmp, screen, truth, split, settings, step)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result["out"] = out
    result["report"] = out / "report.html"
    return result


def _run_in(
    folder: Path, screen: AnnData, truth: pd.DataFrame, split, settings: _Settings, step
) -> dict:
    """Fit, predict, score, run CLIPR and write every output into ``folder``."""
    import lcdiff as lc
    from lcdiff._io import check_finite
    from lcdiff.cli import write_h5ad
    from lcdiff.data.screen import control_label

    preset, seed, progress = settings.preset, settings.seed, settings.progress
    n_cells, baselines = settings.n_cells, settings.baselines
    control = control_label(screen)
    test = list(split.test)
    for sub in ("figures", "predictions", "causal"):
        (folder / sub).mkdir()
    split.save(folder / "split.json")

    step(f"Fitting LCD (preset {preset!r}) on {len(split.train)} training conditions")
    fit_started = time.perf_counter()
    model = lc.LCD(split.subset(screen, "train"), preset=preset, seed=seed).fit(progress=progress)
    fit_s = time.perf_counter() - fit_started
    model.save(folder / "model")

    step(f"Predicting {len(test)} held-out doubles with LCD and {len(baselines)} baselines")
    bench = lc.eval.benchmark(
        screen,
        methods=[*baselines, _PrefittedLCD(model)],
        splits=[split],
        folds=["demo"],
        progress=progress,
        seed=seed,
        n_cells=n_cells,
        keep_predictions=True,
    )
    bench.save(folder / "benchmark", plots=False)
    methods = ["lcd", *baselines]
    predictions = {m: p for (_, m), p in bench.predictions.items()}
    if "lcd" not in predictions:
        from lcdiff.errors import ModelError

        why = "; ".join(f"{r.stage}: {r.error}" for r in bench.failures.itertuples())
        raise ModelError(f"LCD could not predict the held-out conditions ({why}).")
    for name, pred in predictions.items():
        write_h5ad(pred, folder / "predictions" / f"{name}.h5ad")  # refuses NaN/inf cells
    summary = bench.summary

    step("Reading causal effects off the model with CLIPR (paper and moments estimators)")
    effects = {
        "paper": lc.tl.clipr(model, method="paper"),
        # the moments estimator samples every queried condition: fewer cells keep it to ~a minute
        "moments": lc.tl.clipr(model, method="moments", n_cells=CLIPR_CELLS, seed=seed),
    }
    causal = pd.DataFrame({m: _score_clipr(e, truth) for m, e in effects.items()}).T
    causal.index.name = "estimator"
    check_finite(causal, "The CLIPR causal metrics")
    for method, frame in effects.items():
        frame.to_csv(folder / "causal" / f"clipr_{method}.csv")
    truth.to_csv(folder / "causal" / "true_network.csv")
    causal.to_csv(folder / "causal" / "causal_metrics.csv")
    units = {f"clipr_{m}.csv": frame.attrs.get("units", "") for m, frame in effects.items()}
    units["true_network.csv"] = "the simulator's drift Jacobian at control (its own units)"
    (folder / "causal" / "units.json").write_text(json.dumps(units, indent=2))

    step("Drawing the figures")
    figures, examples, n_modules = _figures(
        folder / "figures", screen, predictions, bench, test, control, effects, truth
    )

    step("Writing the report")
    mean_of = summary.set_index(["method", "metric"])["mean"]
    rival = _best_other(summary, "mmd_20")
    headline = {
        "MMD (marker genes), LCD": float(mean_of.get(("lcd", "mmd_20"), np.nan)),
        f"MMD (marker genes), {rival} (best other method)": float(
            mean_of.get((rival, "mmd_20"), np.nan)
        ),
        "CLIPR causal AUROC (paper)": float(causal.loc["paper", "causal_auroc"]),
        "CLIPR causal AUROC (moments)": float(causal.loc["moments", "causal_auroc"]),
    }
    zeros = _zero_fractions(screen, predictions, test, control)
    wall = step.elapsed
    metadata = _metadata(screen, split, settings, fit_s, wall, model.config.noise_model)
    sections = _sections(
        summary, methods, bench, causal, figures, test, examples, n_modules, zeros, effects
    )
    sections.insert(1, training_checks_section(model.diagnostics))
    lc.report.write_report(
        folder / "report.html",
        sections,
        title="lcdiff demo: LCD and CLIPR on a simulated screen",
        subtitle=(
            "Can LCD predict the cells of double perturbations it never saw, better than simple "
            "baselines? Does CLIPR recover the true causal network?"
        ),
        metadata=metadata,
        headline=headline,
    )
    record = {"headline": headline, "metadata": metadata}
    check_finite(np.array(list(headline.values())), "The demo's headline numbers")
    (folder / "summary.json").write_text(json.dumps(record, indent=2, default=str))
    lines = [*_summary_lines(headline, len(test), rival), f"Wall time: {wall:.0f} s"]
    return {
        "headline": headline,
        "summary_lines": lines,
        "benchmark": bench,
        "causal": causal,
        "effects": effects,
        "split": split,
        "model": model,
        "wall_time_s": wall,
    }


def _metadata(screen, split, settings: _Settings, fit_s: float, wall: float, noise_model) -> dict:
    """What was run, for the report's first section and summary.json."""
    test = list(split.test)
    return {
        "data": (
            "lc.datasets.toy_screen(): simulated counts with a known causal network"
            if settings.toy
            else "the screen passed to lc.demo.run (its varp['causal_matrix'] is the truth)"
        ),
        "screen": _describe_screen(screen),
        "held out": f"{len(test)} combinations (never seen in training): " + ", ".join(test),
        "training conditions": f"{len(split.train)} (control, the singles, the other combinations)",
        "LCD preset": settings.preset,
        "LCD noise model": _noise_model_description(noise_model),
        "seed": settings.seed,
        "predicted cells per condition": settings.n_cells,
        "LCD fit time (s)": round(fit_s, 1),
        "wall time (s)": round(wall, 1),
        "versions": _versions(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU core(s), {sys.platform}",
        "command": (
            f"lcdiff demo --preset {settings.preset} --seed {settings.seed}"
            if settings.toy
            else f"lc.demo.run(out, preset={settings.preset!r}, seed={settings.seed}, adata=...)"
        ),
    }


def _best_other(summary: pd.DataFrame, metric: str) -> str:
    """The method other than LCD with the best mean ``metric`` (``"additive"`` if none)."""
    sub = summary[(summary["metric"] == metric) & (summary["method"] != "lcd")]
    sub = sub.dropna(subset=["mean"])
    if not len(sub):
        return "additive"
    ascending = not metric.startswith(("pearson", "classify"))
    return str(sub.sort_values("mean", ascending=ascending).iloc[0]["method"])


def _zero_fractions(screen, predictions, labels, control, n_markers: int = 5) -> pd.DataFrame:
    """Fraction of cells with zero counts, observed vs predicted, on each held-out double's top
    marker genes; one row per (double, gene), columns ``observed`` and one per method.

    Counts come from ``layers["counts"]`` where a method has them (LCD), else from ``X`` (a
    log1p value of 0 is a zero count).
    """
    from lcdiff.data.normalize import dense
    from lcdiff.data.screen import condition_mask

    markers = (screen.uns.get("lcdiff", {}) or {}).get("markers", {}) or {}
    genes = list(map(str, screen.var_names))
    rows = []
    for label in labels:
        chosen = [g for g in list(markers.get(label, []))[:n_markers] if g in genes]
        if not chosen:
            continue
        idx = [genes.index(g) for g in chosen]
        observed = dense(screen.layers["counts"][condition_mask(screen, label)][:, idx])
        row_values = {"observed": (observed == 0).mean(0)}
        for name, pred in predictions.items():
            cells = pred.obs["perturbation"].astype(str).to_numpy() == label
            pred_genes = list(map(str, pred.var_names))
            if not cells.any() or any(g not in pred_genes for g in chosen):
                continue
            matrix = pred.layers["counts"] if "counts" in pred.layers else pred.X
            cols = [pred_genes.index(g) for g in chosen]
            row_values[name] = (dense(matrix[cells][:, cols]) <= 0).mean(0)
        for j, gene in enumerate(chosen):
            rows.append(
                {"double": label, "gene": gene, **{k: float(v[j]) for k, v in row_values.items()}}
            )
    return pd.DataFrame(rows)


def _summary_lines(headline: dict, n_test: int, rival: str = "additive") -> list[str]:
    """The lines ``lcdiff demo`` prints at the end."""
    other = next(
        (v for k, v in headline.items() if k.startswith("MMD") and "best other" in k), np.nan
    )
    return [
        f"Held-out doubles ({n_test}), MMD on their marker genes (lower is better): "
        f"LCD {headline['MMD (marker genes), LCD']:.4g} vs {rival} (best other method) "
        f"{other:.4g}",
        f"CLIPR causal AUROC against the true network (0.5 = chance): "
        f"paper {headline['CLIPR causal AUROC (paper)']:.3f}, "
        f"moments {headline['CLIPR causal AUROC (moments)']:.3f}",
    ]


def _figures(folder, screen, predictions, bench, test, control, effects, truth):
    """Draw and save (PNG) the figures; returns (name → PNG bytes, the example doubles)."""
    from lcdiff.plot.benchmark import benchmark_boxplots
    from lcdiff.plot.predictions import marker_distributions, mean_shift_scatter

    shown = {DISPLAY_NAMES["lcd"]: predictions["lcd"]}
    if "additive" in predictions:
        shown[DISPLAY_NAMES["additive"]] = predictions["additive"]
    examples = _most_shifted(screen, test, control, k=3)
    figures = {
        "benchmark": _save_png(
            benchmark_boxplots(bench.long, metrics=("mmd_20", "rmse_m_20", "pearson_systema")),
            folder / "benchmark.png",
        ),
        "markers": _save_png(
            marker_distributions(screen, shown, examples, n_genes=5), folder / "markers.png"
        ),
        "mean_shift": _save_png(
            mean_shift_scatter(screen, shown, labels=test, control=control),
            folder / "mean_shift.png",
        ),
    }
    causal_fig, n_modules = _causal_figure(effects, truth)
    figures["causal"] = _save_png(causal_fig, folder / "causal_map.png")
    return figures, examples, n_modules


def _causal_figure(effects: dict[str, pd.DataFrame], truth: pd.DataFrame):
    """True network | CLIPR paper | CLIPR moments, all in the module order of the paper map."""
    import matplotlib.pyplot as plt

    from lcdiff.causal.modules import gene_modules
    from lcdiff.plot.causal import effects_heatmap

    paper = effects["paper"]
    genes = [g for g in paper.index if g in truth.index]
    modules = gene_modules(paper.loc[genes, genes])
    panels = {"true network (simulator)": truth.loc[genes, genes]}
    panels.update({f"CLIPR, {name} estimator": e.loc[genes, genes] for name, e in effects.items()})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.2))
    for ax, (title, frame) in zip(axes, panels.items(), strict=True):
        effects_heatmap(frame, modules=modules, ax=ax, title=title, show_labels=False)
    fig.tight_layout()
    n_modules = int(modules.labels[modules.labels >= 0].nunique())
    return fig, n_modules


def training_checks_section(diagnostics: dict):
    """The report section of ``LCD.diagnostics``: did each training stage learn its part?"""
    from lcdiff.model.diagnostics import MAX_NOISE_RMSE_RATIO, MIN_SCORE_CLOSED, summary_lines
    from lcdiff.report import Section, Table, Text

    blocks = [
        Text(
            "After training, lcdiff checks each stage on its own (lcdiff.model.diagnostics). "
            + " ".join(summary_lines(diagnostics))
        )
    ]
    score = diagnostics.get("score")
    if score:
        frame = pd.DataFrame(
            {
                "sigma": score["sigma"],
                "loss, skip-only": score["skip_only"],
                "loss, trained": score["trained"],
                "loss, per-gene Gaussian": score["gaussian"],
                "gap closed": [np.nan if c is None else c for c in score["closed"]],
            }
        ).set_index("sigma")
        blocks.append(
            Table(
                frame,
                caption=(
                    "Stage B, per noise level: denoising loss of the trained score against a "
                    "network that learned nothing (skip-only) and against the exact score of a "
                    "per-gene Gaussian fit of each condition, on fresh states; 'gap closed' = "
                    "(skip-only − trained) / (skip-only − Gaussian). Below "
                    f"{MIN_SCORE_CLOSED} at small sigma, sampling will not reproduce the "
                    "training conditions."
                ),
            )
        )
    noise = diagnostics.get("noise")
    if noise:
        frame = pd.DataFrame(noise["per_condition"]).set_index("condition")
        blocks.append(
            Table(
                frame[["mean_rmse_ratio", "var_ratio", "zeros_decoded", "zeros_observed"]],
                caption=(
                    "Stage A, per training condition: counts decoded from its generator against "
                    "its observed cells (log1p CP10k): error of the per-gene means relative to "
                    "the sampling floor (1 = as close as two halves of the data; above "
                    f"{MAX_NOISE_RMSE_RATIO:g} fails), median ratio of per-gene variances, and "
                    "the fraction of zero counts."
                ),
            )
        )
    return Section("Did training work?", blocks)


def _zero_blocks(zeros: pd.DataFrame, examples: list[str]) -> list:
    """Report blocks: zero fractions on the marker genes, observed vs predicted."""
    from lcdiff.report import Table, Text

    if not len(zeros) or "lcd" not in zeros.columns:
        return []
    gap = zeros["lcd"] - zeros["observed"]
    worst = zeros.loc[gap.idxmax()]
    shown = zeros[zeros["double"].isin(examples)].set_index(["double", "gene"])
    shown = shown.rename(columns={m: DISPLAY_NAMES.get(m, m) for m in shown.columns})
    text = (
        "Counts have many zeros; a model can match the mean yet put too many or too few cells at "
        "zero. Over the top-5 marker genes of every held-out double, LCD's fraction of zero "
        f"counts differs from the observed one by {gap.abs().mean():.1%} on average (largest "
        f"excess: {worst['gene']} in {worst['double']}, {worst['lcd']:.1%} predicted vs "
        f"{worst['observed']:.1%} observed)."
    )
    return [
        Text(text),
        Table(
            shown,
            caption="Fraction of cells with zero counts on the marker genes of the three doubles "
            "above (LCD: its decoded counts; other methods: cells at 0 on the log1p scale).",
        ),
    ]


def _sections(
    summary, methods, bench, causal, figures, test, examples, n_modules, zeros=None, effects=None
) -> list:
    from lcdiff.report import Image, Section, Table, Text

    table = _headline_table(summary, methods)
    best = {m: ("max" if m.startswith(("pearson", "classify")) else "min") for m in table.columns}
    legend = pd.DataFrame(
        {"what it measures": [HEADLINE_METRICS[m] for m in table.columns]},
        index=pd.Index(list(table.columns), name="metric"),
    )
    n = len(test)
    verdict = _verdict(summary, "mmd_20")
    blocks = [
        Text(
            f"Each method predicted {n} double perturbations that were held out of training; "
            "each gene they target was perturbed in training. Every number below is the "
            f"mean over these {n} conditions of a comparison between predicted and observed "
            "cells on the log1p counts-per-10k scale. The best value of each column is bold."
            + (f"\n\n{verdict}" if verdict else "")
        ),
        Table(table, caption="Methods × headline metrics on the held-out doubles.", best=best),
        Table(legend, caption="What each metric measures."),
        Image(
            figures["benchmark"],
            caption="One box per method over the held-out doubles (each point is one double).",
        ),
    ]
    if len(bench.failures):
        failed = "; ".join(
            f"{r.method} ({r.stage}): {r.error}" for r in bench.failures.itertuples()
        )
        blocks.append(Text(f"Methods that failed and are missing above: {failed}"))
    examples_list = list(examples)
    examples = ", ".join(examples)
    prediction_blocks = [
        Text(
            "LCD predicts whole distributions of cells, not just mean expression. Here are the "
            f"three held-out doubles that change expression the most ({examples})."
        ),
        Image(
            figures["markers"],
            caption="Rows: held-out doubles. Columns: their top marker genes. Grey: observed "
            "cells; lines: cells predicted by LCD and by the additive baseline (control cells "
            "shifted by the sum of the two single-perturbation effects). The closer a line "
            "follows the grey histogram, the better.",
        ),
        Image(
            figures["mean_shift"],
            caption="Each point is one gene in one held-out double: how much its mean changed "
            "from control cells in the observed data (x) and in the prediction (y). Points on "
            "the diagonal are predicted exactly. The additive baseline adds up the two single "
            "effects, so it can be right only where the two perturbations do not interact; "
            "each panel's title gives the correlation and the error over all points.",
        ),
    ]
    causal_blocks = [
        Text(
            "CLIPR reads a gene × gene matrix of direct causal effects (row = source gene, "
            "column = target gene) off the fitted model. The 'paper' estimator linearizes the "
            "learned drift around its fixed points; the 'moments' estimator solves for the "
            "drift from the means and covariance of the model's states. The toy screen was "
            "simulated from a known network, so we can score both."
        ),
        Table(
            causal,
            caption="Causal metrics against the true network (off-diagonal entries). AUROC: "
            "how well the effect sizes rank true activating/repressing edges above absent ones "
            "(0.5 = chance, 1 = perfect; below 0.5 the estimate has the signs the wrong way "
            "round). Pearson: correlation of estimated and true effects. F1: agreement of the "
            "signs (activating / repressing / none), with the estimate cut to as many edges as "
            "the true network has (its largest entries), so its units do not matter.",
            best={"causal_auroc": "max", "causal_pearson": "max", "causal_f1": "max"},
        ),
        Image(
            figures["causal"],
            caption="Gene × gene effect maps (row = source gene, column = target gene; red = "
            "activation, blue = repression), all three with the genes in the same order, found "
            "by clustering the CLIPR paper map"
            + (
                f" into {n_modules} module{'s' if n_modules != 1 else ''} (groups of genes that "
                "act on each other strongly, "
                "marked by the coloured bar on top)"
                if n_modules
                else " (no module of at least 5 genes at the default cut)"
            )
            + ". A good estimate looks like the true network on the left.",
        ),
    ]
    prediction_blocks += _zero_blocks(zeros if zeros is not None else pd.DataFrame(), examples_list)
    if effects:
        units = "; ".join(f"{m}: {e.attrs.get('units', '?')}" for m, e in effects.items())
        causal_blocks.insert(1, Text(f"Units of the CLIPR matrices. {units}."))
    return [
        Section("How well does LCD predict unseen combinations?", blocks),
        Section("Predicted and observed cells", prediction_blocks),
        Section("Causal effects (CLIPR)", causal_blocks),
        Section(
            "Files",
            [
                Text(
                    "Beside this report: benchmark/ (long.csv: every metric of every method and "
                    "held-out double; summary.csv: mean ± SEM), causal/ (the CLIPR matrices, "
                    "the true network and the causal metrics as CSV), figures/ (the PNGs "
                    "above), predictions/ (predicted cells of every method, .h5ad), model/ "
                    "(the fitted LCD; try 'lcdiff predict model A+B -o pred.h5ad'), "
                    "split.json and summary.json."
                )
            ],
        ),
    ]
