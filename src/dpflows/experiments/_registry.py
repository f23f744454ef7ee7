"""The experiment registry, config parsing, overrides, sweeps and the output folder writer.

A config is a flat YAML mapping: ``experiment`` (the kind), ``seed``, the fields of the kind's config
dataclass, and one reserved key the experiment never sees:

``about``
    a mapping of strings describing the config for ``dpflows list``: ``claim`` (one line: what the
    run shows) and ``wall_time`` (a measured wall time, with the machine it was measured on). It is
    not part of the resolved config: it is not written to ``config.yaml`` and two runs that differ
    only in ``about`` resume each other.

Overrides (``dpflows run --set key=value``) replace config keys before validation, so an unknown key
or a wrong type fails with the same one-line error as in a file. Values are YAML, read by
:func:`parse_value` (YAML 1.1 with one fix: ``1e-5`` is a float, not a string).

Sweeps (``dpflows sweep --grid key=v1,v2``, :func:`run_sweep`): an experiment declares, when it is
registered, which grid keys it runs inside one run because a tuple-valued config field already goes
through one vmapped program (``sweep_keys``, e.g. ``{"epsilon": "epsilons"}``), and which of those
fields it crosses (``sweep_product``). Other grid keys become separate runs.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import os
import re
import shutil
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._checkpoint import atomic_write_bytes, clean_tmp, folder_lock

__all__ = [
    "Experiment",
    "RunContext",
    "SweepPlan",
    "get",
    "load_config",
    "names",
    "parse_value",
    "plan_sweep",
    "read_about",
    "register",
    "run_experiment",
    "run_sweep",
]

_REGISTRY: dict[str, Experiment] = {}
_RESERVED = ("experiment", "seed")
_ABOUT = "about"


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-5``, ``2E3``, ``-1e+2`` as floats.

    YAML 1.1 (PyYAML) only calls a number with an exponent a float when it has a dot (``1.0e-5``);
    ``1e-5`` would otherwise be the string ``"1e-5"``.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with :class:`_Loader` (a SafeLoader subclass: never constructs objects)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_value(text: str) -> Any:
    """A config value from the command line, read as YAML: ``200``, ``true``, ``[1, 5]``, ``1e-5``, ``.inf``.

    Raises:
        ValueError: ``text`` is empty or not a YAML value (write ``null`` for None).
    """
    if not text.strip():
        raise ValueError("the value is empty (write null for None)")
    try:
        return _yaml_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{text!r} is not a YAML value ({' '.join(str(err).split())})") from err


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
        sweep_keys: grid key → tuple-valued config field that the experiment runs as one vmapped
            program (``dpflows.sweep``, a vmapped ``dpflows.fit`` or solve); every such field is also a
            grid key under its own name. ``dpflows sweep --grid epsilon=1,5`` then sets
            ``epsilons: [1, 5]`` in one run instead of starting two.
        sweep_product: groups of those fields that the experiment crosses (its grid is their
            cartesian product). Two fields can be gridded together only if one group holds both.
    """

    name: str
    config_cls: type
    fn: Callable[[Any, RunContext], tuple[dict[str, Any], str]]
    description: str
    demo: Mapping[str, Any] = field(default_factory=dict)
    sweep_keys: Mapping[str, str] = field(default_factory=dict)
    sweep_product: tuple[frozenset[str], ...] = ()


def register(
    name: str,
    config_cls: type,
    *,
    description: str,
    demo: Mapping[str, Any] | None = None,
    sweep_keys: Mapping[str, str] | None = None,
    sweep_product: Sequence[Sequence[str]] | None = None,
):
    """Decorator registering ``fn`` as experiment kind ``name``.

    Args:
        name: the ``experiment:`` value of its configs.
        config_cls: the config dataclass (see :class:`Experiment`).
        description: one line for ``dpflows list``.
        demo: overrides for ``dpflows demo``.
        sweep_keys: grid key → tuple-valued field run as one vmapped program inside the experiment
            (declare only fields whose values are leaves of one compiled sweep, not a Python loop).
        sweep_product: groups of swept fields the experiment crosses; default: all of them.

    Raises:
        ValueError: a sweep key names no tuple-valued field, or shadows another config field.
    """
    fields = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(config_cls) else set()
    keys = dict(sweep_keys or {})
    for key, target in keys.items():
        if target not in fields or not _is_sequence_field(config_cls, target):
            raise ValueError(f"sweep_keys of {name!r}: {key!r} must name a tuple-valued config field, got {target!r}")
        if key != target and (key in fields or key in (*_RESERVED, _ABOUT)):
            raise ValueError(f"sweep_keys of {name!r}: {key!r} is already a config key; use another grid name")
    keys.update({target: target for target in keys.values()})
    swept = set(keys.values())
    default = (frozenset(swept),) if swept else ()
    groups = tuple(frozenset(g) for g in sweep_product) if sweep_product is not None else default
    for group in groups:
        if not group <= swept:
            raise ValueError(f"sweep_product of {name!r} names fields not in sweep_keys: {sorted(group - swept)}")

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"config_cls of {name!r} must be a dataclass")
        _REGISTRY[name] = Experiment(name, config_cls, fn, description, dict(demo or {}), keys, groups)
        return fn

    return deco


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_sequence_field(config_cls: type, name: str) -> bool:
    """Whether config field ``name`` holds a list (annotated ``tuple[...]`` or ``list[...]``)."""
    hint = _unwrap_optional(typing.get_type_hints(config_cls).get(name, Any))
    return typing.get_origin(hint) in (tuple, list)


def names() -> list[str]:
    """Registered experiment kinds, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment kind ``name`` (``ValueError`` listing the known kinds otherwise)."""
    if name not in _REGISTRY:
        raise ValueError(f"experiment must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


_NONFINITE = ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity")


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
        if isinstance(value, str) and value.strip().lower() in _NONFINITE:
            return float(value)  # "inf" as older runs' config.yaml wrote it (YAML's own form is .inf)
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


def _read_raw(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The config mapping of a YAML file (safe loader only) or a copy of a mapping."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = _yaml_load(path.read_text())  # a SafeLoader: never constructs objects
    except yaml.YAMLError as err:
        raise ValueError(f"config {path} is not plain YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"config {path} must be a mapping of keys to values")
    return raw


def _check_about(about: Any) -> dict[str, str]:
    if not isinstance(about, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in about.items()):
        raise TypeError(f"config key 'about' must be a mapping of strings (claim: ..., wall_time: ...), got {about!r}")
    return dict(about)


def read_about(source: str | os.PathLike | Mapping[str, Any]) -> tuple[str | None, dict[str, str]]:
    """``(experiment kind, about)`` of a config without validating the rest (for ``dpflows list``).

    Raises:
        ValueError / TypeError: the file is not a YAML mapping, or ``about`` is not a mapping of strings.
    """
    raw = _read_raw(source)
    kind = raw.get("experiment")
    return (None if kind is None else str(kind)), _check_about(raw.get(_ABOUT, {}))


def load_config(source: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None):
    """Parse a config (a YAML path or a mapping) into ``(experiment, seed, cfg)``.

    ``overrides`` replace keys of the config before validation (``seed`` included). The reserved key
    ``about`` is checked (a mapping of strings) and dropped: the experiment never sees it.

    Raises:
        ValueError / TypeError: unknown experiment, unknown key (named), wrong type or value.
    """
    raw = _read_raw(source)
    raw.update(overrides or {})
    _check_about(raw.pop(_ABOUT, {}))
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
            f"{sorted([*_RESERVED, _ABOUT, *fields])}"
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
        self.captions: dict[str, str] = {}

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

    def save_figure(self, fig: Any, name: str, caption: str = "") -> str:
        """Write a matplotlib figure as ``name.png`` atomically; returns the file name.

        ``caption`` (one line: what to look for) is printed under the figure in ``report.md``.
        """
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fname = f"{name}.png"
        atomic_write_bytes(self.out / fname, buf.getvalue())
        self.figures.append(fname)
        if caption.strip():
            self.captions[fname] = " ".join(caption.split())
        return fname


def _yamlable(value: Any, *, nonfinite_as_text: bool = False) -> Any:
    """Plain YAML values (mappings, lists, scalars).

    ±inf stay floats (YAML writes .inf) unless ``nonfinite_as_text`` (JSON has no inf: :func:`_jsonable`).
    """
    if isinstance(value, Mapping):
        return {str(k): _yamlable(v, nonfinite_as_text=nonfinite_as_text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_yamlable(v, nonfinite_as_text=nonfinite_as_text) for v in value]
    if hasattr(value, "tolist"):
        return _yamlable(value.tolist(), nonfinite_as_text=nonfinite_as_text)
    if nonfinite_as_text and isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _jsonable(value: Any) -> Any:
    return _yamlable(value, nonfinite_as_text=True)


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


def _delete_folder(out: Path) -> None:
    """Move ``out`` aside atomically, then delete it: a reader never sees it half gone."""
    trash = out.with_name(f".{out.name}.deleting-{os.getpid()}")
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(out, trash)
    shutil.rmtree(trash)


def _prepare_folder(out: Path, exp: Experiment, seed: int, cfg: Any, *, resume: bool, overwrite: bool) -> None:
    """Check, clear or create ``out``; the caller holds :func:`folder_lock` on it."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if overwrite:
            _delete_folder(out)
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
    atomic_write_bytes(out / "config.yaml", yaml.safe_dump(_yamlable(resolved), sort_keys=False).encode())
    atomic_write_bytes(out / "metrics.json", (json.dumps(_jsonable(metrics), indent=2) + "\n").encode())
    figures = "\n\n".join(
        f"![{f}]({f})" + (f"\n\n*Look for:* {ctx.captions[f]}" if f in ctx.captions else "") for f in ctx.figures
    )
    text = f"# {exp.name}\n\n{exp.description}\n\n{report.strip()}\n\n{figures}\n"
    atomic_write_bytes(out / "report.md", text.encode())
    return metrics


# ------------------------------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class SweepPlan:
    """How :func:`run_sweep` runs a grid: which keys one run sweeps and which become separate runs.

    Attributes:
        experiment: the experiment kind of the config.
        swept: grid key → values swept inside every run (set as the list of its tuple field).
        separate: grid key → values; their cartesian product is the list of separate runs.
        runs: ``(folder, overrides)`` per run; the folder is relative to the sweep's output folder,
            ``"."`` for the single run when nothing is separate.
        message: the path taken, in one line (printed by ``dpflows sweep``).
    """

    experiment: Experiment
    swept: dict[str, list[Any]]
    separate: dict[str, list[Any]]
    runs: list[tuple[str, dict[str, Any]]]
    message: str


def _fmt(value: Any) -> str:
    """A grid value as written in folder names and tables: ``5``, ``0.001``, ``inf``, ``true``, ``a+b``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "+".join(_fmt(v) for v in value)
    return str(value)


def _folder_name(combo: Mapping[str, Any]) -> str:
    name = ",".join(f"{k}={_fmt(v)}" for k, v in combo.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def plan_sweep(
    source: str | os.PathLike | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    overrides: Mapping[str, Any] | None = None,
) -> SweepPlan:
    """Split a grid into the keys swept inside one run and the separate runs, and validate every run.

    A grid key in the experiment's ``sweep_keys`` (or the name of such a tuple field) sets that field
    to the list of its values in every run: the experiment runs them as one vmapped program. Every
    other key (a config field, or ``seed``) is a separate run per value; the runs are the cartesian
    product of those keys, in the order given. Every run's config is validated before anything runs.

    Raises:
        ValueError / TypeError: an empty grid, a key with no values or a repeated value, an unknown
            key, a key also given as an override, two swept keys the experiment does not cross, or a
            run whose config is invalid (the message names the key).
    """
    raw = _read_raw(source)
    overrides = dict(overrides or {})
    merged = {**raw, **overrides}
    if "experiment" not in merged:
        raise ValueError(f"config must name its experiment (experiment: one of {names()})")
    exp = get(merged["experiment"])
    if not grid:
        raise ValueError("a sweep needs at least one --grid key=v1,v2,...")
    fields = [f.name for f in dataclasses.fields(exp.config_cls)]
    swept: dict[str, list[Any]] = {}
    separate: dict[str, list[Any]] = {}
    field_of: dict[str, str] = {}  # swept config field -> the grid key that sets it
    for key, values in grid.items():
        values = list(values)
        if key in ("experiment", _ABOUT):
            raise ValueError(f"--grid {key}: {key!r} cannot be gridded")
        if not values:
            raise ValueError(f"--grid {key} has no values")
        seen = [json.dumps(_jsonable(v), sort_keys=True) for v in values]
        for i, text in enumerate(seen):
            if text in seen[:i]:
                raise ValueError(f"--grid {key} repeats the value {values[i]!r}")
        target = exp.sweep_keys.get(key)
        if target is None and key not in fields and key != "seed":
            raise ValueError(
                f"unknown --grid key {key!r} for experiment {exp.name!r}; config keys: {sorted(['seed', *fields])}"
                + (f"; swept inside one run: {sorted(exp.sweep_keys)}" if exp.sweep_keys else "")
            )
        config_key = target or key
        if config_key in overrides:
            raise ValueError(f"--grid {key} and --set {config_key} set the same config key; give one of them")
        if target is not None:
            if target in field_of:
                raise ValueError(f"--grid {field_of[target]} and --grid {key} both set {target!r}; give one of them")
            bad = [v for v in values if isinstance(v, list | tuple | Mapping)]
            if bad:
                raise TypeError(f"--grid {key} takes single values (it sets the list {target!r}), got {bad[0]!r}")
            field_of[target] = key
            swept[key] = values
        else:
            separate[key] = values
    targets = list(field_of)
    for i, a in enumerate(targets):
        for b in targets[i + 1 :]:
            if not any({a, b} <= group for group in exp.sweep_product):
                raise ValueError(
                    f"--grid {field_of[a]} and --grid {field_of[b]} cannot be combined in one {exp.name} run: "
                    f"the experiment runs {a!r} and {b!r} as separate settings, not as their product; grid them "
                    f"in two sweeps, or set both lists in one run with dpflows run --set {a}=[...] --set {b}=[...]"
                )
    base = {**overrides, **{target: list(swept[key]) for target, key in field_of.items()}}
    runs: list[tuple[str, dict[str, Any]]] = []
    if not separate:
        runs.append((".", base))
    else:
        used: set[str] = set()
        for combo in itertools.product(*separate.values()):
            values = dict(zip(separate, combo, strict=True))
            name = _folder_name(values)
            folder, i = name, 1
            while folder in used:
                i += 1
                folder = f"{name}-{i}"
            used.add(folder)
            run = dict(base)
            for k, v in values.items():
                wrap = k != "seed" and _is_sequence_field(exp.config_cls, k) and not isinstance(v, list | tuple)
                run[k] = [v] if wrap else v
            runs.append((folder, run))
    for folder, run in runs:
        try:
            load_config(raw, run)
        except (TypeError, ValueError) as err:
            if folder == ".":
                raise
            raise type(err)(f"run {folder}: {err}") from err
    swept_text = ", ".join(f"{k}=[{', '.join(map(_fmt, vals))}]" for k, vals in swept.items())
    if not separate:
        message = f"one dpflows.sweep over {swept_text} inside a single {exp.name} run"
    else:
        keys = ", ".join(separate)
        verb = "is" if len(separate) == 1 else "are"
        message = (
            f"{len(runs)} separate runs because {keys} {verb} not swept inside {exp.name} "
            "(it changes shapes or code paths, or the experiment loops over it)"
        )
        if swept:
            message += f"; each run sweeps {swept_text} in one dpflows.sweep"
    return SweepPlan(exp, swept, separate, runs, message)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline metrics: the top-level entries of ``metrics.json`` that are not lists or mappings."""
    return {k: v for k, v in metrics.items() if not isinstance(v, Mapping | list | tuple)}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else _fmt(value)


def _index_markdown(source_name: str, plan: SweepPlan, rows: list[dict[str, Any]], overrides: Mapping) -> str:
    keys = list(plan.separate)
    metrics: list[str] = []
    for row in rows:
        metrics += [m for m in row["metrics"] if m not in metrics]
    head = ["run", *keys, *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"[report]({row['report']})"]
        cells += [_cell(row["overrides"][k]) for k in keys]
        cells += [_cell(row["metrics"].get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    sets = ", ".join(f"`{k}={_fmt(v)}`" for k, v in overrides.items())
    text = f"# dpflows sweep: {plan.experiment.name}\n\nConfig `{source_name}`: {plan.message}.\n"
    if sets:
        text += f"Overrides in every run: {sets}.\n"
    return text + "\n" + "\n".join(lines) + "\n\nHeadline metrics: the scalar entries of each run's `metrics.json`.\n"


def _prepare_sweep_folder(out: Path, plan_record: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Check, clear or create a sweep's folder; the caller holds :func:`folder_lock` on it."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if overwrite:
            _delete_folder(out)
        elif not resume:
            raise FileExistsError(
                f"output folder {out} is not empty: pass --resume to continue that sweep or --overwrite to replace it"
            )
        else:
            previous = out / "sweep.json"
            if not previous.exists():
                raise ValueError(f"cannot resume {out}: it holds no sweep.json (not a sweep's folder)")
            before = json.loads(previous.read_text()).get("plan")
            if before != plan_record:
                changed = sorted(k for k in plan_record if (before or {}).get(k) != plan_record[k])
                raise ValueError(
                    f"cannot resume {out}: the sweep's {changed[0] if changed else 'plan'} differs from the one that "
                    "wrote it; use another output folder or --overwrite"
                )
    out.mkdir(parents=True, exist_ok=True)


def run_sweep(
    source: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike,
    grid: Mapping[str, Sequence[Any]],
    *,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a grid over one config, as one run where the experiment sweeps the keys itself.

    The plan (:func:`plan_sweep`) is checked before ``out`` is touched. When every grid key is swept
    inside the experiment, ``out`` is that one run's folder (its ``report.md`` holds every grid value).
    Otherwise each separate run writes ``out/<key=value,...>/`` and ``out/report.md`` indexes them:
    one row per run with its values, its headline metrics (the scalar entries of its ``metrics.json``)
    and a link to its report. Both write ``out/sweep.json`` (the plan and the rows). A sweep of
    separate runs holds :func:`folder_lock` on ``out``; ``resume`` continues every run from its
    checkpoints (the grid must be the same), ``overwrite`` replaces ``out``.

    Args:
        source: a config path or mapping.
        out: the output folder.
        grid: grid key → values (``{"epsilon": [1, 5], "num_particles": [100, 200]}``).
        overrides: config keys set in every run (``--set``).
        resume: continue an interrupted sweep.
        overwrite: replace an existing ``out``.
        progress: progress bars inside each run.
        echo: called with the path taken and one line per finished run.

    Returns:
        The content of ``sweep.json``: ``plan``, ``message`` and ``runs`` (folder, overrides, metrics, report).
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    raw = _read_raw(source)
    overrides = dict(overrides or {})
    plan = plan_sweep(raw, grid, overrides)
    echo = echo or (lambda line: None)
    out = Path(out)
    source_name = str(source) if not isinstance(source, Mapping) else f"<{plan.experiment.name} mapping>"
    plan_record = _jsonable(
        {
            "experiment": plan.experiment.name,
            "grid": {k: list(v) for k, v in grid.items()},
            "overrides": overrides,
            "swept": plan.swept,
            "separate": list(plan.separate),
        }
    )
    record: dict[str, Any] = {"config": source_name, "plan": plan_record, "message": plan.message, "runs": []}
    echo(plan.message)
    total = len(plan.runs)

    def finish(i: int, folder: str, run: dict[str, Any], metrics: Mapping[str, Any]) -> None:
        shown = {k: run[k] for k in plan.separate} if plan.separate else {k: list(v) for k, v in plan.swept.items()}
        report = "report.md" if folder == "." else f"{folder}/report.md"
        record["runs"].append({"folder": folder, "overrides": shown, "metrics": _scalars(metrics), "report": report})
        label = (
            folder if folder != "." else ", ".join(f"{k}=[{', '.join(map(_fmt, v))}]" for k, v in plan.swept.items())
        )
        echo(f"[{i + 1}/{total}] {label}: {metrics['wall_time_s']:.1f} s -> {out / report}")

    if not plan.separate:
        ((folder, run),) = plan.runs
        metrics = run_experiment(raw, out, resume=resume, overwrite=overwrite, progress=progress, overrides=run)
        finish(0, folder, run, metrics)
        atomic_write_bytes(out / "sweep.json", (json.dumps(_jsonable(record), indent=2) + "\n").encode())
        return record
    with folder_lock(out):
        _prepare_sweep_folder(out, plan_record, resume=resume, overwrite=overwrite)
        atomic_write_bytes(out / "sweep.json", (json.dumps(_jsonable(record), indent=2) + "\n").encode())
        for i, (folder, run) in enumerate(plan.runs):
            metrics = run_experiment(raw, out / folder, resume=resume, progress=progress, overrides=run)
            finish(i, folder, run, metrics)
            # after every run, so an interrupted sweep's index lists the runs it finished
            atomic_write_bytes(out / "sweep.json", (json.dumps(_jsonable(record), indent=2) + "\n").encode())
        index = _index_markdown(source_name, plan, record["runs"], overrides)
        atomic_write_bytes(out / "report.md", index.encode())
    return record
