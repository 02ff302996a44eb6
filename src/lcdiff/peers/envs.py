"""Peer environments: one virtual environment per peer method, never the core one.

GEARS and CPA pin stacks (torch, scvi-tools, old anndata and numpy, an old JAX) that conflict
with each other and with lcdiff's own (numpy 2, anndata 0.12, JAX 0.10). Each therefore lives
in its own virtual environment, created on request (``lcdiff peers install gears|cpa`` or
``make peers``) with ``python3 -m venv`` and pip from the package index, and lcdiff talks to it
only through files and a subprocess (:mod:`lcdiff.peers.contract`).

Where the environments live
    ``$LCDIFF_PEERS_DIR/<name>`` when that variable is set, otherwise
    ``$XDG_CACHE_HOME/lcdiff/peers/<name>`` (default ``~/.cache/lcdiff/peers/<name>``).
    ``lcdiff peers install NAME --prefix DIR`` puts one anywhere; point ``LCDIFF_PEER_<NAME>``
    (e.g. ``LCDIFF_PEER_GEARS``) at such a folder to use it.

An environment counts as installed once ``lcdiff-peer.json`` sits in its root: the installer
writes it (atomically) only after every package installed and the peer's import check passed,
so a half-finished install is never mistaken for a working one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lcdiff._io import atomic_write_text
from lcdiff.errors import ConfigError, DependencyError, PeerError

PEERS_DIR_ENV = "LCDIFF_PEERS_DIR"
MARKER = "lcdiff-peer.json"


@dataclass(frozen=True)
class PeerSpec:
    """What one peer environment holds and how it is checked.

    Attributes
    ----------
    name
        Method name in lcdiff (``"gears"``, ``"cpa"``).
    display_name
        Name in tables.
    distribution
        The peer's package on the index and its pinned version.
    requirements
        File name (in ``lcdiff/peers/requirements``) of the fully pinned stack.
    no_deps
        Packages installed afterwards with ``--no-deps`` (their declared requirements cannot be
        met on Python 3.11; the pinned stack provides what they import).
    import_check
        Python code run inside the environment after the install; it must exit 0.
    runner
        Module file (in ``lcdiff/peers``) run inside the environment by the contract.
    """

    name: str
    display_name: str
    distribution: str
    version: str
    requirements: str
    no_deps: tuple[str, ...] = ()
    import_check: str = ""
    runner: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


PEERS: dict[str, PeerSpec] = {
    "gears": PeerSpec(
        name="gears",
        display_name="GEARS",
        distribution="cell-gears",
        version="0.1.2",
        requirements="gears.txt",
        import_check="import torch, torch_geometric, gears; print(torch.__version__)",
        runner="gears_runner.py",
        notes=(
            "torch_geometric is an undeclared dependency of cell-gears",
            "the runner restores pandas.Series.nonzero (removed in pandas 2), which GEARS uses",
        ),
    ),
    "cpa": PeerSpec(
        name="cpa",
        display_name="CPA",
        distribution="cpa-tools",
        version="0.8.1",
        requirements="cpa.txt",
        no_deps=("cpa-tools==0.8.1",),
        import_check="import torch, scvi, cpa; print(scvi.__version__)",
        runner="cpa_runner.py",
        notes=(
            "cpa-tools 0.8.8 needs Python < 3.11; 0.8.1 is installed with --no-deps on a pinned "
            "legacy stack (scvi-tools 0.20.3, pytorch-lightning 1.9, anndata 0.9, numpy 1.26)",
        ),
    ),
}


def spec(name: str) -> PeerSpec:
    """The :class:`PeerSpec` of a peer by name.

    Raises
    ------
    ConfigError
        For an unknown peer.
    """
    key = str(name).lower()
    if key not in PEERS:
        raise ConfigError(f"Unknown peer {name!r}; choose from {sorted(PEERS)}.")
    return PEERS[key]


def peers_root() -> Path:
    """The folder that holds the default peer environments (see the module docstring)."""
    env = os.environ.get(PEERS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "lcdiff" / "peers"


def env_dir(name: str, prefix: str | os.PathLike | None = None) -> Path:
    """The folder of a peer's environment.

    Parameters
    ----------
    name
        Peer name.
    prefix
        An explicit folder; otherwise ``$LCDIFF_PEER_<NAME>``, else ``peers_root() / name``.
    """
    spec(name)
    if prefix is not None:
        return Path(prefix).expanduser()
    own = os.environ.get(f"LCDIFF_PEER_{name.upper()}")
    if own:
        return Path(own).expanduser()
    return peers_root() / name.lower()


def env_python(root: Path) -> Path:
    """The interpreter of a virtual environment rooted at ``root``."""
    if sys.platform == "win32":  # pragma: no cover - lcdiff's peers are tested on Linux
        return root / "Scripts" / "python.exe"
    return root / "bin" / "python"


@dataclass(frozen=True)
class PeerEnv:
    """An installed peer environment.

    Attributes
    ----------
    name
        Peer name.
    root
        Folder of the virtual environment.
    python
        Its interpreter.
    info
        The content of ``lcdiff-peer.json`` (versions, install time, size).
    """

    name: str
    root: Path
    python: Path
    info: dict

    @property
    def version(self) -> str:
        """Installed version of the peer's package."""
        return str(self.info.get("version", "unknown"))


def find(name: str, prefix: str | os.PathLike | None = None) -> PeerEnv:
    """The installed environment of a peer.

    Raises
    ------
    DependencyError
        When the environment is missing or unfinished; the message says how to create it.
    """
    s = spec(name)
    root = env_dir(name, prefix)
    hint = (
        f"create it with `lcdiff peers install {s.name}` (or `make peers`; about "
        f"{'1.7' if s.name == 'gears' else '2'} GB, needs the package index once), or point "
        f"LCDIFF_PEER_{s.name.upper()} / {PEERS_DIR_ENV} at an existing one"
    )
    marker = root / MARKER
    python = env_python(root)
    if not root.is_dir():
        raise DependencyError(
            f"The {s.display_name} environment ({s.distribution} in its own virtualenv) is not "
            f"installed (no folder {root}); {hint}."
        )
    if not marker.is_file() or not python.exists():
        raise DependencyError(
            f"The {s.display_name} environment at {root} is incomplete (no {MARKER}: the install "
            f"did not finish); {hint} (add --force to start over)."
        )
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise DependencyError(f"{marker} is unreadable ({exc}); reinstall: {hint}.") from exc
    return PeerEnv(name=s.name, root=root, python=python, info=info)


def is_installed(name: str, prefix: str | os.PathLike | None = None) -> bool:
    """Whether :func:`find` succeeds for this peer."""
    try:
        find(name, prefix)
    except DependencyError:
        return False
    return True


def requirements_path(name: str) -> Path:
    """The pinned requirements file of a peer, shipped inside the package."""
    return Path(str(resources.files("lcdiff.peers") / "requirements" / spec(name).requirements))


def runner_path(name: str) -> Path:
    """The script run inside the peer's environment."""
    return Path(str(resources.files("lcdiff.peers") / spec(name).runner))


def dir_size(path: str | os.PathLike) -> int:
    """Bytes used by the regular files under ``path`` (symbolic links not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                try:
                    total += os.path.getsize(p)
                except OSError:
                    pass
    return total


def install_commands(name: str, root: Path, python: str = "python3") -> list[list[str]]:
    """The commands :func:`install` runs, in order (a venv, the pinned stack, the no-deps part).

    Parameters
    ----------
    name
        Peer name.
    root
        Folder of the new environment.
    python
        Interpreter that creates the virtual environment (Python 3.11 is what the pins fit).
    """
    s = spec(name)
    py = str(env_python(root))
    pip = [py, "-m", "pip", "install", "--progress-bar", "off"]
    cmds = [
        [python, "-m", "venv", str(root)],
        [*pip, "--upgrade", "pip==24.3.1", "setuptools==80.9.0", "wheel==0.43.0"],
        [*pip, "-r", str(requirements_path(name))],
    ]
    if s.no_deps:
        cmds.append([*pip, "--no-deps", *s.no_deps])
    cmds.append([py, "-c", s.import_check])
    return cmds


def install(
    name: str,
    prefix: str | os.PathLike | None = None,
    *,
    python: str = "python3",
    force: bool = False,
    log: Callable[[str], None] = print,
    nice: int = 0,
) -> PeerEnv:
    """Create a peer's environment from its pinned requirements.

    Parameters
    ----------
    name
        ``"gears"`` or ``"cpa"``.
    prefix
        Folder of the environment (default :func:`env_dir`).
    python
        Interpreter used for ``-m venv`` (must be Python 3.11).
    force
        Remove an existing environment at that folder first.
    log
        Receives one line per step.
    nice
        Niceness added to every command (``nice -n``) on machines shared with other jobs.

    Returns
    -------
    PeerEnv

    Raises
    ------
    PeerError
        When a step fails (the message names the step and the end of its output); the folder
        is then left without its marker, so it never counts as installed.
    """
    s = spec(name)
    root = env_dir(name, prefix)
    if (root / MARKER).is_file() and not force:
        log(f"{s.display_name}: already installed at {root} (use --force to reinstall)")
        return find(name, prefix)
    if force and root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)
    started = time.time()
    for cmd in install_commands(name, root, python):
        full = (["nice", "-n", str(int(nice))] if nice else []) + cmd
        log(f"{s.display_name}: $ {' '.join(cmd)}")
        proc = subprocess.run(full, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise PeerError(
                f"Installing {s.display_name} failed at `{' '.join(cmd)}` (exit "
                f"{proc.returncode}):\n{tail}"
            )
    freeze = subprocess.run(
        [str(env_python(root)), "-m", "pip", "freeze"], capture_output=True, text=True
    ).stdout.split()
    version = next(
        (line.split("==")[1] for line in freeze if line.lower().startswith(s.distribution + "==")),
        s.version,
    )
    info = {
        "peer": s.name,
        "distribution": s.distribution,
        "version": version,
        "python": subprocess.run(
            [str(env_python(root)), "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "install_s": round(time.time() - started, 1),
        "size_bytes": dir_size(root),
        "requirements": s.requirements,
        "no_deps": list(s.no_deps),
        "packages": freeze,
        "notes": list(s.notes),
    }
    atomic_write_text(root / MARKER, json.dumps(info, indent=1) + "\n")
    log(
        f"{s.display_name}: installed {s.distribution} {version} at {root} "
        f"({info['size_bytes'] / 1e9:.2f} GB, {info['install_s']:.0f} s)"
    )
    return find(name, prefix)
