"""``lcdiff fit``: prepare a screen (if needed), fit LCD, save the model folder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from lcdiff.cli import (
    app,
    check_output,
    check_preset,
    load_screen,
    parse_settings,
    preset_help,
    replace_folder,
)


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
    preset: str = typer.Option("auto", "--preset", help=preset_help()),
    settings: list[str] = typer.Option(
        [],
        "--set",
        help="Override one LCD hyperparameter of the preset, NAME=VALUE (repeatable), e.g. "
        "--set score_hidden=1024.",
        show_default=False,
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the fit."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fit LCD on a screen and save the model folder (load it with lc.LCD.load)."""
    check_output(out, force, marker="lcd.json")  # LCD.save writes lcd.json
    check_preset(preset)  # refuse an unknown preset or setting before reading anything
    overrides = parse_settings(settings, preset)
    started = time.perf_counter()
    screen = load_screen(data, perturbation_key, control, n_genes, min_cells, layer)
    model = _fit(screen, preset, seed, progress=not quiet, overrides=overrides)
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


def _fit(screen, preset: str, seed: int, progress: bool, overrides: dict | None = None):
    from lcdiff.model.lcd import LCD

    model = LCD(screen, preset=preset, seed=seed, **(overrides or {}))
    for line in label_lines(model):
        typer.echo(line)
    return model.fit(progress=progress)


def label_lines(model, shown: int = 12) -> list[str]:
    """What a model trains on: the kept labels, and the dropped ones grouped by reason."""

    def listing(items: list[str]) -> str:
        more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    perturbations = [lab for lab in model.train_labels if lab != model.control]
    lines = [
        f"Training on {len(model.train_labels)} conditions: the control {model.control!r} and "
        f"{len(perturbations)} perturbation(s) ({listing(perturbations)})."
    ]
    groups: dict[str, list[str]] = {}
    for label, reason in model.dropped_labels.items():
        head, _, detail = reason.partition(" (")
        groups.setdefault(head, []).append(f"{label} ({detail}" if detail else label)
    if groups:
        n = len(model.dropped_labels)
        lines.append(f"Not trained on {n} label(s) of the screen:")
        lines += [f"  {head}: {listing(items)}" for head, items in groups.items()]
    return lines
