"""``lcdiff fit``: prepare a screen (if needed), fit LCD, save the model folder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from lcdiff.cli import app, check_output, load_screen, replace_folder


@app.command("fit")
def fit_command(
    data: Path = typer.Argument(
        ...,
        help="Screen as .h5ad: raw UMI counts (prepared here) or the output of lc.pp.prepare.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "-o", "--out", help="Folder to save the fitted model in.", show_default=False
    ),
    perturbation_key: str = typer.Option(
        "perturbation", "--perturbation-key", help="obs column naming each cell's perturbation."
    ),
    control: str = typer.Option("ctrl", "--control", help="Label of the control cells."),
    n_genes: int = typer.Option(
        1000, "--n-genes", min=1, help="Genes to model (perturbed genes are always kept)."
    ),
    min_cells: int = typer.Option(
        100, "--min-cells", min=2, help="Drop perturbations with fewer cells than this."
    ),
    layer: str | None = typer.Option(
        None, "--layer", help="Layer holding the raw counts (default: X)."
    ),
    preset: str = typer.Option(
        "auto",
        "--preset",
        help="Hyperparameters: auto (default: sized to the screen), fast, fast-zinb, tiny, "
        "paper or paper-norman/-wessels/-replogle/-linear (see README).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the fit."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fit LCD on a screen and save the model folder (load it with lc.LCD.load)."""
    from lcdiff.model.config import make_config

    check_output(out, force, marker="lcd.json")  # LCD.save writes lcd.json
    make_config(preset)  # refuse an unknown preset before reading anything
    started = time.perf_counter()
    screen = load_screen(data, perturbation_key, control, n_genes, min_cells, layer)
    model = _fit(screen, preset, seed, progress=not quiet)
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tmp.chmod(0o755)  # mkdtemp makes the folder private; a model folder is meant to be shared
    try:
        model.save(tmp)
        replace_folder(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - started
    typer.echo(f"Saved the fitted model to {out} ({elapsed:.0f} s).")


def _fit(screen, preset: str, seed: int, progress: bool):
    from lcdiff.model.lcd import LCD

    return LCD(screen, preset=preset, seed=seed).fit(progress=progress)
