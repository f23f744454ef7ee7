"""Atomic, pickle-free checkpoints for long runs.

A checkpoint is one ``.npz`` file of plain arrays plus a JSON header stored as bytes. It is written
to a temporary file, flushed, fsync'ed and renamed (``os.replace``), so a reader never sees a torn
file. Loading uses ``allow_pickle=False``: a pickle placed at a checkpoint path is refused with
:class:`CheckpointError`, never unpickled. The last ``keep`` checkpoints are kept so that a file
truncated by a crash of the disk (not of the writer), or overwritten with bytes that are neither a
zip archive nor a pickle, falls back to the previous one with a warning. A checkpoint whose state
holds NaN (or +inf) is refused, naming the leaf: resuming it would only continue a broken run.

Temporary files are named per writer (``<name>.<pid>.<random>.tmp``), so two writers never share
one, and :func:`clean_tmp` deletes only the temporary files of writers that are gone. A whole run
folder is guarded by :func:`folder_lock`: an exclusive ``flock`` on a lock file next to the folder,
held for the whole run, so that ``--resume``/``--overwrite`` never touch a live run's files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickletools
import re
import secrets
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = [
    "CheckpointError",
    "FolderLockedError",
    "ResumeMismatchError",
    "atomic_write_bytes",
    "check_finite",
    "fingerprint",
    "folder_lock",
    "is_stale_tmp",
]

_FORMAT = 1
_PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used (not an npz of arrays, or malformed)."""


class ResumeMismatchError(ValueError):
    """A checkpoint was written by a run with different arguments; the message names the field."""


class FolderLockedError(RuntimeError):
    """Another live run holds the lock of an output folder; the message names the folder and its pid."""


# A writer's temporary file: "<target name>.<pid>.<16 hex>.tmp".
_TMP_RE = re.compile(r"^.+\.(\d+)\.[0-9a-f]{16}\.tmp$")
# A temporary file older than this is stale even if its pid is alive (the pid may have been reused).
_TMP_MAX_AGE_S = 3600.0


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync of the folder.

    The temporary file's name holds the writer's pid and a random suffix, so concurrent writers never
    share one and :func:`clean_tmp` can tell a live writer's file from a dead one's.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:  # pragma: no cover - e.g. pid out of range
        return False
    return True


def is_stale_tmp(path: Path, *, now: float | None = None) -> bool:
    """True if temporary file ``path`` belongs to no live writer.

    A file named by :func:`atomic_write_bytes` is stale when its pid is no longer alive, or when it
    is older than an hour (the pid may have been reused). Any other ``*.tmp`` name was not written by
    this version of dpflows and is stale.
    """
    m = _TMP_RE.match(path.name)
    if m is None:
        return True
    pid = int(m.group(1))
    if pid != os.getpid() and not _pid_alive(pid):
        return True
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > _TMP_MAX_AGE_S


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on run folder ``folder`` for the duration of the ``with`` block.

    The lock is an ``fcntl.flock`` on ``.<name>.lock`` next to the folder (so that deleting or
    replacing the folder itself never drops it), created atomically with ``O_CREAT``; it holds the
    owner's pid. The lock is released when the block exits or when the process dies (the kernel
    drops ``flock`` locks with the last descriptor), so a killed run never leaves a stale lock.

    Raises:
        FolderLockedError: another live process holds the lock; the message names the folder and
            the holder's pid. Raised at once (the call never waits).

    Yields:
        The path of the lock file.
    """
    import fcntl  # POSIX only; imported here so that importing dpflows works everywhere

    folder = Path(folder)
    target = folder.resolve()  # "runs/x/.." or "." name the folder they resolve to
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise FolderLockedError(
                f"output folder {folder} is in use by another dpflows run (pid {_read_pid(lock_path)}); "
                "wait for it to finish, or use another output folder"
            ) from None
        # The previous holder unlinks the lock file on release; if we locked an unlinked file,
        # a newer lock file may exist at the path: retry on that one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()  # while still holding the lock: see the samestat check above
        os.close(fd)


def _read_pid(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


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


def clean_tmp(folder: Path, *, all_stale: bool = False) -> None:
    """Delete temporary files left by writers that were killed mid-write.

    Only files of writers that are gone are deleted (:func:`is_stale_tmp`), so a live writer in
    another process keeps its file. ``all_stale=True`` deletes every ``*.tmp``: only for a caller
    that holds :func:`folder_lock` on the folder, where no other writer can be live.
    """
    for tmp in Path(folder).glob("*.tmp"):
        if all_stale or is_stale_tmp(tmp):
            tmp.unlink(missing_ok=True)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _looks_pickled(path: Path) -> bool:
    """True if ``path`` parses as a pickle opcode stream (disassembled, never executed)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
        if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # protocol 2-5 header
            return True
        fh.seek(0)
        try:
            ops = list(pickletools.genops(fh))
        except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
            return False
    return bool(ops) and ops[-1][0].name == "STOP"


def check_finite(arrays: dict[str, np.ndarray], path: Path | str, *, prefix: str = "state/") -> None:
    """Raise :class:`CheckpointError` naming the first leaf under ``prefix`` holding NaN.

    Infinities are allowed: ``-inf`` is the log-weight of a particle with zero weight, and a loop's
    carry may hold ``+inf`` sentinels (a previous energy before the first step). NaN never is a
    value a run means to keep.
    """
    for name, arr in arrays.items():
        if not name.startswith(prefix):
            continue
        arr = np.asarray(arr)
        if not np.issubdtype(arr.dtype, np.floating):
            continue
        bad = np.isnan(arr)
        if np.any(bad):
            raise CheckpointError(
                f"checkpoint {path} holds {int(np.sum(bad))} NaN entries in leaf {name!r} "
                f"(shape {arr.shape}): the run that wrote it had diverged. Delete the file (an older "
                "checkpoint is then used) or start a fresh run."
            )


def load_latest(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Load the newest readable checkpoint in ``folder`` (``None`` if there is none).

    A truncated or corrupt file (random bytes included) is skipped with a warning naming it; a
    file that holds pickled data raises :class:`CheckpointError` (it is never unpickled), and so
    does a checkpoint whose ``state/`` arrays hold NaN (:func:`check_finite`).
    """
    folder = Path(folder)
    if not folder.exists():
        return None
    clean_tmp(folder)
    for path in _list(folder):
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
        except OSError as err:
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(err).__name__}: {err}", stacklevel=3)
            continue
        if magic not in _ZIP_MAGIC:
            if _looks_pickled(path):
                raise CheckpointError(
                    f"checkpoint {path} holds pickled data; dpflows never unpickles. Delete the file "
                    "or point the run at another folder."
                )
            warnings.warn(f"skipping unreadable checkpoint {path}: not an npz archive", stacklevel=3)
            continue
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
        check_finite(arrays, path)
        return arrays, meta
    return None


def check_meta(meta: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Raise :class:`ResumeMismatchError` naming the first field where ``meta`` differs.

    ``dtype`` is compared first (a float32 run resumed under x64 also changes every digest, and the
    dtype is the cause worth naming): "dtype differs: checkpoint float32, now float64".
    """
    if "dtype" in expected and meta.get("dtype") != expected["dtype"]:
        raise ResumeMismatchError(
            f"cannot resume from {path}: dtype differs: checkpoint {meta.get('dtype')}, now {expected['dtype']}. "
            "Resume with the same precision (jax_enable_x64 setting), or use a fresh checkpoint folder."
        )
    for name, value in expected.items():
        if meta.get(name) != value:
            raise ResumeMismatchError(
                f"cannot resume from {path}: {name} differs from the run that wrote it "
                f"(checkpoint: {meta.get(name)!r}, now: {value!r}). Use the same arguments, "
                "or a fresh checkpoint folder."
            )
