"""``lcdiff benchmark``: every method on held-out perturbations, tables and plots in a folder."""

from __future__ import annotations

from pathlib import Path

import typer

from lcdiff.cli import app, check_output, check_preset, load_screen, preset_help


def _split_list(values: list[str] | None) -> list[str]:
    """Accept both ``--methods a,b`` and ``--methods a --methods b``."""
    items: list[str] = []
    for value in values or []:
        items.extend(v.strip() for v in value.split(",") if v.strip())
    return items


def _parse_folds(values: list[str]) -> list:
    return [int(v) if v.lstrip("-").isdigit() else v for v in _split_list(values)]


@app.command("benchmark")
def benchmark_command(
    data: Path = typer.Argument(
        ...,
        help="Screen as .h5ad: raw UMI counts (prepared here) or the output of lc.pp.prepare.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "-o", "--out", help="Folder for the tables and plots.", show_default=False
    ),
    methods: list[str] = typer.Option(
        ["control,pooled,additive,mean,linear,peper,lcd"],
        "--methods",
        help="Methods, comma-separated or repeated (control, pooled, additive, mean, linear, "
        "peper, lcd, gears, cpa; gears/cpa run in their own environments: lcdiff peers install).",
    ),
    folds: list[str] = typer.Option(
        ["1,2"], "--folds", help="Folds, comma-separated or repeated (1..10 or val)."
    ),
    scheme: str = typer.Option("paper", "--scheme", help="Split scheme: paper or random."),
    n_folds: int = typer.Option(
        10, "--n-folds", min=1, help="Paper scheme: folds of the cross-validation pool."
    ),
    n_val: int = typer.Option(
        20, "--n-val", min=0, help="Paper scheme: validation combinations (always trained on)."
    ),
    preset: str = typer.Option("auto", "--preset", help=preset_help("LCD preset")),
    perturbation_key: str = typer.Option(
        "perturbation", "--perturbation-key", help="obs column naming each cell's perturbation."
    ),
    control: str = typer.Option("ctrl", "--control", help="Label of the control cells."),
    n_genes: int = typer.Option(
        1000, "--n-genes", min=1, help="Genes to model when the screen is prepared here."
    ),
    min_cells: int = typer.Option(
        100, "--min-cells", min=2, help="Drop perturbations with fewer cells (when prepared here)."
    ),
    layer: str = typer.Option(
        None, "--layer", help="Layer with raw counts (default: X), when prepared here."
    ),
    n_cells: int = typer.Option(
        1000, "--n-cells", min=2, help="Predicted cells per held-out condition."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits, the methods and sampling."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Benchmark LCD against the baselines on held-out perturbations of a screen.

    Writes long.csv (metric, method, value, condition, fold, reason), summary.csv, summary.md
    (mean ± SEM, best bold, ties marked), failures.csv, timings.csv, splits.json and
    boxplots.png into the output folder.
    """
    from lcdiff.errors import ConfigError
    from lcdiff.eval.baselines import ALIASES, METHODS
    from lcdiff.eval.benchmark import benchmark

    check_output(out, force)
    check_preset(preset)
    method_list = _split_list(methods)
    unknown = [m for m in method_list if ALIASES.get(m.lower(), m.lower()) not in METHODS]
    if unknown or not method_list:
        raise ConfigError(f"Unknown or missing method(s) {unknown}; choose from {sorted(METHODS)}.")
    fold_list = _parse_folds(folds)
    if not fold_list:
        raise ConfigError("No folds given; pass e.g. --folds 1,2.")

    screen = load_screen(data, perturbation_key, control, n_genes, min_cells, layer)

    result = benchmark(
        screen,
        methods=method_list,
        scheme=scheme,
        folds=fold_list,
        lcd_preset=preset,
        out=out,
        progress=not quiet,
        seed=seed,
        n_cells=n_cells,
        force=force,
        split_options={"n_folds": n_folds, "n_val": n_val} if scheme == "paper" else None,
    )
    from lcdiff.eval.tables import to_markdown

    typer.echo(to_markdown(result.table()))
    if len(result.failures):
        typer.echo(f"{len(result.failures)} step(s) failed; see {out / 'failures.csv'}.", err=True)
    typer.echo(f"Wrote {out}/ (summary.md, long.csv, summary.csv, boxplots.png).")
