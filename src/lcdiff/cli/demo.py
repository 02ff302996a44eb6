"""``lcdiff demo``: the whole method on the embedded toy screen, ending in an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from lcdiff.cli import app, preset_help


@app.command("demo")
def demo_command(
    out: Path = typer.Option(
        Path("lcdiff-demo"), "-o", "--out", help="Output folder (report.html, tables, figures)."
    ),
    preset: str = typer.Option(
        "auto",
        "--preset",
        help=preset_help("LCD hyperparameters (auto: sized to the screen)"),
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the split, the fit and sampling."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
) -> None:
    """Fit LCD and CLIPR on the embedded toy screen and write an HTML report.

    Holds out a set of double perturbations, predicts them with LCD and the baselines, scores
    the predictions, scores both CLIPR estimators against the simulator's true network, and
    writes OUT/report.html with the tables (CSV), figures (PNG), predictions (.h5ad) and the
    fitted model beside it.
    """
    from lcdiff.cli import check_preset
    from lcdiff.demo import run

    check_preset(preset)
    result = run(out, preset=preset, seed=seed, progress=not quiet, force=force)
    typer.echo("")
    for line in result["summary_lines"]:
        typer.echo(line)
    typer.echo(f"Report: {result['report']}")
