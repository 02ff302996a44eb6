"""The ``lcdiff`` command line.

Each sub-command lives in its own module of this package and registers itself on ``app``.
``main`` turns every :class:`lcdiff.errors.LcdiffError` (and common file errors) into a
one-line message and a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="lcdiff",
    help="Latent causal diffusions (LCD) and CLIPR for single-cell perturbation screens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Sub-command modules, imported in this order (each defines commands on ``app``).
COMMAND_MODULES: list[str] = []

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
    """Entry point of the ``lcdiff`` script; returns the exit code."""
    from lcdiff.errors import LcdiffError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _load_commands()
    try:
        app(args=argv, prog_name="lcdiff", standalone_mode=False)
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
        known = (LcdiffError, FileNotFoundError, PermissionError, IsADirectoryError)
        if isinstance(exc, known):
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            typer.echo(f"error: {msg}", err=True)
            return EXIT_BAD_INPUT
        typer.echo(
            f"error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
            err=True,
        )
        return 1
    return 0
