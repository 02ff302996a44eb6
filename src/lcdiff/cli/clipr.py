"""``lcdiff clipr``: the causal-effect matrix of a saved model, as a CSV file."""

from __future__ import annotations

from pathlib import Path

import typer

from lcdiff.cli import app, check_output


def load_model(model_dir: Path):
    """Load a saved model folder (typed errors for a missing or wrong path)."""
    from lcdiff.cli.predict import load_model as load_saved_model

    return load_saved_model(model_dir)


def write_csv(frame, path: Path) -> Path:
    """Write a DataFrame as CSV atomically (temporary file in the same folder, then replace)."""
    from lcdiff._io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, frame.to_csv().encode("utf-8"))
    return path


@app.command("clipr")
def clipr_command(
    model_dir: Path = typer.Argument(
        ..., help="Model folder written by 'lcdiff fit'.", show_default=False
    ),
    out: Path = typer.Option(
        ...,
        "-o",
        "--out",
        help="Output CSV (rows = source gene, columns = target gene).",
        show_default=False,
    ),
    method: str = typer.Option(
        "paper",
        "--method",
        help="'paper' (fixed points + drift, the published estimator) or "
        "'moments' (directed estimator from stationary moments).",
    ),
    tikhonov: float = typer.Option(1e-2, "--tikhonov", min=0.0, help="Ridge of the paper solve."),
    solver: str = typer.Option("tikhonov", "--solver", help="'tikhonov', 'pinv' or 'tsvd'."),
    tsvd: float | None = typer.Option(
        None, "--tsvd", help="Fraction of singular values for 'tsvd'."
    ),
    reference: str = typer.Option(
        "origin",
        "--reference",
        help="Paper method: where the drift is read. 'origin' (the "
        "state origin, the published estimator) or 'control' (the control mean, inside the "
        "data; fixed points centred there).",
    ),
    moments_from: str = typer.Option(
        "score",
        "--moments-from",
        help="Moments method: 'score' (fixed points + score "
        "Jacobian) or 'samples' (stationary samples).",
    ),
    n_cells: int = typer.Option(
        2000, "--n-cells", min=2, help="Samples per condition for --moments-from samples."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed of the moments method."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Compute CLIPR causal effects of a saved model and write them as a gene × gene CSV.

    Entry (i, j) is the direct effect of gene i (row, source) on gene j (column, target).
    """
    from lcdiff.causal.clipr import METHODS, REFERENCES, SOLVERS, CliprError, clipr
    from lcdiff.errors import DataFormatError

    if method not in METHODS:
        raise CliprError(f"--method must be one of {METHODS}; got {method!r}.")
    if solver not in SOLVERS:
        raise CliprError(f"--solver must be one of {SOLVERS}; got {solver!r}.")
    if reference not in REFERENCES:
        raise CliprError(f"--reference must be one of {REFERENCES}; got {reference!r}.")
    if reference != "origin" and method != "paper":
        raise CliprError(
            f"--reference {reference} applies to --method paper only; drop it for {method}."
        )
    if out.suffix.lower() != ".csv":
        raise DataFormatError(f"Output {str(out)!r} must be a .csv file, e.g. 'effects.csv'.")
    check_output(out, force)
    meta_path = out.with_suffix(".json")
    check_output(meta_path, force)
    model = load_model(model_dir)
    effects = clipr(
        model,
        method=method,
        tikhonov=tikhonov,
        solver=solver,
        tsvd=tsvd,
        reference=reference,
        moments_from=moments_from,
        n_cells=n_cells,
        seed=seed,
    )
    import json

    from lcdiff import __version__
    from lcdiff._io import atomic_write_text, check_finite

    check_finite(effects, "The CLIPR effect matrix")
    record = {
        "file": out.name,
        "rows": "source gene",
        "columns": "target gene",
        "entry": "direct effect of the row gene on the column gene",
        "units": effects.attrs.get("units", ""),
        "method": method,
        "reference": reference if method == "paper" else None,
        "model": str(model_dir),
        "lcdiff_version": __version__,
    }
    write_csv(effects, out)
    atomic_write_text(meta_path, json.dumps(record, indent=2))
    what = method if method != "paper" else f"paper, drift at the {reference}"
    typer.echo(f"Wrote the {effects.shape[0]} × {effects.shape[1]} CLIPR matrix ({what}) to {out}.")
    typer.echo(f"Units: {record['units']} (recorded in {meta_path}).")
