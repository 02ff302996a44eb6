"""Files of the model: atomic writes, pytrees ↔ ``.npz``, saved models and checkpoints.

A saved model is a folder with two files:

- ``arrays.npz``: every array (parameters, standardizer, noise parameters), keys are tree paths;
- ``lcd.json``: ``format`` (``"lcdiff.LCD"``), ``format_version``, the lcdiff version, the
  configuration and metadata, the SHA-256 of ``arrays.npz`` and, under ``"checksums"``, the
  SHA-256 of every other entry (each configuration field separately).

Both files are covered: on load, the arrays must match their checksum and every entry of the JSON
must match its own, so an edited configuration, gene list or label list is refused with a
:class:`~lcdiff.errors.ModelFileError` that names what changed (sampler settings are changed at
prediction time instead: ``LCD.predict(..., anneal_steps=..., anneal_dt=...)``). The arrays are
written first and the JSON last, each atomically (temporary file in the same folder, then
``os.replace``), so a folder either holds a complete model or is refused on load.
Checkpoints are single ``.npz`` files holding the training state plus a JSON metadata string.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import jax
import numpy as np

from lcdiff._io import atomic_write_bytes
from lcdiff.errors import ModelFileError, OutputExistsError

MODEL_FORMAT = "lcdiff.LCD"
#: Version 2 added the checksums of the JSON entries; version 1 folders are still read (with a
#: warning that their lcd.json is unprotected).
MODEL_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
CHECKPOINT_FORMAT_VERSION = 1
MODEL_JSON = "lcd.json"
MODEL_ARRAYS = "arrays.npz"


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` archive of ``arrays`` as bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file; raises :class:`ModelFileError` if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ModelFileError(
            f"Cannot read the {what} at {path}: {exc}. The file is corrupt or incomplete; "
            "re-save the model (or delete the checkpoint folder to start training afresh)."
        ) from exc


def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)  # pragma: no cover


def flatten_tree(tree, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix/path/to/leaf: array}`` for every leaf of a pytree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join([prefix, *(_key_name(e) for e in path)]): np.asarray(leaf) for path, leaf in leaves
    }


def unflatten_tree(template, arrays: dict[str, np.ndarray], prefix: str, what: str):
    """Rebuild a pytree shaped like ``template`` from :func:`flatten_tree` output.

    Raises
    ------
    ModelFileError
        If a leaf is missing or has a different shape or dtype than the template's.
    """
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, ref in paths:
        name = "/".join([prefix, *(_key_name(e) for e in path)])
        if name not in arrays:
            raise ModelFileError(
                f"The {what} lacks the array {name!r}; it was written by an incompatible version "
                "or configuration."
            )
        value = arrays[name]
        ref_shape, ref_dtype = tuple(ref.shape), np.dtype(ref.dtype)
        if value.shape != ref_shape or value.dtype != ref_dtype:
            raise ModelFileError(
                f"The {what} has {name!r} with shape {value.shape} and dtype {value.dtype}, "
                f"expected {ref_shape} and {ref_dtype}; it belongs to another configuration."
            )
        leaves.append(value)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# saved models
# --------------------------------------------------------------------------------------------
def _canonical(value) -> bytes:
    """The JSON text that identifies ``value`` (keys sorted; as it reads back from JSON)."""
    return json.dumps(
        json.loads(json.dumps(value)), sort_keys=True, separators=(",", ":"), allow_nan=True
    ).encode()


def _entries(meta: dict) -> dict:
    """The checksummed entries of a model record: each top-level entry, and each configuration
    field on its own (``"config.anneal_dt"``), so that a refusal can name the field."""
    out = {}
    for key, value in meta.items():
        if key in ("format", "format_version", "arrays_sha256", "checksums"):
            continue
        if key == "config" and isinstance(value, dict):
            out.update({f"config.{field}": v for field, v in value.items()})
        else:
            out[key] = value
    return out


def record_checksums(meta: dict) -> dict[str, str]:
    """``{entry: SHA-256}`` of every entry of a model record (see :func:`_entries`)."""
    return {key: sha256(_canonical(value)) for key, value in sorted(_entries(meta).items())}


def changed_entries(meta: dict) -> list[str]:
    """Entries of a model record that differ from the checksums it was saved with.

    Returns
    -------
    Descriptions such as ``"config.anneal_dt changed"``, ``"genes changed"``, ``"seed removed"``
    or ``"extra added"``; empty if the record is as saved.
    """
    saved = meta.get("checksums")
    if not isinstance(saved, dict):
        return ["the checksums were removed"]
    now = record_checksums(meta)
    out = [f"{key} changed" for key in sorted(saved) if key in now and now[key] != saved[key]]
    out += [f"{key} removed" for key in sorted(saved) if key not in now]
    out += [f"{key} added" for key in sorted(now) if key not in saved]
    return out


def check_model_folder(folder: str | os.PathLike, force: bool = False) -> Path:
    """Refuse to save a model into a non-empty folder unless ``force``.

    Parameters
    ----------
    folder
        The destination folder (it may not exist yet).
    force
        Allow writing into a non-empty folder: a saved model there is replaced; other files are
        left alone (only ``lcd.json`` and ``arrays.npz`` are written).

    Raises
    ------
    ModelFileError
        If ``folder`` exists and is not a folder.
    OutputExistsError
        If ``folder`` is not empty and ``force`` is false.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ModelFileError(f"Cannot save the model to {folder}: it exists and is not a folder.")
    if force or not folder.is_dir():
        return folder
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return folder
    if MODEL_JSON in names:
        raise OutputExistsError(
            f"{folder} holds a saved model already; pass force=True to replace it, or save to a "
            "new folder."
        )
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise OutputExistsError(
        f"{folder} is not empty ({shown}) and is not a saved model; save to a new or empty "
        "folder (force=True writes lcd.json and arrays.npz beside those files)."
    )


def write_model(
    folder: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray], force: bool = False
) -> None:
    """Write a model folder (arrays first, then the JSON that names their checksums).

    Raises
    ------
    OutputExistsError
        If ``folder`` is not empty and ``force`` is false (:func:`check_model_folder`).
    """
    folder = check_model_folder(folder, force)
    folder.mkdir(parents=True, exist_ok=True)
    payload = npz_bytes(arrays)
    record = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, **meta}
    record["arrays_sha256"] = sha256(payload)
    record["checksums"] = record_checksums(record)
    atomic_write_bytes(folder / MODEL_ARRAYS, payload)
    atomic_write_bytes(folder / MODEL_JSON, json.dumps(record, indent=2).encode())


def read_model(folder: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model folder; returns (metadata, arrays).

    Raises
    ------
    ModelFileError
        If a file is missing, unreadable, of another format or version, the arrays do not
        match the checksum recorded in the JSON, or an entry of the JSON was changed after it
        was saved (the message names the entries).
    """
    folder = Path(folder)
    json_path, arrays_path = folder / MODEL_JSON, folder / MODEL_ARRAYS
    if not json_path.is_file() or not arrays_path.is_file():
        raise ModelFileError(
            f"{folder} is not a saved LCD model (expected {MODEL_JSON} and {MODEL_ARRAYS}); "
            "save one with model.save(folder) or 'lcdiff fit ... -o FOLDER'."
        )
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"Cannot read {json_path}: {exc}; the file is corrupt.") from exc
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{json_path} does not describe an lcdiff LCD model.")
    version = meta.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise ModelFileError(
            f"{folder} holds an LCD model in format version {version}; this lcdiff reads "
            f"versions {list(READABLE_FORMAT_VERSIONS)}. Use the lcdiff version that wrote it "
            f"({meta.get('lcdiff_version', 'unknown')}) or refit."
        )
    if version >= 2:
        changed = changed_entries(meta)
        if changed:
            problem = (
                f"{json_path} was changed after the model was saved ({'; '.join(changed)}), so "
                "the model cannot be trusted. Restore the file or refit; to sample with other "
                "settings, pass them at prediction time"
            )
            raise ModelFileError(
                f"{problem} (predict(..., anneal_steps=..., anneal_dt=...)) instead of editing "
                "the file.",
                cli=f"{problem} (lcdiff predict --anneal-steps N --anneal-dt DT) instead of "
                "editing the file.",
            )
    else:
        warnings.warn(
            f"{folder} was saved by an older lcdiff (model format 1) whose {MODEL_JSON} carries "
            "no checksums, so edits to it cannot be detected; load and save it again to protect "
            "it.",
            UserWarning,
            stacklevel=3,
        )
    payload = arrays_path.read_bytes()
    if sha256(payload) != meta.get("arrays_sha256"):
        raise ModelFileError(
            f"{arrays_path} does not match the checksum in {json_path}: the model files are "
            "corrupt or from different saves. Save the model again."
        )
    return meta, read_npz(arrays_path, "saved model")


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def write_checkpoint(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write a checkpoint ``.npz`` (metadata stored as a JSON string array)."""
    record = {"checkpoint_format_version": CHECKPOINT_FORMAT_VERSION, **meta}
    arrays = {**arrays, "__meta__": np.array(json.dumps(record))}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, npz_bytes(arrays))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a checkpoint written by :func:`write_checkpoint`; returns (metadata, arrays)."""
    arrays = read_npz(path, "checkpoint")
    if "__meta__" not in arrays:
        raise ModelFileError(f"{path} is not an lcdiff checkpoint (no metadata record).")
    meta = json.loads(str(arrays.pop("__meta__")))
    if meta.get("checkpoint_format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ModelFileError(
            f"{path} is a checkpoint of format version {meta.get('checkpoint_format_version')}; "
            f"this lcdiff reads version {CHECKPOINT_FORMAT_VERSION}. Delete it or use resume=False."
        )
    return meta, arrays
