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
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Predict the expression distribution of perturbations, seen or unseen, as an .h5ad.

    The output has obs['perturbation'], X = log1p counts per 10k and layers['counts'].
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
    pred = model.predict(canonical, n_cells=n_cells, seed=seed)
    write_h5ad(pred, out)
    typer.echo(f"Wrote {pred.n_obs} predicted cells of {len(canonical)} label(s) to {out}.")
