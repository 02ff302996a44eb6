"""The ``lcdiff`` command line.

Each sub-command lives in its own module of this package and registers itself on ``app``.
``main`` turns every :class:`lcdiff.errors.LcdiffError` (and common file errors) into a
one-line message and a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

app = typer.Typer(
    name="lcdiff",
    help="Latent causal diffusions (LCD) and CLIPR for single-cell perturbation screens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Sub-command modules, imported in this order (each defines commands on ``app``).
COMMAND_MODULES: list[str] = ["demo", "fit", "predict", "benchmark", "clipr", "simulate", "peers"]

EXIT_BAD_INPUT = 2


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Latent causal diffusions (LCD) and CLIPR for single-cell perturbation screens."""


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"lcdiff.cli.{name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lcdiff`` script; returns the exit code.

    Every refused input (an :class:`~lcdiff.errors.LcdiffError` or a file-system error) becomes
    one line ``error: ...`` on stderr and exit code 2; any other failure exits with 1 and the
    same one-line form. ``--debug`` re-raises so that the traceback is shown.
    """
    from lcdiff.errors import LcdiffError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _load_commands()
    try:
        rv = app(args=argv, prog_name="lcdiff", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        # Usage errors of the argument parser (typer/click) know how to show themselves.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        if isinstance(exc, typer.Exit):
            return int(exc.exit_code)
        if isinstance(exc, typer.Abort):
            typer.echo("Aborted.", err=True)
            return 1
        if debug:
            raise
        if isinstance(exc, LcdiffError | OSError):
            typer.echo(f"error: {_first_line(exc)}", err=True)
            return EXIT_BAD_INPUT
        typer.echo(
            f"error: {type(exc).__name__}: {_first_line(exc)} "
            "(run again with --debug for the traceback)",
            err=True,
        )
        return 1
    # Without standalone mode, click returns the code of a ``typer.Exit`` instead of raising.
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- helpers shared by the command modules ---------------------------------------------------
def read_h5ad(path: str | Path):
    """Read an ``.h5ad`` file, turning the usual failures into typed one-line errors.

    Raises
    ------
    InputNotFoundError
        If ``path`` does not exist.
    DataFormatError
        If ``path`` is a folder or not a readable AnnData (``.h5ad``) file.
    """
    import anndata

    from lcdiff.errors import DataFormatError, InputNotFoundError

    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"Input file {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise DataFormatError(
            f"Input {str(path)!r} is a folder; give an AnnData file (.h5ad), e.g. one written by "
            "adata.write_h5ad(...)."
        )
    try:
        return anndata.read_h5ad(path)
    except Exception as exc:  # noqa: BLE001 - h5py/anndata raise many types for a bad file
        raise DataFormatError(
            f"Cannot read {str(path)!r} as an AnnData .h5ad file ({_first_line(exc)}); "
            "convert it with anndata (adata.write_h5ad) first."
        ) from exc


def check_output(path: str | Path, force: bool = False, marker: str | None = None) -> Path:
    """Refuse an output path that exists (unless ``force``) or cannot be written.

    Nothing is created: the nearest existing ancestor must be a writable folder, so that a long
    computation does not end in a failed write.

    Parameters
    ----------
    path
        The output file or folder.
    force
        Allow replacing an existing ``path``.
    marker
        For folder outputs: a file that the command itself writes into the folder (e.g.
        ``"report.html"``). Even with ``force``, a non-empty folder without it is refused, so
        that ``-o .`` or a typo never replaces a folder lcdiff did not write.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``force`` is false, or (with ``marker``) it is a non-empty folder
        that this command did not write, or it holds the current working directory.
    OutputNotWritableError
        If ``path`` cannot be created or replaced.
    """
    import os
    import tempfile

    from lcdiff.errors import OutputExistsError, OutputNotWritableError

    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(
            f"Output {str(path)!r} exists already; pass --force to overwrite it or choose "
            "another -o/--out path."
        )
    if path.is_dir() and marker is not None:
        resolved = path.resolve()
        if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
            raise OutputExistsError(
                f"Output {str(path)!r} is (or holds) the current folder; choose a new -o/--out "
                "folder."
            )
        if any(path.iterdir()) and not (path / marker).exists():
            raise OutputExistsError(
                f"Output folder {str(path)!r} is not empty and was not written by lcdiff (no "
                f"{marker}); --force only replaces lcdiff's own output. Choose another "
                "-o/--out folder."
            )
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    why = None
    if not ancestor.is_dir():
        why = f"{str(ancestor)!r} is not a folder"
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        why = f"no write permission in {str(ancestor)!r}"
    else:
        try:  # os.access says yes to root even on read-only mounts: try for real
            with tempfile.TemporaryFile(dir=ancestor):
                pass
        except OSError as exc:
            why = f"cannot create files in {str(ancestor)!r} ({exc.strerror or exc})"
    if why is not None:
        raise OutputNotWritableError(
            f"Cannot write output {str(path)!r}: {why}; choose another -o/--out path."
        )
    return path


def write_h5ad(adata, path: str | Path) -> Path:
    """Write an AnnData to ``path`` atomically (temporary file in the same folder, then rename)."""
    from lcdiff._io import atomic_write_h5ad

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_h5ad(adata, path)


def replace_folder(tmp_dir: str | Path, path: str | Path) -> Path:
    """Move a finished folder ``tmp_dir`` to ``path``, replacing what was there.

    ``tmp_dir`` must be in the same parent folder as ``path`` so that the final rename is atomic;
    an existing ``path`` (file or folder) is removed only once the new content is complete.
    """
    import os
    import shutil

    path, tmp_dir = Path(path), Path(tmp_dir)
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp_dir, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp_dir, path)
    return path


def load_screen(
    path: str | Path,
    perturbation_key: str = "perturbation",
    control: str = "ctrl",
    n_genes: int = 1000,
    min_cells: int = 100,
    layer: str | None = None,
):
    """Read an ``.h5ad`` screen and prepare it unless it is prepared already (with messages).

    The commands that take a screen (``fit``, ``benchmark``) share this, so that they accept the
    same files and options. ``n_genes`` at least the number of genes keeps every gene passing
    QC.

    Returns
    -------
    A prepared screen (the prepared-screen contract of :mod:`lcdiff.data.screen`).
    """
    from lcdiff.data.preprocess import prepare
    from lcdiff.data.screen import screen_info
    from lcdiff.errors import NotPreparedError

    adata = read_h5ad(path)
    typer.echo(f"Read {path}: {adata.n_obs} cells × {adata.n_vars} genes.")
    try:
        screen_info(adata)
        prepared = "counts" in adata.layers
    except NotPreparedError:
        prepared = False
    if prepared:
        typer.echo("The file is a prepared screen; using it as it is.")
        return adata
    screen = prepare(
        adata,
        perturbation_key=perturbation_key,
        control=control,
        n_genes=n_genes if n_genes < adata.n_vars else None,
        layer=layer,
        min_cells_per_perturbation=min_cells,
    )
    typer.echo(f"Prepared: {screen.n_obs} cells × {screen.n_vars} genes.")
    return screen
