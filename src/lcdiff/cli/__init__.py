"""The ``lcdiff`` command line.

Each sub-command lives in its own module of this package and registers itself on ``app``.
``main`` turns every :class:`lcdiff.errors.LcdiffError` (and common file errors) into a
one-line message and a non-zero exit code; ``--debug`` shows the traceback instead. Messages
and warnings are shown in command-line terms (:func:`lcdiff.errors.cli_message`: flags, not
keyword arguments), each on one line, warnings as ``warning: ...`` without source paths.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import typer

app = typer.Typer(
    name="lcdiff",
    help="Latent causal diffusions (LCD) and CLIPR for single-cell perturbation screens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags without a "<bool>" type, copyable text
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
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        return _main(argv)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one line ``warning: ...`` in command-line terms (no source path)."""
    from lcdiff.errors import cli_message

    text = cli_message(message) if isinstance(message, Warning) else str(message)
    typer.echo(f"warning: {_first_line(text)}", err=True)


def _main(argv: list[str]) -> int:
    from lcdiff.errors import LcdiffError, cli_message

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
            typer.echo(f"error: {_first_line(cli_message(exc)) or _first_line(exc)}", err=True)
            return EXIT_BAD_INPUT
        typer.echo(
            f"error: {type(exc).__name__}: {_first_line(exc)} "
            "(run again with --debug for the traceback)",
            err=True,
        )
        return 1
    # Without standalone mode, click returns the code of a ``typer.Exit`` instead of raising.
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


# --- helpers shared by the command modules ---------------------------------------------------
def preset_help(what: str = "LCD hyperparameters") -> str:
    """Help text of a ``--preset`` option, listing every preset of :mod:`lcdiff.model.config`."""
    from lcdiff.model.config import PRESETS

    return f"{what}, one of: {', '.join(PRESETS)} (see the README, 'Fitting LCD')."


def check_preset(preset: str) -> None:
    """Refuse an unknown ``--preset`` before any work, in command-line terms."""
    from lcdiff.errors import ConfigError
    from lcdiff.model.config import PRESETS

    if preset not in PRESETS:
        raise ConfigError(
            f"Unknown LCD preset {preset!r}; choose one of {list(PRESETS)}.",
            cli=f"Unknown --preset {preset!r}; choose one of: {', '.join(PRESETS)}.",
        )


def parse_settings(values: list[str] | None, preset: str) -> dict:
    """``--set NAME=VALUE`` options as LCD hyperparameter overrides (checked against ``preset``).

    VALUE is read as JSON where it can be (``1024``, ``0.5``, ``null``, ``[1, 20]``), else as a
    string (``--set noise_model=zinb``).

    Raises
    ------
    ConfigError
        For a malformed option, an unknown hyperparameter or an invalid value.
    """
    import json

    from lcdiff.errors import ConfigError
    from lcdiff.model.config import make_config

    overrides: dict = {}
    for item in values or []:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"Malformed setting {item!r}; write NAME=VALUE, e.g. score_hidden=1024.",
                cli=f"Malformed --set {item!r}; write --set NAME=VALUE, e.g. "
                "--set score_hidden=1024.",
            )
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.strip()
        overrides[name] = tuple(value) if isinstance(value, list) else value
    try:
        make_config(preset, **overrides)
    except ConfigError as exc:
        raise ConfigError(str(exc), cli=f"--set: {_first_line(exc)}") from exc
    return overrides


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
    """Write an AnnData to ``path`` atomically (temporary file in the same folder, then rename).

    Raises
    ------
    NonFiniteOutputError
        If ``X``, a layer or ``obsm`` holds NaN or infinite values (nothing is written).
    """
    from lcdiff._io import atomic_write_h5ad, check_prediction

    check_prediction(adata, f"The output {Path(path).name}")
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
