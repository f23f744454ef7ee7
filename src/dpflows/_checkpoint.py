"""Atomic, pickle-free checkpoints for long runs.

A checkpoint is one ``.npz`` file of plain arrays plus a JSON header stored as bytes. It is written
to a temporary file, flushed, fsync'ed and renamed (``os.replace``), so a reader never sees a torn
file. Loading uses ``allow_pickle=False``: a pickle placed at a checkpoint path is refused with
:class:`CheckpointError`, never unpickled. The last ``keep`` checkpoints are kept so that a file
truncated by a crash of the disk (not of the writer) falls back to the previous one with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["CheckpointError", "ResumeMismatchError", "atomic_write_bytes", "fingerprint"]

_FORMAT = 1
_PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used (not an npz of arrays, or malformed)."""


class ResumeMismatchError(ValueError):
    """A checkpoint was written by a run with different arguments; the message names the field."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync of the folder."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(tree: Any) -> str:
    """sha256 of a pytree's structure, array bytes, dtypes and shapes, and non-array leaves' names."""
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    h.update(str(treedef).encode())
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            arr = np.asarray(leaf)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        elif callable(leaf):
            h.update(f"{getattr(leaf, '__module__', '')}.{getattr(leaf, '__qualname__', repr(leaf))}".encode())
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()[:16]


def fingerprint(**parts: Any) -> dict[str, str]:
    """One digest per named part, so that a mismatch can name the argument that changed."""
    return {name: (value if isinstance(value, str | int | float) else _digest(value)) for name, value in parts.items()}


def _encode_meta(meta: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)


def save(folder: Path, step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any], *, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically into ``folder`` and prune all but the newest ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    payload["__meta__"] = _encode_meta({**meta, "format": _FORMAT, "step": int(step)})
    import io

    buf = io.BytesIO()
    np.savez(buf, **payload)
    path = folder / f"{_PREFIX}{step:010d}.npz"
    atomic_write_bytes(path, buf.getvalue())
    for old in _list(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def _list(folder: Path) -> list[Path]:
    """Checkpoint files, newest first."""
    return sorted(Path(folder).glob(f"{_PREFIX}*.npz"), reverse=True)


def clean_tmp(folder: Path) -> None:
    """Delete temporary files left by a writer that was killed mid-write."""
    for tmp in Path(folder).glob("*.tmp"):
        tmp.unlink(missing_ok=True)


def load_latest(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Load the newest readable checkpoint in ``folder`` (``None`` if there is none).

    A truncated or corrupt file is skipped with a warning naming it; a file that holds pickled
    data raises :class:`CheckpointError` (it is never unpickled).
    """
    folder = Path(folder)
    if not folder.exists():
        return None
    clean_tmp(folder)
    for path in _list(folder):
        try:
            # Open the file ourselves: np.load leaks its handle when a truncated archive fails.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                if not isinstance(data, np.lib.npyio.NpzFile):
                    raise CheckpointError(f"checkpoint {path} is not an npz archive")
                meta = json.loads(bytes(data["__meta__"]).decode())
                arrays = {k[2:]: data[k] for k in data.files if k.startswith("a/")}
        except ValueError as err:
            if "pickle" in str(err):
                raise CheckpointError(
                    f"checkpoint {path} holds pickled data; dpflows never unpickles. Delete the file "
                    "or point the run at another folder."
                ) from err
            warnings.warn(f"skipping unreadable checkpoint {path}: {err}", stacklevel=3)
            continue
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(err).__name__}: {err}", stacklevel=3)
            continue
        if meta.get("format") != _FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {meta.get('format')}, expected {_FORMAT}")
        return arrays, meta
    return None


def check_meta(meta: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Raise :class:`ResumeMismatchError` naming the first field where ``meta`` differs."""
    for name, value in expected.items():
        if meta.get(name) != value:
            raise ResumeMismatchError(
                f"cannot resume from {path}: {name} differs from the run that wrote it "
                f"(checkpoint: {meta.get(name)!r}, now: {value!r}). Use the same arguments, "
                "or a fresh checkpoint folder."
            )
