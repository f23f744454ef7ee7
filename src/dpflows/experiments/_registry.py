"""The experiment registry, config parsing and the output folder writer."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._checkpoint import atomic_write_bytes, clean_tmp, folder_lock

__all__ = ["Experiment", "RunContext", "get", "load_config", "names", "register", "run_experiment"]

_REGISTRY: dict[str, Experiment] = {}
_RESERVED = ("experiment", "seed")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment kind.

    Attributes:
        name: the ``experiment:`` value in configs.
        config_cls: a frozen dataclass; its fields are the config keys (besides ``seed``). Its
            ``__post_init__`` validates values, so a bad config fails before any output is written.
        fn: ``fn(cfg, ctx) -> (metrics, report_markdown)``.
        description: one line for ``dpflows list``.
        demo: overrides that make the experiment run in seconds for ``dpflows demo``.
    """

    name: str
    config_cls: type
    fn: Callable[[Any, RunContext], tuple[dict[str, Any], str]]
    description: str
    demo: Mapping[str, Any] = field(default_factory=dict)


def register(name: str, config_cls: type, *, description: str, demo: Mapping[str, Any] | None = None):
    """Decorator registering ``fn`` as experiment kind ``name``."""

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"config_cls of {name!r} must be a dataclass")
        _REGISTRY[name] = Experiment(name, config_cls, fn, description, dict(demo or {}))
        return fn

    return deco


def names() -> list[str]:
    """Registered experiment kinds, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment kind ``name`` (``ValueError`` listing the known kinds otherwise)."""
    if name not in _REGISTRY:
        raise ValueError(f"experiment must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check/convert one config value against its dataclass annotation, naming the key."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing}, {})  # noqa: S307 - our own annotations only
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError(errors[0] if errors else f"{name}: unsupported value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise TypeError(f"config key {name!r} must be a list, got {value!r}")
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return tuple(_coerce(name, v, inner) for v in value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"config key {name!r} must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"config key {name!r} must be an int, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise TypeError(f"config key {name!r} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError(f"config key {name!r} must be a string, got {value!r}")
        return value
    return value


def load_config(source: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None):
    """Parse a config (a YAML path or a mapping) into ``(experiment, seed, cfg)``.

    Raises:
        ValueError / TypeError: unknown experiment, unknown key (named), wrong type or value.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())  # never yaml.load: it can construct objects
        except yaml.YAMLError as err:
            raise ValueError(f"config {path} is not plain YAML: {err}") from err
        if not isinstance(raw, dict):
            raise ValueError(f"config {path} must be a mapping of keys to values")
    raw.update(overrides or {})
    if "experiment" not in raw:
        raise ValueError(f"config must name its experiment (experiment: one of {names()})")
    exp = get(raw.pop("experiment"))
    seed = raw.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"config key 'seed' must be a non-negative int, got {seed!r}")
    fields = {f.name: f for f in dataclasses.fields(exp.config_cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key {unknown[0]!r} for experiment {exp.name!r}; known keys: "
            f"{sorted([*_RESERVED, *fields])}"
        )
    hints = typing.get_type_hints(exp.config_cls)
    kwargs = {k: _coerce(k, v, hints.get(k, Any)) for k, v in raw.items()}
    cfg = exp.config_cls(**kwargs)
    return exp, seed, cfg


def resolved_config(exp: Experiment, seed: int, cfg: Any) -> dict[str, Any]:
    """The full config, defaults filled in, as plain YAML-able values."""
    out: dict[str, Any] = {"experiment": exp.name, "seed": seed}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


class RunContext:
    """What an experiment gets besides its config: the seed, the output folder and its writers."""

    def __init__(self, out: Path, seed: int, *, progress: bool):
        self.out = out
        self.seed = seed
        self.progress = progress
        self.figures: list[str] = []

    def grid_bar(self, total: int, desc: str) -> Any:
        """The one progress bar over an experiment's grid cells (each cell's steps run on the runtime's loop).

        A tqdm bar, shown only when the run asked for progress; use it as a context manager or call
        ``close``. Experiments do not build their own bars.
        """
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def checkpoint_dir(self, name: str) -> Path:
        """A folder for the checkpoints of one run inside this experiment."""
        return self.out / "checkpoints" / name

    def save_figure(self, fig: Any, name: str) -> str:
        """Write a matplotlib figure as ``name.png`` atomically; returns the file name."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fname = f"{name}.png"
        atomic_write_bytes(self.out / fname, buf.getvalue())
        self.figures.append(fname)
        return fname


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def run_experiment(
    source: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one experiment into ``out``: ``metrics.json``, ``config.yaml``, PNG figures, ``report.md``.

    The config is parsed and validated before ``out`` is touched, so a bad config leaves nothing
    behind. ``resume`` continues from the checkpoints in ``out``; without it an existing non-empty
    ``out`` is refused unless ``overwrite``.

    The whole run, the ``resume``/``overwrite`` handling included, holds an exclusive lock on
    ``out`` (a ``flock`` on ``.<name>.lock`` next to it): a second run on the same folder fails at
    once, and temporary files are cleaned and old outputs deleted only under the lock.

    Raises:
        FolderLockedError: another live run holds ``out`` (the message names it and its pid).
        FileExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite`` was given.

    Returns:
        The metrics dict (also written to ``metrics.json``).
    """
    exp, seed, cfg = load_config(source, overrides)
    out = Path(out)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    with folder_lock(out):
        _prepare_folder(out, exp, seed, cfg, resume=resume, overwrite=overwrite)
        return _run_locked(exp, seed, cfg, out, progress=progress)


def _prepare_folder(out: Path, exp: Experiment, seed: int, cfg: Any, *, resume: bool, overwrite: bool) -> None:
    """Check, clear or create ``out``; the caller holds :func:`folder_lock` on it."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if overwrite:
            # Move the old folder aside atomically, then delete it: a reader never sees it half gone.
            trash = out.with_name(f".{out.name}.deleting-{os.getpid()}")
            if trash.exists():
                shutil.rmtree(trash)
            os.rename(out, trash)
            shutil.rmtree(trash)
        elif not resume:
            raise FileExistsError(
                f"output folder {out} is not empty: pass --resume to continue that run or --overwrite to replace it"
            )
    if resume and out.exists():
        previous = out / "config.resolved.json"
        if previous.exists():
            before = json.loads(previous.read_text())
            now = _jsonable(resolved_config(exp, seed, cfg))
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                raise ValueError(
                    f"cannot resume {out}: config key {changed[0]!r} differs from the run that wrote it "
                    f"({before.get(changed[0])!r} vs {now.get(changed[0])!r})"
                )
        # We hold the lock: every temporary file here belongs to a dead run.
        for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
            clean_tmp(folder, all_stale=True)
    try:
        os.mkdir(out)  # atomic: fails if the folder appeared meanwhile
    except FileExistsError:
        if not out.is_dir():
            raise FileExistsError(f"output folder {out} exists and is not a folder") from None


def _run_locked(exp: Experiment, seed: int, cfg: Any, out: Path, *, progress: bool) -> dict[str, Any]:
    resolved = resolved_config(exp, seed, cfg)
    atomic_write_bytes(out / "config.resolved.json", json.dumps(_jsonable(resolved), sort_keys=True).encode())
    ctx = RunContext(out, seed, progress=progress)
    start = time.perf_counter()
    metrics, report = exp.fn(cfg, ctx)
    metrics = {**metrics, "wall_time_s": round(time.perf_counter() - start, 3)}
    atomic_write_bytes(out / "config.yaml", yaml.safe_dump(_jsonable(resolved), sort_keys=False).encode())
    atomic_write_bytes(out / "metrics.json", (json.dumps(_jsonable(metrics), indent=2) + "\n").encode())
    figures = "\n".join(f"![{f}]({f})" for f in ctx.figures)
    text = f"# {exp.name}\n\n{exp.description}\n\n{report.strip()}\n\n{figures}\n"
    atomic_write_bytes(out / "report.md", text.encode())
    return metrics
