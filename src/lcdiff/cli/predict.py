"""``lcdiff predict``: sample cells of any perturbation (combination) from a saved model."""

from __future__ import annotations

from pathlib import Path

import typer

from lcdiff.cli import app, check_output, write_h5ad


def load_model(model_dir: Path):
    """Load a model folder written by ``lcdiff fit`` / ``LCD.save`` (typed errors on failure)."""
    from lcdiff.errors import InputNotFoundError, ModelFileError

    if not model_dir.exists():
        raise InputNotFoundError(
            f"Model folder {str(model_dir)!r} does not exist; write one with "
            "'lcdiff fit DATA.h5ad -o MODEL_DIR'."
        )
    if not model_dir.is_dir():
        raise ModelFileError(
            f"{str(model_dir)!r} is not a model folder; give the folder written by 'lcdiff fit'."
        )
    from lcdiff.model.lcd import LCD

    return LCD.load(model_dir)


@app.command("predict")
def predict_command(
    model_dir: Path = typer.Argument(
        ..., help="Model folder written by 'lcdiff fit'.", show_default=False
    ),
    labels: list[str] = typer.Argument(
        ...,
        help="Perturbations to predict: a gene ('KLF1') or a combination ('CEBPA+KLF1').",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "-o", "--out", help="Output .h5ad file of predicted cells.", show_default=False
    ),
    n_cells: int = typer.Option(1000, "--n-cells", min=1, help="Cells to sample per label."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the sampler."),
    anneal_steps: int | None = typer.Option(
        None,
        "--anneal-steps",
        min=1,
        help="Langevin steps per noise level (default: the model's setting).",
        show_default=False,
    ),
    anneal_dt: float | None = typer.Option(
        None,
        "--anneal-dt",
        help="Step-size constant of the sampler (default: the model's setting).",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Predict the expression distribution of perturbations, seen or unseen, as an .h5ad.

    The output has obs['perturbation'], X = log1p counts per 10k and layers['counts']. Labels
    are written in canonical form (genes sorted: STAT1+JAK2 becomes JAK2+STAT1).
    """
    from lcdiff.data.labels import canonical_label
    from lcdiff.errors import DataFormatError

    if out.suffix != ".h5ad":
        raise DataFormatError(
            f"Output {str(out)!r} must be an .h5ad file; name it e.g. 'predictions.h5ad'."
        )
    check_output(out, force)
    if out.is_dir():
        raise DataFormatError(f"Output {str(out)!r} is a folder; give a file name ending in .h5ad.")
    model = load_model(model_dir)
    canonical = [canonical_label(label, model.control) for label in labels]
    for label, name in zip(labels, canonical, strict=True):
        if label != name:
            typer.echo(
                f"Label {label!r} is predicted as {name!r} (the canonical form: genes sorted)."
            )
    if anneal_steps is not None or anneal_dt is not None:
        c = model.config
        typer.echo(
            f"Sampler: {anneal_steps or c.anneal_steps} steps per noise level, step size "
            f"{anneal_dt if anneal_dt is not None else c.anneal_dt:g} (the model's: "
            f"{c.anneal_steps}, {c.anneal_dt:g})."
        )
    pred = model.predict(  # the model canonicalises too and records the renamed labels
        list(labels), n_cells=n_cells, seed=seed, anneal_steps=anneal_steps, anneal_dt=anneal_dt
    )
    write_h5ad(pred, out)
    typer.echo(f"Wrote {pred.n_obs} predicted cells of {len(canonical)} label(s) to {out}.")
