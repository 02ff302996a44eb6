"""``lcdiff peers``: create and inspect the environments of the peer methods (GEARS, CPA)."""

from __future__ import annotations

from pathlib import Path

import typer

from lcdiff.cli import app

peers_app = typer.Typer(
    help="Environments of the peer methods GEARS and CPA (each in its own virtualenv).",
    no_args_is_help=True,
)
app.add_typer(peers_app, name="peers")


@peers_app.command("install")
def install_command(
    names: list[str] = typer.Argument(..., help="Peers to install: gears, cpa (or all)."),
    prefix: Path = typer.Option(
        None,
        "--prefix",
        help="Folder of the environment (one peer only). Default: $LCDIFF_PEERS_DIR/<name> or "
        "~/.cache/lcdiff/peers/<name>.",
    ),
    python: str = typer.Option(
        "python3", "--python", help="Interpreter that creates the venv (Python 3.11)."
    ),
    force: bool = typer.Option(False, "--force", help="Remove an existing environment first."),
    nice: int = typer.Option(0, "--nice", min=0, max=19, help="Run pip with this niceness."),
) -> None:
    """Create a peer's virtual environment from its pinned requirements (needs the index once)."""
    from lcdiff.errors import ConfigError
    from lcdiff.peers import envs

    wanted = sorted(envs.PEERS) if [n.lower() for n in names] == ["all"] else names
    for name in wanted:
        envs.spec(name)  # refuse unknown names before installing anything
    if prefix is not None and len(wanted) != 1:
        raise ConfigError("--prefix takes one peer at a time.")
    for name in wanted:
        envs.install(name, prefix, python=python, force=force, log=typer.echo, nice=nice)


@peers_app.command("list")
def list_command() -> None:
    """Show where each peer environment lives, whether it is installed, its version and size."""
    from lcdiff.errors import DependencyError
    from lcdiff.peers import envs

    for name, spec in envs.PEERS.items():
        root = envs.env_dir(name)
        try:
            env = envs.find(name)
        except DependencyError:
            typer.echo(f"{name}\tnot installed\t{root}\t(lcdiff peers install {name})")
            continue
        size = env.info.get("size_bytes", 0) / 1e9
        typer.echo(f"{name}\t{spec.distribution} {env.version}\t{root}\t{size:.2f} GB")
