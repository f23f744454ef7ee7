"""The flow interface and the runtime: ``run``, ``stack``, ``sweep`` and the ``Trace``.

A flow is an ``eqx.Module`` whose fields are its hyper-parameters; ``step`` is pure. ``run`` is one
compiled ``lax.scan`` over steps whose keys are ``fold_in(key, i)`` with ``i`` the global step index,
so a run gives the same bits however it is chunked (progress bar, checkpoints, kill and resume).
Progress bars and checkpoints live in Python *between* compiled chunks; nothing calls back from
traced code, so the same driver serves ``run`` and the vmapped, sharded ``sweep``.
"""

from __future__ import annotations

import abc
import dataclasses
import functools as ft
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _checkpoint, _validate
from ._typing import Array, Bool, Info, PRNGKeyArray, PyTreeAny
from .particles import Particles

__all__ = [
    "AbstractFlow",
    "FlowError",
    "Trace",
    "as_sampling_algorithm",
    "run",
    "stack",
    "sweep",
]

_VERSION_FOR_RESUME = "0.1"  # major.minor of the checkpoint-compatible runtime


class FlowError(RuntimeError):
    """A run ended in a state that is not usable (non-finite particles, unconverged inner solves)."""


class AbstractFlow(eqx.Module):
    """A particle flow: ``init`` builds the state, ``step`` advances it by one step.

    Concrete flows are final: implement ``init`` and ``step``, store every hyper-parameter someone
    might sweep as an array field (``eqx.field(converter=jnp.asarray)``) and shape-changing options
    as ``eqx.field(static=True)``. ``step`` takes one key, returns ``(state, info)`` where ``info``
    is a dict of arrays with the same keys at every step.
    """

    @abc.abstractmethod
    def init(self, x: Any, logw: Any = None) -> Particles:
        """Build the initial state from positions ``x`` and optional log-weights."""

    @abc.abstractmethod
    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """Advance ``state`` by one step using ``key``; return the new state and diagnostics."""


class Trace(eqx.Module):
    """What a run recorded.

    Attributes:
        info: each step's diagnostics, stacked: ``info[name][i]`` is from step ``i + 1``. For a
            sweep every array has a leading member axis.
        states: the recorded states (or ``record(state)`` values) after steps ``record_steps``,
            stacked along a leading axis (after the member axis for sweeps); ``None`` if
            ``record_every == 0``.
        record_steps: number of steps done at each record, shape ``(num_records,)``.
        ok: whether the final state is finite (and, where a flow reports ``converged``, its last
            step converged); one flag per member for sweeps.
    """

    info: dict[str, Array]
    states: PyTreeAny
    record_steps: Array | None
    ok: Bool[Array, ...]

    def __getitem__(self, name: str) -> Array:
        """``trace["energy"]`` is ``trace.info["energy"]``."""
        return self.info[name]


# ------------------------------------------------------------------------------------ the scan
def _identity(state: Particles) -> Particles:
    return state


def _scan_steps(flow, state, key, start, length: int, record_every: int, record):
    """``length`` steps from global index ``start``; record every ``record_every`` (0: never)."""

    def one(carry, i):
        return flow.step(carry, jr.fold_in(key, i))

    steps = start + jnp.arange(length, dtype=jnp.int32)
    if record_every == 0:
        state, info = jax.lax.scan(one, state, steps)
        return state, info, None

    def block(carry, idx):
        carry, info = jax.lax.scan(one, carry, idx)
        return carry, (info, (record or _identity)(carry))

    state, (info, rec) = jax.lax.scan(block, state, steps.reshape(length // record_every, record_every))
    info = jax.tree_util.tree_map(lambda a: a.reshape(length, *a.shape[2:]), info)
    return state, info, rec


@eqx.filter_jit
def _run_chunk(flow, state, key, start, length, record_every, record):
    return _scan_steps(flow, state, key, start, length, record_every, record)


@eqx.filter_jit
def _sweep_chunk(flow, state, key, start, flow_axes, state_axis, key_axis, length, record_every, record):
    fn = ft.partial(_scan_steps, length=length, record_every=record_every, record=record)
    return eqx.filter_vmap(fn, in_axes=(flow_axes, state_axis, key_axis, None))(flow, state, key, start)


def _state_ok(state: Particles, info: Info) -> Array:
    ok = jnp.all(jnp.isfinite(state.x)) & jnp.all(~jnp.isnan(state.logw)) & jnp.all(jnp.isfinite(state.v))
    if "converged" in info:
        ok = ok & jnp.all(info["converged"][-1])
    return ok


# ----------------------------------------------------------------------------------- validation
def _check_key(key: Any) -> None:
    if isinstance(key, jax.Array | np.ndarray):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return
        if key.dtype == np.uint32 and key.shape == (2,):
            return
    raise TypeError(
        f"key must be a PRNG key (jax.random.key(seed)), got {type(key).__name__} "
        f"with shape {getattr(key, 'shape', None)}"
    )


def _check_run_args(flow, state, num_steps, record_every) -> tuple[int, int]:
    if not isinstance(flow, AbstractFlow):
        raise TypeError(f"flow must be a dpflows.AbstractFlow, got {type(flow).__name__}")
    if not isinstance(state, Particles):
        raise TypeError(f"state must be a dpflows.Particles (use flow.init(x)), got {type(state).__name__}")
    num_steps = _validate.positive_int("num_steps", num_steps, allow_zero=True)
    record_every = _validate.positive_int("record_every", record_every, allow_zero=True)
    if record_every and num_steps % record_every:
        raise ValueError(f"record_every must divide num_steps, got record_every={record_every}, num_steps={num_steps}")
    return num_steps, record_every


def _chunk_length(num_steps, record_every, chunk_size, progress, checkpoint, checkpoint_every) -> int:
    if chunk_size is not None:
        chunk = _validate.positive_int("chunk_size", chunk_size)
    elif checkpoint is not None:
        chunk = checkpoint_every or max(1, math.ceil(num_steps / 10))
    elif progress:
        chunk = max(1, math.ceil(num_steps / 50))
    else:
        chunk = max(num_steps, 1)
    if record_every:
        chunk = max(record_every, (chunk // record_every) * record_every)
    return min(chunk, max(num_steps, 1))


# ---------------------------------------------------------------------------------- the driver
class _Plan(NamedTuple):
    num_steps: int
    chunk: int
    record_every: int
    step_axis: int  # 0 for run, 1 for sweep (member axis first)


def _concat(parts: list, axis: int):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=axis), *parts)


def _drive(
    chunk_fn: Callable,
    state,
    plan: _Plan,
    *,
    progress: bool,
    desc: str,
    checkpoint: str | os.PathLike | None,
    fingerprint: dict[str, Any],
    rec_template=None,
):
    """Loop over compiled chunks in Python: progress bar, checkpoint writes and resume."""
    done, infos, recs = 0, [], []
    ckpt_dir = None if checkpoint is None else Path(checkpoint)
    if ckpt_dir is not None:
        loaded = _checkpoint.load_latest(ckpt_dir)
        if loaded is not None:
            arrays, meta = loaded
            _checkpoint.check_meta(meta, fingerprint, ckpt_dir)
            state, done, info0, rec0 = _unpack(arrays, meta, state, rec_template)
            infos.append(info0)
            recs.append(rec0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.num_steps, initial=done, desc=desc, unit="step", leave=False)
    delay = float(os.environ.get("DPFLOWS_DEBUG_CHUNK_DELAY", "0") or 0)  # test hook for kill tests
    info = None
    try:
        while done < plan.num_steps:
            length = min(plan.chunk, plan.num_steps - done)
            state, info, rec = chunk_fn(state, jnp.asarray(done, jnp.int32), length)
            infos.append(info)
            recs.append(rec)
            done += length
            if ckpt_dir is not None:
                infos = [_concat(infos, plan.step_axis)]
                recs = [_concat(recs, plan.step_axis)]
                _save(ckpt_dir, done, state, infos[0], recs[0], fingerprint)
            if bar is not None:
                bar.update(length)
            if delay:
                time.sleep(delay)
    finally:
        if bar is not None:
            bar.close()
    return state, _concat(infos, plan.step_axis), _concat(recs, plan.step_axis)


def _flat(prefix: str, tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves(tree)
    out = {}
    for i, leaf in enumerate(leaves):
        arr = leaf
        if isinstance(arr, jax.Array) and jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key):
            arr = jr.key_data(arr)
        out[f"{prefix}/{i}"] = np.asarray(arr)
    return out


def _save(folder, done, state, info, rec, fingerprint):
    arrays = {**_flat("state", state), **{f"info/{k}": np.asarray(v) for k, v in (info or {}).items()}}
    if rec is not None:
        arrays.update(_flat("rec", rec))
    meta = {**fingerprint, "has_rec": rec is not None, "info_keys": sorted((info or {}).keys())}
    _checkpoint.save(folder, done, arrays, meta)


def _restore_like(template, arrays: dict[str, np.ndarray], prefix: str):
    """Rebuild a pytree shaped like ``template`` (arrays or ShapeDtypeStructs) from a checkpoint."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    new = []
    for i, leaf in enumerate(leaves):
        arr = arrays.get(f"{prefix}/{i}")
        if arr is None:
            raise _checkpoint.CheckpointError(f"checkpoint is missing leaf {prefix}/{i}")
        if not hasattr(leaf, "dtype"):
            new.append(arr)
            continue
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            new.append(jr.wrap_key_data(jnp.asarray(arr), impl=jr.key_impl(leaf)))
            continue
        if prefix == "state" and tuple(arr.shape) != tuple(leaf.shape):
            raise _checkpoint.CheckpointError(
                f"checkpoint leaf {prefix}/{i} has shape {arr.shape}, expected {leaf.shape}"
            )
        new.append(jnp.asarray(arr, dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, new)


def _unpack(arrays, meta, state_template, rec_template):
    state = _restore_like(state_template, arrays, "state")
    info = {k: jnp.asarray(arrays[f"info/{k}"]) for k in meta.get("info_keys", [])}
    rec = _restore_like(rec_template, arrays, "rec") if meta.get("has_rec") else None
    return state, int(meta["step"]), info, rec


# --------------------------------------------------------------------------------------- run
def run(
    flow: AbstractFlow,
    state: Particles,
    key: PRNGKeyArray,
    num_steps: int,
    *,
    record_every: int = 0,
    record: Callable[[Particles], PyTreeAny] | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    chunk_size: int | None = None,
    throw: bool = True,
) -> tuple[Particles, Trace]:
    """Run ``flow`` for ``num_steps`` steps from ``state``.

    Step ``i`` (0-based, global) uses the key ``fold_in(key, i)``, so the result does not depend
    on chunking: a plain run is one compiled ``lax.scan``; with ``progress`` or ``checkpoint`` the
    scan is cut into chunks of equal length (one compilation, plus one for a shorter last chunk)
    and the bar and checkpoint writes happen in Python between them.

    Args:
        flow: the flow.
        state: the initial state (``flow.init(x)``).
        key: a PRNG key.
        num_steps: number of steps (≥ 0).
        record_every: keep the state (or ``record(state)``) every this many steps; must divide
            ``num_steps`` (0: keep none).
        record: optional function of the state to keep instead of the whole state.
        progress: show a progress bar (tqdm) between compiled chunks.
        checkpoint: a folder. After each chunk the state and trace so far are written there
            atomically (``.npz``, no pickle). If the folder already holds a checkpoint of this same
            run (same flow, state, key, num_steps, chunking and dtype), the run resumes from it and
            ends bitwise equal to an uninterrupted run on the same machine; a checkpoint of a
            different run raises ``ResumeMismatchError`` naming what changed.
        checkpoint_every: steps between checkpoints (default: a tenth of the run).
        chunk_size: steps per compiled chunk (overrides the defaults above).
        throw: raise :class:`FlowError` if the final state is not finite (or the flow's last
            ``converged`` is false). Under ``jit``/``vmap`` this is an ``eqx.error_if`` check.

    Returns:
        ``(final_state, trace)``.

    Raises:
        TypeError, ValueError: bad arguments, named.
        FlowError: the run diverged and ``throw`` is on.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> from dpflows.langevin import ULA
        >>> from dpflows.potentials import GaussianPotential
        >>> flow = ULA(GaussianPotential(jnp.zeros(2), jnp.eye(2)), step_size=0.1)
        >>> state, trace = run(flow, flow.init(jnp.ones((8, 2))), jr.key(0), 20)
        >>> trace["energy"].shape
        (20,)
    """
    num_steps, record_every = _check_run_args(flow, state, num_steps, record_every)
    _check_key(key)
    if checkpoint_every is not None:
        checkpoint_every = _validate.positive_int("checkpoint_every", checkpoint_every)
    traced = not _validate.is_concrete((flow, state, key))
    if traced and checkpoint is not None:
        raise ValueError("checkpoint cannot be used under jit/vmap; call run outside transformations, or use sweep")
    if traced:
        progress = False
    state = eqx.tree_at(lambda s: s.x, state, _validate.finite("state.x", state.x))
    chunk = _chunk_length(num_steps, record_every, chunk_size, progress, checkpoint, checkpoint_every)
    plan = _Plan(num_steps, chunk, record_every, step_axis=0)

    def chunk_fn(s, start, length):
        return _run_chunk(flow, s, key, start, length, record_every, record)

    fp = {}
    if checkpoint is not None:
        fp = _checkpoint.fingerprint(
            flow=flow,
            initial_state=state,
            key=key,
            num_steps=num_steps,
            chunk=chunk,
            record_every=record_every,
            record=record or "state",
            version=_VERSION_FOR_RESUME,
            dtype=str(state.x.dtype),
        )
    rec_template = None
    if checkpoint is not None and record_every:
        rec_template = _stacked_like(jax.eval_shape(record or _identity, state), num_steps // record_every, 0)
    final, info, rec = _drive(
        chunk_fn,
        state,
        plan,
        progress=progress,
        desc=type(flow).__name__,
        checkpoint=checkpoint,
        fingerprint=fp,
        rec_template=rec_template,
    )
    if info is None:  # num_steps == 0
        info = {}
    ok = _state_ok(final, info)
    trace = Trace(info=info, states=rec, record_steps=_record_steps(num_steps, record_every), ok=ok)
    if throw:
        final = _raise_if_bad(final, ok, num_steps)
    return final, trace


def _stacked_like(shapes, num: int, axis: int):
    """ShapeDtypeStructs of ``num`` records of ``shapes`` stacked at ``axis`` (shape is unchecked)."""
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape[:axis] + (num,) + s.shape[axis:], s.dtype), shapes
    )


def _record_steps(num_steps: int, record_every: int) -> Array | None:
    if not record_every:
        return None
    return jnp.arange(record_every, num_steps + 1, record_every, dtype=jnp.int32)


def _raise_if_bad(final: Particles, ok: Array, num_steps: int) -> Particles:
    msg = (
        f"the run ended in an unusable state after {num_steps} steps (non-finite particles or an "
        "unconverged inner solve). Try a smaller step_size, check the potential's gradient, or pass "
        "throw=False and inspect trace.info."
    )
    if _validate.is_concrete(ok):
        if not bool(ok):
            raise FlowError(msg)
        return final
    return eqx.tree_at(lambda s: s.x, final, eqx.error_if(final.x, ~ok, msg))


# ------------------------------------------------------------------------------ stack / sweep
def _static_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Name the first static field that differs between two modules of the same class."""
    if type(a) is not type(b):
        return f"{path or 'flow'} has type {type(a).__name__} in one flow and {type(b).__name__} in another"
    if isinstance(a, eqx.Module):
        for field in dataclasses.fields(a):
            va, vb = getattr(a, field.name, None), getattr(b, field.name, None)
            name = f"{path}.{field.name}" if path else field.name
            if field.metadata.get("static", False):
                if va != vb:
                    return f"static field {name!r} differs across flows ({va!r} vs {vb!r}): sweep each value separately"
            else:
                sub = _static_difference(va, vb, name)
                if sub:
                    return sub
    return None


def stack(flows: Sequence[AbstractFlow]) -> tuple[AbstractFlow, PyTreeAny]:
    """Stack flows into one batched flow and its ``in_axes``.

    Array leaves that differ across flows are stacked along a new leading axis (``in_axes=0``); a
    leaf that is the same object in every flow (a dataset, a memory bank) stays unbatched
    (``in_axes=None``) rather than being copied per member. Static fields and non-array leaves
    must agree.

    Raises:
        ValueError: empty input, static fields that differ (named), arrays of different shapes.
    """
    flows = list(flows)
    if not flows:
        raise ValueError("flows must hold at least one flow")
    first = flows[0]
    treedef = jax.tree_util.tree_structure(first)
    for i, flow in enumerate(flows[1:], 1):
        if jax.tree_util.tree_structure(flow) != treedef:
            why = _static_difference(first, flow) or f"flow {i} has a different structure from flow 0"
            raise ValueError(why)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(first)[0]]
    columns = zip(*(jax.tree_util.tree_leaves(f) for f in flows), strict=True)
    leaves, axes = [], []
    for path, column in zip(paths, columns, strict=True):
        if all(c is column[0] for c in column):
            leaves.append(column[0])
            axes.append(None)
        elif all(eqx.is_array(c) for c in column):
            shapes = {tuple(c.shape) for c in column}
            if len(shapes) > 1:
                raise ValueError(f"field {path} has different shapes across flows: {sorted(shapes)}")
            leaves.append(jnp.stack(column))
            axes.append(0)
        else:
            try:
                same = all(bool(c == column[0]) for c in column)
            except Exception:  # noqa: BLE001 - incomparable objects count as different
                same = False
            if not same:
                raise ValueError(
                    f"field {path} differs across flows and is not an array; make it an array field "
                    "(converter=jnp.asarray) to sweep it, or pass the same object to every flow"
                )
            leaves.append(column[0])
            axes.append(None)
    return jax.tree_util.tree_unflatten(treedef, leaves), jax.tree_util.tree_unflatten(treedef, axes)


def _batch_size(tree, axes) -> int | None:
    sizes = set()
    if axes is None or isinstance(axes, int):
        axes = jax.tree_util.tree_map(lambda _: axes, tree)

    def visit(leaf, axis):
        if axis is not None and hasattr(leaf, "shape"):
            sizes.add(leaf.shape[axis])

    jax.tree_util.tree_map(visit, tree, axes, is_leaf=lambda x: x is None)
    if len(sizes) > 1:
        raise ValueError(f"batched leaves disagree on the batch size: {sorted(sizes)}")
    return sizes.pop() if sizes else None


def _pad_and_place(tree, axes, size: int, padded: int, sharding_batched, sharding_rep):
    def place(leaf, axis):
        if not eqx.is_array(leaf):
            return leaf
        if axis is None:
            return jax.device_put(leaf, sharding_rep) if sharding_rep is not None else leaf
        if padded > size:
            pad = jnp.repeat(leaf[-1:], padded - size, axis=0)
            leaf = jnp.concatenate([leaf, pad], axis=0)
        return jax.device_put(leaf, sharding_batched) if sharding_batched is not None else leaf

    if axes is None or isinstance(axes, int):
        return jax.tree_util.tree_map(lambda leaf: place(leaf, axes), tree)
    return jax.tree_util.tree_map(place, tree, axes, is_leaf=lambda x: x is None)


def _default_mesh():
    devices = jax.devices()
    return jax.make_mesh((len(devices),), ("sweep",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def sweep(
    flows: Sequence[AbstractFlow] | AbstractFlow,
    state: Particles,
    key: PRNGKeyArray,
    num_steps: int,
    *,
    in_axes: PyTreeAny = None,
    state_in_axes: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    independent_keys: bool = False,
    record_every: int = 0,
    record: Callable[[Particles], PyTreeAny] | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    chunk_size: int | None = None,
    throw: bool = False,
) -> tuple[Particles, Trace]:
    """Run a batch of flows as one compiled, vmapped program sharded over all devices.

    ``flows`` is a list of flows (stacked with :func:`stack`) or one batched flow, e.g. built with
    ``eqx.filter_vmap`` of a constructor (then every array leaf is batched unless ``in_axes`` says
    otherwise). The member axis is padded to a multiple of the device count (repeating the last
    member), placed with ``NamedSharding(mesh, P("sweep"))``, run, and the padding is sliced off.

    Every member uses the same ``key`` by default (common random numbers), so differences between
    members come from their hyper-parameters; ``independent_keys=True`` folds in the member index.
    Results equal a single-device run within floating-point tolerance (noise draws are bitwise
    identical; arithmetic is not: ~1e-6 in float32 after thousands of steps, ~1e-14 in float64).

    Args:
        flows: the batch of flows.
        state: one initial state shared by every member, or a batch if ``state_in_axes=0``.
        key: a PRNG key.
        num_steps: steps per member.
        in_axes: batch axes of the flow's leaves (default from :func:`stack`, or 0 for every
            array leaf of a pre-batched flow).
        state_in_axes: ``None`` (shared) or ``0`` (batched states).
        mesh: a 1-D mesh with axis ``"sweep"``; default: all visible devices.
        independent_keys: member ``j`` uses ``fold_in(key, j)`` instead of ``key``.
        record_every: as in :func:`run`.
        record: as in :func:`run`.
        progress: as in :func:`run` (the bar advances between compiled chunks).
        checkpoint: as in :func:`run`; the fingerprint also covers the device count.
        checkpoint_every: as in :func:`run`.
        chunk_size: as in :func:`run`.
        throw: raise if any member failed (default ``False``: read ``trace.ok`` per member).

    Returns:
        ``(final_states, trace)`` with a leading member axis on every array.
    """
    if isinstance(flows, AbstractFlow):
        flow = flows
        axes = (
            in_axes if in_axes is not None else jax.tree_util.tree_map(lambda a: 0 if eqx.is_array(a) else None, flow)
        )
    else:
        flow, axes = stack(flows)
        if in_axes is not None:
            axes = in_axes
    if state_in_axes not in (None, 0):
        raise ValueError(f"state_in_axes must be None or 0, got {state_in_axes!r}")
    num_steps, record_every = _check_run_args(flow, state, num_steps, record_every)
    _check_key(key)
    size = _batch_size(flow, axes)
    state_size = _batch_size(state, 0) if state_in_axes == 0 else None
    if size is None and state_size is None:
        raise ValueError("sweep needs a batch: no flow leaf is batched (pass several flows or in_axes)")
    if size is not None and state_size is not None and size != state_size:
        raise ValueError(f"the flows' batch size {size} differs from the states' batch size {state_size}")
    size = size or state_size
    if mesh is None:
        mesh = _default_mesh()
    if mesh.axis_names != ("sweep",):
        raise ValueError(f"mesh must be 1-D with axis name 'sweep', got axis names {mesh.axis_names}")
    num_devices = mesh.devices.size
    padded = -(-size // num_devices) * num_devices
    batched = NamedSharding(mesh, P("sweep"))
    replicated = NamedSharding(mesh, P())
    keys, key_axis = key, None
    if independent_keys:
        keys, key_axis = jax.vmap(lambda j: jr.fold_in(key, j))(jnp.arange(size)), 0
        keys = _pad_and_place(keys, 0, size, padded, batched, replicated)
    else:
        keys = jax.device_put(key, replicated)
    flow = _pad_and_place(flow, axes, size, padded, batched, replicated)
    if state_in_axes is None:
        # After one chunk every member has its own state: carry a batched state from the start.
        state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (size, *a.shape)) if eqx.is_array(a) else a, state)
    state = _pad_and_place(state, 0, size, padded, batched, replicated)
    if checkpoint_every is not None:
        checkpoint_every = _validate.positive_int("checkpoint_every", checkpoint_every)
    chunk = _chunk_length(num_steps, record_every, chunk_size, progress, checkpoint, checkpoint_every)
    plan = _Plan(num_steps, chunk, record_every, step_axis=1)

    def chunk_fn(s, start, length):
        return _sweep_chunk(flow, s, keys, start, axes, 0, key_axis, length, record_every, record)

    fp = {}
    if checkpoint is not None:
        fp = _checkpoint.fingerprint(
            flow=flow,
            initial_state=state,
            key=key,
            num_steps=num_steps,
            chunk=chunk,
            record_every=record_every,
            record=record or "state",
            version=_VERSION_FOR_RESUME,
            dtype=str(state.x.dtype),
            independent_keys=str(independent_keys),
            devices=num_devices,
        )
    rec_template = None
    if checkpoint is not None and record_every:
        one = jax.eval_shape(
            record or _identity, jax.tree_util.tree_map(lambda a: a[0] if eqx.is_array(a) else a, state)
        )
        rec_template = _stacked_like(one, num_steps // record_every, 0)
        rec_template = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((padded, *s.shape), s.dtype), rec_template)
    final, info, rec = _drive(
        chunk_fn,
        state,
        plan,
        progress=progress,
        desc=f"sweep[{size}]",
        checkpoint=checkpoint,
        fingerprint=fp,
        rec_template=rec_template,
    )
    unpad = ft.partial(jax.tree_util.tree_map, lambda a: a[:size] if eqx.is_array(a) and a.ndim else a)
    final = unpad(final)
    info = unpad(info) if info is not None else {}
    rec = unpad(rec) if rec is not None else None
    ok = jax.vmap(_state_ok)(final, info) if info else jnp.ones((size,), bool)
    trace = Trace(info=info, states=rec, record_steps=_record_steps(num_steps, record_every), ok=ok)
    if throw and not bool(jnp.all(ok)):
        bad = np.flatnonzero(~np.asarray(ok)).tolist()
        raise FlowError(f"sweep members {bad} ended in an unusable state; inspect trace.ok and trace.info")
    return final, trace


# ------------------------------------------------------------------------------ BlackJAX adapter
class SamplingAlgorithm(NamedTuple):
    """BlackJAX-style pair: ``init(position, rng_key=None)`` and ``step(rng_key, state)``."""

    init: Callable[..., Particles]
    step: Callable[[PRNGKeyArray, Particles], tuple[Particles, Info]]


def as_sampling_algorithm(flow: AbstractFlow) -> SamplingAlgorithm:
    """Expose a flow with BlackJAX's calling convention (key first in ``step``)."""

    def init(position, rng_key=None):
        del rng_key
        return flow.init(position)

    def step(rng_key, state):
        return flow.step(state, rng_key)

    return SamplingAlgorithm(init=init, step=step)
