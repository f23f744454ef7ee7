"""The flow interface and the runtime: ``run``, ``stack``, ``sweep`` and the ``Trace``.

A flow is an ``eqx.Module`` whose fields are its hyper-parameters; ``step`` is pure. ``run`` is one
compiled ``lax.scan`` over steps whose keys are ``fold_in(key, i)`` with ``i`` the global step index,
so a run gives the same bits however it is chunked (progress bar, checkpoints, kill and resume).
Progress bars and checkpoints live in Python *between* compiled chunks; nothing calls back from
traced code, so the same driver serves ``run`` and the vmapped, sharded ``sweep``.

There is one loop, :func:`iterate`, for any pytree carry; :func:`run` (flows on :class:`Particles`),
:func:`sweep` (a vmapped, sharded batch of flows) and :func:`fit` (optax training of a model) are
front ends to it. A flow or trainer with a tolerance gives a stopping rule (``terminate``) instead of
writing its own ``while_loop``: the loop then exits early in a single run and freezes finished members
in a sweep (optimistix's ``iterative_solve`` does the same for its solvers).
"""

from __future__ import annotations

import abc
import dataclasses
import functools as ft
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _checkpoint, _validate
from ._typing import Array, Bool, Info, PRNGKeyArray, PyTreeAny
from .particles import Particles

__all__ = [
    "AbstractFlow",
    "BlackJAXFlow",
    "FitResult",
    "FlowError",
    "FlowWarning",
    "Trace",
    "as_sampling_algorithm",
    "fit",
    "iterate",
    "run",
    "stack",
    "sweep",
]

_VERSION_FOR_RESUME = "0.1"  # major.minor of the checkpoint-compatible runtime


class FlowError(RuntimeError):
    """A run ended in a state that is not usable (non-finite particles, unconverged inner solves)."""


class FlowWarning(UserWarning):
    """A run with ``throw=False`` ended degenerate; the message names the cause and a fix."""


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

    def terminate(self, state: Particles, info: Info) -> Bool[Array, ""]:
        """Optional stopping rule, evaluated on each step's ``(new_state, info)``.

        A flow with a tolerance (a retrieval, a solver) overrides this instead of writing its own
        ``while_loop``. After the first step for which it is true, :func:`run` skips the remaining
        steps (a single run leaves its loop; a member of a :func:`sweep` is frozen while the others
        go on), the trace repeats the last step's diagnostics, and ``trace.info["active"]`` says which
        steps ran. Flows that do not override it never stop early and have no ``"active"`` entry.
        """
        del state, info
        return jnp.zeros((), bool)


class Trace(eqx.Module):
    """What a run recorded.

    Attributes:
        info: each step's diagnostics, stacked: ``info[name][i]`` is from step ``i + 1``. For a
            sweep every array has a leading member axis.
        states: the recorded states (or ``record(state)`` values) after steps ``record_steps``,
            stacked along a leading axis (after the member axis for sweeps); ``None`` if
            ``record_every == 0``.
        record_steps: number of steps done at each record, shape ``(num_records,)``.
        ok: whether the run ended usable: the final state is finite, and, where the flow reports
            them, the last step's ``energy`` is finite, its ``converged`` is true and its
            ``healthy`` is true; one flag per member for sweeps. A run with ``throw=False`` that
            is not ok also warns (:class:`FlowWarning`) naming the cause.
    """

    info: dict[str, Array]
    states: PyTreeAny
    record_steps: Array | None
    ok: Bool[Array, ...]

    def __getitem__(self, name: str) -> Array:
        """``trace["energy"]`` is ``trace.info["energy"]``."""
        return self.info[name]


# ------------------------------------------------------------------------------------ the scan
def _identity(state: Any) -> Any:
    return state


def _has_terminate(flow: AbstractFlow) -> bool:
    return type(flow).terminate is not AbstractFlow.terminate


def _scan_steps(step, carry, key, start, length: int, record_every: int, record):
    """``length`` steps of ``step`` from global index ``start``; record every ``record_every`` (0: never)."""

    def one(c, i):
        return step(c, jr.fold_in(key, i))

    steps = start + jnp.arange(length, dtype=jnp.int32)
    if record_every == 0:
        carry, info = jax.lax.scan(one, carry, steps)
        return carry, info, None

    def block(c, idx):
        c, info = jax.lax.scan(one, c, idx)
        return c, (info, (record or _identity)(c))

    carry, (info, rec) = jax.lax.scan(block, carry, steps.reshape(length // record_every, record_every))
    info = jax.tree_util.tree_map(lambda a: a.reshape(length, *a.shape[2:]), info)
    return carry, info, rec


class _Stopping(NamedTuple):
    """Carry of a loop with a stopping rule: the state, whether it has stopped, the last step's info."""

    state: PyTreeAny
    done: Array
    last: Info


def _initial_stopping(step, state, key) -> _Stopping:
    shapes = jax.eval_shape(lambda s: step(s, key)[1], state)
    last = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return _Stopping(state, jnp.zeros((), bool), last)


def _until_steps(step, terminate, carry: _Stopping, key, start, length: int, record_every: int, record):
    """Like :func:`_scan_steps` but stops after the first step where ``terminate`` is true.

    A ``while_loop`` writes each step's info into preallocated buffers; the slots of steps that did
    not run repeat the last info (``active`` is false there) and the missing records repeat the final
    state's, which is what a scan over frozen steps would give. Under ``vmap`` the loop runs until
    every member has stopped, and stopped members are frozen by the batched predicate.
    """
    rec_fn = record or _identity
    buf = jax.tree_util.tree_map(lambda a: jnp.zeros((length, *a.shape), a.dtype), carry.last)
    num_rec = length // record_every if record_every else 0
    rec = None
    if num_rec:
        shapes = jax.eval_shape(rec_fn, carry.state)
        rec = jax.tree_util.tree_map(lambda a: jnp.zeros((num_rec, *a.shape), a.dtype), shapes)

    def cond(c):
        j, stop = c[0], c[1].done
        return (j < length) & ~stop

    def body(c):
        j, inner, buf, active, rec = c
        new, info = step(inner.state, jr.fold_in(key, start + j))
        stop = jnp.asarray(terminate(new, info), bool).reshape(())
        buf = jax.tree_util.tree_map(lambda b, v: b.at[j].set(v), buf, info)
        active = active.at[j].set(True)
        if num_rec:
            slot = (j + 1) // record_every - 1
            due = (j + 1) % record_every == 0
            value = rec_fn(new)
            rec = jax.tree_util.tree_map(lambda r, v: jnp.where(due, r.at[slot].set(v), r), rec, value)
        return j + 1, _Stopping(new, stop, info), buf, active, rec

    init = (jnp.zeros((), jnp.int32), carry, buf, jnp.zeros((length,), bool), rec)
    j, carry, buf, active, rec = jax.lax.while_loop(cond, body, init)
    idle = jnp.arange(length, dtype=jnp.int32) >= j
    buf = jax.tree_util.tree_map(lambda b, v: jnp.where(idle.reshape((length,) + (1,) * v.ndim), v, b), buf, carry.last)
    info = {**buf, "active": active}
    if num_rec:
        final = rec_fn(carry.state)
        stale = (jnp.arange(num_rec, dtype=jnp.int32) + 1) * record_every > j
        rec = jax.tree_util.tree_map(
            lambda r, v: jnp.where(stale.reshape((num_rec,) + (1,) * v.ndim), v, r), rec, final
        )
    return carry, info, rec


def _steps(step, terminate, carry, key, start, length: int, record_every: int, record):
    if terminate is None:
        return _scan_steps(step, carry, key, start, length, record_every, record)
    stop_record = None if record is None and not record_every else _StateRecord(record or _identity)
    return _until_steps(step, terminate, carry, key, start, length, record_every, stop_record)


class _StateRecord(eqx.Module):
    """``record`` applied to the state inside a stopping carry."""

    record: Callable

    def __call__(self, state):
        return self.record(state)


class _FlowStep(eqx.Module):
    """A flow's ``step`` (and ``terminate``) as a ``(carry, key)`` step for the generic loop."""

    flow: AbstractFlow

    def __call__(self, state, key):
        return self.flow.step(state, key)


class _FlowStop(eqx.Module):
    flow: AbstractFlow

    def __call__(self, state, info):
        return self.flow.terminate(state, info)


def _flow_steps(flow, carry, key, start, length, record_every, record):
    term = _FlowStop(flow) if _has_terminate(flow) else None
    return _steps(_FlowStep(flow), term, carry, key, start, length, record_every, record)


@eqx.filter_jit
def _run_chunk(flow, state, key, start, length, record_every, record):
    return _flow_steps(flow, state, key, start, length, record_every, record)


@eqx.filter_jit
def _sweep_chunk(flow, state, key, start, flow_axes, state_axis, key_axis, length, record_every, record):
    fn = ft.partial(_flow_steps, length=length, record_every=record_every, record=record)
    return eqx.filter_vmap(fn, in_axes=(flow_axes, state_axis, key_axis, None))(flow, state, key, start)


@eqx.filter_jit
def _iterate_chunk(step, terminate, carry, key, start, length, record_every, record):
    return _steps(step, terminate, carry, key, start, length, record_every, record)


def _health(state: Particles, info: Info) -> dict[str, Array]:
    """Named checks of a run's end; every entry true means usable."""
    checks = {
        "finite_state": jnp.all(jnp.isfinite(state.x))
        & jnp.all(~jnp.isnan(state.logw))
        & jnp.all(jnp.isfinite(state.v))
    }
    if "energy" in info and jnp.issubdtype(info["energy"].dtype, jnp.floating):
        checks["finite_energy"] = jnp.all(jnp.isfinite(info["energy"][-1]))
    if "converged" in info:
        checks["converged"] = jnp.all(info["converged"][-1])
    if "healthy" in info:
        checks["healthy"] = jnp.all(info["healthy"][-1])
    return checks


def _state_ok(state: Particles, info: Info) -> Array:
    ok = jnp.ones((), bool)
    for value in _health(state, info).values():
        ok = ok & value
    return ok


_CAUSES = {
    "finite_state": (
        "the particles became non-finite (NaN/inf)",
        "try a smaller step_size or check the potential's gradient",
    ),
    "finite_energy": (
        "the last step's energy is non-finite",
        "check the potential/energy at the particles (a log of zero, an overflow) or use a smaller step_size",
    ),
    "converged": (
        "an inner solve (e.g. Sinkhorn) did not converge at the last step",
        "raise the entropic epsilon, max_iterations or the solver threshold (the step size is not the cause)",
    ),
    "healthy": (
        "the flow reported itself degenerate at the last step (info['healthy'] is false, e.g. collapsed weights)",
        "call flow.diagnose(trace) where the flow has one (SHKSampler does) and see its documentation of "
        "info['healthy']; for weight collapse use a larger (or Silverman) bandwidth or a smaller reaction step",
    ),
}


def _diagnosis(state, info, members: bool = False) -> str | None:
    """A sentence naming why a run is not ok (``None`` if it is, or if the values are traced)."""
    checks = jax.vmap(_health)(state, info) if members else _health(state, info)
    if not _validate.is_concrete(checks):
        return None
    parts = []
    for name, value in checks.items():
        bad = ~np.asarray(value)
        if np.any(bad):
            what, fix = _CAUSES[name]
            where = f" (members {np.flatnonzero(bad).tolist()})" if members else ""
            parts.append(f"{what}{where}: {fix}")
    return "; ".join(parts) or None


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
    tail: Callable | None = None,
):
    """Loop over compiled chunks in Python: progress bar, checkpoint writes and resume.

    ``tail(state, length)``, when given, builds the ``(info, records)`` of ``length`` steps that a
    stopped carry would produce (its last info repeated, ``active`` false, its records repeated):
    once a single run's stopping rule has fired, the remaining chunks are not run (nor compiled).
    """
    done, infos, recs = 0, [], []
    ckpt_dir = None if checkpoint is None else Path(checkpoint)
    if ckpt_dir is not None:
        loaded = _checkpoint.load_latest(ckpt_dir)
        if loaded is not None:
            arrays, meta = loaded
            _checkpoint.check_meta(meta, fingerprint, ckpt_dir)
            state, done, info0, rec0 = _unpack(arrays, meta, state, rec_template)
            _check_restored_particles(state, ckpt_dir)
            infos.append(info0)
            recs.append(rec0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.num_steps, initial=done, desc=desc, unit="step", leave=False)
    delay = float(os.environ.get("DPFLOWS_DEBUG_CHUNK_DELAY", "0") or 0)  # test hook for kill tests

    def advance(info, rec, length):
        nonlocal done, infos, recs
        infos.append(info)
        recs.append(rec)
        done += length
        if ckpt_dir is not None:
            infos = [_concat(infos, plan.step_axis)]
            recs = [_concat(recs, plan.step_axis)]
            _save(ckpt_dir, done, state, infos[0], recs[0], fingerprint)
        if bar is not None:
            bar.update(length)

    try:
        while done < plan.num_steps:
            length = min(plan.chunk, plan.num_steps - done)
            state, info, rec = chunk_fn(state, jnp.asarray(done, jnp.int32), length)
            advance(info, rec, length)
            if delay:
                time.sleep(delay)
            if tail is not None and done < plan.num_steps and _stopped(state):
                length = plan.num_steps - done
                advance(*tail(state, length), length)
    finally:
        if bar is not None:
            bar.close()
    return state, _concat(infos, plan.step_axis), _concat(recs, plan.step_axis)


def _stopped(carry) -> bool:
    """A concrete single-run stopping carry whose rule has fired."""
    return isinstance(carry, _Stopping) and _validate.is_concrete(carry.done) and bool(np.all(carry.done))


def _frozen_tail(record_every: int, record, carry: _Stopping, length: int):
    """What ``length`` more steps of a stopped carry record: the last info, inactive, and frozen records."""
    info = {k: jnp.broadcast_to(v, (length, *v.shape)) for k, v in carry.last.items()}
    info["active"] = jnp.zeros((length,), bool)
    rec = None
    if record_every:
        one = (record or _identity)(carry.state)
        rec = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (length // record_every, *a.shape)), one)
    return info, rec


def _check_restored_particles(carry, folder) -> None:
    """Refuse a checkpoint whose particle positions or momenta are not finite (the run had diverged)."""
    leaves = jax.tree_util.tree_flatten_with_path(carry, is_leaf=lambda a: isinstance(a, Particles))[0]
    index = 0
    for _, leaf in leaves:
        if isinstance(leaf, Particles):
            for name in ("x", "v"):
                arr = np.asarray(getattr(leaf, name))
                bad = int(np.sum(~np.isfinite(arr)))
                if bad:
                    raise _checkpoint.CheckpointError(
                        f"checkpoint in {folder} holds {bad} NaN/inf entries in the particles' {name} "
                        f"(leaf 'state/{index + (0 if name == 'x' else 2)}'): the run that wrote it had diverged. "
                        "Delete the file (an older checkpoint is then used) or start a fresh run."
                    )
            index += len(jax.tree_util.tree_leaves(leaf))
        else:
            index += 1


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
    stopping = _has_terminate(flow)

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
    carry = _initial_stopping(flow.step, state, key) if stopping else state
    final, info, rec = _drive(
        chunk_fn,
        carry,
        plan,
        progress=progress,
        desc=type(flow).__name__,
        checkpoint=checkpoint,
        fingerprint=fp,
        rec_template=rec_template,
        tail=ft.partial(_frozen_tail, record_every, record) if stopping else None,
    )
    if stopping:
        final = final.state
    if info is None:  # num_steps == 0
        info = {}
    ok = _state_ok(final, info)
    trace = Trace(info=info, states=rec, record_steps=_record_steps(num_steps, record_every), ok=ok)
    if throw:
        final = _raise_if_bad(final, ok, num_steps, _diagnosis(final, info))
    else:
        _warn_if_bad(_diagnosis(final, info), type(flow).__name__)
    return final, trace


def _warn_if_bad(diagnosis: str | None, what: str) -> None:
    if diagnosis:
        warnings.warn(f"{what} ended degenerate (trace.ok is False): {diagnosis}", FlowWarning, stacklevel=3)


def _check_stable(name: str, fn: Any) -> None:
    if fn is None:
        return
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def iterate(
    step: Callable[[PyTreeAny, PRNGKeyArray], tuple[PyTreeAny, Info]],
    carry: PyTreeAny,
    key: PRNGKeyArray,
    num_steps: int,
    *,
    terminate: Callable[[PyTreeAny, Info], Array] | None = None,
    record_every: int = 0,
    record: Callable[[PyTreeAny], PyTreeAny] | None = None,
    progress: bool = False,
    desc: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    chunk_size: int | None = None,
) -> tuple[PyTreeAny, Info, PyTreeAny]:
    """The one loop: ``num_steps`` applications of ``step`` to a pytree ``carry``.

    Step ``i`` (global, 0-based) is ``carry, info = step(carry, fold_in(key, i))``. The steps run as
    compiled ``lax.scan`` chunks; a progress bar and atomic checkpoints happen in Python between
    chunks, and a run resumed from its checkpoint ends bitwise equal to an uninterrupted one. With
    ``terminate`` the loop stops after the first step where ``terminate(carry, info)`` is true (a
    ``while_loop`` inside each chunk; the remaining slots of ``info`` repeat the last step's values
    and ``info["active"]`` marks the steps that ran). :func:`run`, :func:`sweep` and :func:`fit`
    are built on it.

    ``step`` and ``terminate`` should be stable objects: an ``eqx.Module`` that holds its arrays as
    fields, or ``jax.tree_util.Partial(fn, *arrays)`` with a module-level ``fn``. Their array leaves
    are traced; a fresh closure per call would recompile every call and bake its arrays into the
    program. Usable under ``jit``/``vmap`` when ``progress`` and ``checkpoint`` are off (then
    differentiable in the carry, by forward mode with ``terminate``, reverse mode without).

    Args:
        step: ``(carry, key) -> (carry, info)``; ``info`` a dict of arrays with the same keys and
            shapes at every step.
        carry: the initial carry (any pytree of arrays).
        key: a PRNG key.
        num_steps: number of steps (≥ 0).
        terminate: optional ``(carry, info) -> bool[]`` stopping rule.
        record_every: keep ``carry`` (or ``record(carry)``) every this many steps (must divide
            ``num_steps``; 0 keeps none).
        record: optional function of the carry to keep instead of the carry.
        progress: a tqdm bar between compiled chunks.
        desc: the bar's label.
        checkpoint: a folder for atomic checkpoints and resume (as in :func:`run`).
        checkpoint_every: steps between checkpoints.
        chunk_size: steps per compiled chunk.

    Returns:
        ``(carry, info, records)``: the final carry, each step's info stacked along a leading axis,
        and the records (``None`` without ``record_every``).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> from jax.tree_util import Partial
        >>> def halve(x, key, rate):
        ...     return x * rate, {"size": jnp.abs(x)}
        >>> def small(x, info):
        ...     return jnp.abs(x) < 1e-3
        >>> x, info, _ = iterate(Partial(halve, rate=0.5), jnp.asarray(1.0), jr.key(0), 100, terminate=small)
        >>> int(info["active"].sum()), float(x) < 1e-3
        (10, True)
    """
    _check_stable("step", step)
    _check_stable("terminate", terminate)
    _check_key(key)
    num_steps = _validate.positive_int("num_steps", num_steps, allow_zero=True)
    record_every = _validate.positive_int("record_every", record_every, allow_zero=True)
    if record_every and num_steps % record_every:
        raise ValueError(f"record_every must divide num_steps, got record_every={record_every}, num_steps={num_steps}")
    if checkpoint_every is not None:
        checkpoint_every = _validate.positive_int("checkpoint_every", checkpoint_every)
    traced = not _validate.is_concrete((step, terminate, carry, key))
    if traced and checkpoint is not None:
        raise ValueError("checkpoint cannot be used under jit/vmap; call iterate outside transformations")
    if traced:
        progress = False
    chunk = _chunk_length(num_steps, record_every, chunk_size, progress, checkpoint, checkpoint_every)
    plan = _Plan(num_steps, chunk, record_every, step_axis=0)
    inner_record = record
    if terminate is not None:
        carry = _initial_stopping(step, carry, key)

    def chunk_fn(c, start, length):
        return _iterate_chunk(step, terminate, c, key, start, length, record_every, inner_record)

    fp = {}
    rec_template = None
    if checkpoint is not None:
        fp = _checkpoint.fingerprint(
            step_fn=step,
            terminate=terminate or "none",
            initial_state=carry,
            key=key,
            num_steps=num_steps,
            chunk=chunk,
            record_every=record_every,
            record=record or "carry",
            version=_VERSION_FOR_RESUME,
        )
        if record_every:
            one = carry.state if terminate is not None else carry
            rec_template = _stacked_like(jax.eval_shape(record or _identity, one), num_steps // record_every, 0)
    final, info, rec = _drive(
        chunk_fn,
        carry,
        plan,
        progress=progress,
        desc=desc or "iterate",
        checkpoint=checkpoint,
        fingerprint=fp,
        rec_template=rec_template,
        tail=None if terminate is None else ft.partial(_frozen_tail, record_every, record),
    )
    if terminate is not None:
        final = final.state
    return final, (info if info is not None else {}), rec


# ------------------------------------------------------------------------------------------ fit
class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (its inexact arrays updated, everything else as given).
        opt_state: the optimizer state after the last step (pass it back to continue training).
        trace: ``trace.info["loss"]`` per step (plus the loss's aux entries), recorded models in
            ``trace.states`` if asked, and ``trace.ok`` (finite loss and parameters at the end).
    """

    model: Any
    opt_state: Any
    trace: Trace


class _FitStep(eqx.Module):
    """One optax step on ``loss(model, key)``; the carry is ``(params, opt_state, step index)``."""

    loss: Any
    optimizer: Any
    static: Any
    has_aux: bool = eqx.field(static=True)
    with_step: bool = eqx.field(static=True)

    def __call__(self, carry, key):
        params, opt_state, index = carry

        def value(p):
            extra = (index,) if self.with_step else ()
            out = self.loss(eqx.combine(p, self.static), key, *extra)
            return out if self.has_aux else (out, {})

        (loss, aux), grads = jax.value_and_grad(value, has_aux=True)(params)
        # optax mixes weakly-typed scalars with the parameters' dtype; strict promotion refuses that.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return (params, opt_state, index + 1), {"loss": loss, **aux}


class _FitView(eqx.Module):
    """Applies a user function of the model to the ``(params, opt_state)`` carry."""

    fn: Any
    static: Any

    def __call__(self, carry, *rest):
        return self.fn(eqx.combine(carry[0], self.static), *rest)


def fit(
    loss: Callable[[Any, PRNGKeyArray], Any],
    model: Any,
    optimizer: optax.GradientTransformation,
    key: PRNGKeyArray,
    num_steps: int,
    *,
    has_aux: bool = False,
    with_step: bool = False,
    opt_state: Any = None,
    terminate: Callable[[Any, Info], Array] | None = None,
    record_every: int = 0,
    record: Callable[[Any], PyTreeAny] | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    chunk_size: int | None = None,
    throw: bool = True,
) -> FitResult:
    """Train ``model`` by ``num_steps`` optax steps on ``loss(model, key)``, on the one loop.

    Step ``i`` draws its randomness (latents, minibatches) from ``fold_in(key, i)``, so training is
    bitwise the same however it is chunked, and a killed run resumes from its checkpoint to the same
    bits. The trained leaves are the inexact arrays of ``model`` (``eqx.is_inexact_array``); all other
    leaves are held fixed. Learning rates belong in the optimizer *state* when built with
    ``optax.inject_hyperparams(optax.adam)(learning_rate=lr)``, so a sweep over them is a
    ``jax.vmap`` of a function calling ``fit`` and compiles once.

    ``loss`` should be a stable object (an ``eqx.Module`` holding the data and hyper-parameters as
    array fields, or ``jax.tree_util.Partial``): its arrays are traced, not baked into the program.

    Args:
        loss: ``(model, key) -> scalar``, or ``(scalar, dict of arrays)`` with ``has_aux``.
        model: an equinox module or any pytree.
        optimizer: an optax gradient transformation.
        key: a PRNG key.
        num_steps: optimisation steps (≥ 0).
        has_aux: ``loss`` returns ``(value, aux)``; the aux arrays land in ``trace.info``.
        with_step: call ``loss(model, key, step)`` with the global step index (an int32 scalar),
            e.g. to cycle through a fixed list of releases.
        opt_state: optimizer state to continue from (default ``optimizer.init``).
        terminate: optional ``(model, info) -> bool[]``: stop after the first step where it is true.
        record_every: keep the model (or ``record(model)``) every this many steps.
        record: optional function of the model to keep.
        progress: a progress bar between compiled chunks.
        checkpoint: a folder for atomic checkpoints and bitwise resume.
        checkpoint_every: steps between checkpoints.
        chunk_size: steps per compiled chunk.
        throw: raise :class:`FlowError` if the final loss or parameters are not finite.

    Returns:
        :class:`FitResult` ``(model, opt_state, trace)``.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr, optax
        >>> from jax.tree_util import Partial
        >>> def sq(w, key, target):
        ...     return jnp.sum((w - target) ** 2)
        >>> res = fit(Partial(sq, target=jnp.ones(3)), jnp.zeros(3), optax.sgd(0.25), jr.key(0), 20)
        >>> bool(jnp.allclose(res.model, 1.0, atol=1e-4)), res.trace["loss"].shape
        (True, (20,))
    """
    _check_stable("loss", loss)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    params, static = eqx.partition(model, eqx.is_inexact_array)
    if not jax.tree_util.tree_leaves(params):
        raise ValueError("model has no inexact (floating) arrays to train")
    if opt_state is None:
        with jax.numpy_dtype_promotion("standard"):
            opt_state = optimizer.init(params)
    step = _FitStep(loss, optimizer, static, bool(has_aux), bool(with_step))
    stop = None if terminate is None else _FitView(terminate, static)
    view = None if record is None and not record_every else _FitView(record or _identity, static)
    (params, opt_state, _), info, rec = iterate(
        step,
        (params, opt_state, jnp.zeros((), jnp.int32)),
        key,
        num_steps,
        terminate=stop,
        record_every=record_every,
        record=view,
        progress=progress,
        desc="fit",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        chunk_size=chunk_size,
    )
    model = eqx.combine(params, static)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(params)]))
    ok = finite & (jnp.all(jnp.isfinite(info["loss"][-1])) if num_steps else True)
    trace = Trace(info=info, states=rec, record_steps=_record_steps(num_steps, record_every), ok=jnp.asarray(ok))
    if _validate.is_concrete(ok) and not bool(ok):
        msg = (
            f"training ended with a non-finite loss or non-finite parameters after {num_steps} steps: lower the "
            "learning rate, check the loss for a log of zero or an overflow"
        )
        if throw:
            raise FlowError(msg + "; or pass throw=False and inspect trace.info['loss'].")
        warnings.warn(msg + ".", FlowWarning, stacklevel=2)
    elif throw and not _validate.is_concrete(ok):
        params = jax.tree_util.tree_map(
            lambda p: eqx.error_if(p, ~ok, "training ended with a non-finite loss or parameters"), params
        )
        model = eqx.combine(params, static)
    return FitResult(model, opt_state, trace)


def _stacked_like(shapes, num: int, axis: int):
    """ShapeDtypeStructs of ``num`` records of ``shapes`` stacked at ``axis`` (shape is unchecked)."""
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape[:axis] + (num,) + s.shape[axis:], s.dtype), shapes
    )


def _record_steps(num_steps: int, record_every: int) -> Array | None:
    if not record_every:
        return None
    return jnp.arange(record_every, num_steps + 1, record_every, dtype=jnp.int32)


def _raise_if_bad(final: Particles, ok: Array, num_steps: int, diagnosis: str | None = None) -> Particles:
    cause = diagnosis or (
        "non-finite particles or energy (try a smaller step_size, check the potential's gradient), or an "
        "unconverged inner solve (raise epsilon, max_iterations or the threshold)"
    )
    msg = (
        f"the run ended in an unusable state after {num_steps} steps: {cause}. Pass throw=False to get "
        "the trace and inspect trace.info."
    )
    if _validate.is_concrete(ok):
        if not bool(ok):
            raise FlowError(msg)
        return final
    return eqx.tree_at(lambda s: s.x, final, eqx.error_if(final.x, ~ok, msg))


# ------------------------------------------------------------------------------ stack / sweep
def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if eqx.is_array(value):
        return f"an array of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _static_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Name the first field whose static value or pytree structure differs between two flows."""
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
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return (
            f"field {path!r} is {_describe(a)} in one flow and {_describe(b)} in another: give every flow the "
            "same kind of value (e.g. an array in each) to sweep it"
        )
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


def _put(leaf, sharding):
    """Place ``leaf`` (the same value on every process) with ``sharding``, which may span processes.

    In one process this is ``jax.device_put``. Under ``jax.distributed`` a sharding over other
    processes' devices cannot be targeted by ``device_put``; each process then builds its own shards
    from its copy of the value (``jax.make_array_from_callback``), which is how JAX assembles a global
    array from process-local data.
    """
    if sharding is None:
        return leaf
    if sharding.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        impl = jr.key_impl(leaf)
        data = _put(jr.key_data(leaf), sharding)
        return jr.wrap_key_data(data, impl=impl)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _pad_and_place(tree, axes, size: int, padded: int, sharding_batched, sharding_rep):
    def place(leaf, axis):
        if not eqx.is_array(leaf):
            return leaf
        if axis is None:
            return _put(leaf, sharding_rep)
        if padded > size:
            pad = jnp.repeat(leaf[-1:], padded - size, axis=0)
            leaf = jnp.concatenate([leaf, pad], axis=0)
        return _put(leaf, sharding_batched)

    if axes is None or isinstance(axes, int):
        return jax.tree_util.tree_map(lambda leaf: place(leaf, axes), tree)
    return jax.tree_util.tree_map(place, tree, axes, is_leaf=lambda x: x is None)


def _gather(tree):
    """Every process gets the whole of each global array (``process_allgather``); one process: as is."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    def one(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jr.wrap_key_data(jnp.asarray(one(jr.key_data(leaf))), impl=jr.key_impl(leaf))
        return jnp.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(one, tree)


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

    **Several processes** (a multi-host cluster, or several processes on one machine): call
    ``jax.distributed.initialize(...)`` first in every process and run the same script in each
    (e.g. one process per node under SLURM, where ``jax.distributed.initialize()`` reads the
    coordinator and ranks from the environment). The default mesh then spans every process's
    devices; each process places its share of the members from its own copy of the flows
    (``jax.make_array_from_callback``), and the results are gathered so that every process returns
    the whole batch as ordinary local arrays. Results equal a single-process sweep on the same
    number of devices (tested with two processes on loopback). ``checkpoint`` is refused there.
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
    elif len(flows) == 1 and in_axes is None:  # a batch of one: every array leaf gets a member axis
        flow = jax.tree_util.tree_map(lambda a: a[None] if eqx.is_array(a) else a, flows[0])
        axes = jax.tree_util.tree_map(lambda a: 0 if eqx.is_array(a) else None, flow)
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
        keys = _put(key, replicated)
    if checkpoint is not None and jax.process_count() > 1:
        raise ValueError(
            "checkpoint is not supported for a sweep over several processes (jax.distributed): each process would "
            "write the same folder; run without checkpoint, or checkpoint single-process sweeps"
        )
    if state_in_axes is None:
        # After one chunk every member has its own state: carry a batched state from the start.
        state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (size, *a.shape)) if eqx.is_array(a) else a, state)
    if _has_terminate(flow):
        member_info = eqx.filter_vmap(lambda f, s: f.step(s, key)[1], in_axes=(axes, 0))
        shapes = eqx.filter_eval_shape(member_info, flow, state)
        last = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        state = _Stopping(state, jnp.zeros((size,), bool), last)
    flow = _pad_and_place(flow, axes, size, padded, batched, replicated)
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
    final, info, rec = _gather((final, info, rec))
    unpad = ft.partial(jax.tree_util.tree_map, lambda a: a[:size] if eqx.is_array(a) and a.ndim else a)
    if isinstance(final, _Stopping):
        final = final.state
    final = unpad(final)
    info = unpad(info) if info is not None else {}
    rec = unpad(rec) if rec is not None else None
    ok = jax.vmap(_state_ok)(final, info) if info else jnp.ones((size,), bool)
    trace = Trace(info=info, states=rec, record_steps=_record_steps(num_steps, record_every), ok=ok)
    diagnosis = _diagnosis(final, info, members=True) if info else None
    if throw and not bool(jnp.all(ok)):
        bad = np.flatnonzero(~np.asarray(ok)).tolist()
        raise FlowError(f"sweep members {bad} ended in an unusable state: {diagnosis}; inspect trace.ok and trace.info")
    _warn_if_bad(diagnosis, f"sweep[{size}]")
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


class _LogDensity(eqx.Module):
    """``x ↦ −V(x)``: BlackJAX's log-density from a dpflows potential (a stable object, not a lambda)."""

    potential: Callable

    def __call__(self, x):
        return -self.potential(x)


class BlackJAXFlow(AbstractFlow):
    """A BlackJAX kernel as a dpflows flow: one independent chain per particle.

    The other direction of :func:`as_sampling_algorithm`. ``algorithm`` is a BlackJAX top-level
    constructor taking ``(logdensity_fn, **parameters)`` — ``blackjax.mala``, ``blackjax.hmc``,
    ``blackjax.barker_proposal``, ... — and is called inside ``step`` with the flow's parameters,
    which are array leaves: a :func:`sweep` over step sizes is one compiled program (with
    ``blackjax.mala(logdensity, step_size)`` a new step size would be a new closure and a recompile).
    Each particle's chain state (log-density, gradient, ...) rides in ``state.aux``, so a step
    evaluates the target once per particle, as BlackJAX's own loop does. Weights pass through; the
    time advances by ``step_size`` when the kernel has one (else by 1).

    Args:
        algorithm: the BlackJAX algorithm constructor (static: part of the compiled code).
        potential: V with π ∝ exp(−V), mapping one position to a scalar.
        **parameters: the kernel's numeric parameters (e.g. ``step_size=0.1``), stored as arrays.

    Example:
        >>> import blackjax, jax.numpy as jnp, jax.random as jr
        >>> from dpflows.potentials import GaussianPotential
        >>> flow = BlackJAXFlow(blackjax.mala, GaussianPotential(jnp.zeros(2), jnp.eye(2)), step_size=0.5)
        >>> state, trace = run(flow, flow.init(jnp.zeros((64, 2))), jr.key(0), 50)
        >>> trace["acceptance_rate"].shape
        (50,)
    """

    algorithm: Callable = eqx.field(static=True)
    potential: Callable
    parameters: dict[str, Array]

    def __init__(self, algorithm: Callable, potential: Callable, **parameters: Any):
        if not callable(algorithm):
            raise TypeError(f"algorithm must be a BlackJAX algorithm constructor, got {type(algorithm).__name__}")
        if not callable(potential):
            raise TypeError(f"potential must be callable, got {type(potential).__name__}")
        self.algorithm = algorithm
        self.potential = potential
        self.parameters = {name: jnp.asarray(value) for name, value in parameters.items()}
        for name, value in self.parameters.items():
            if name in ("step_size", "inverse_mass_matrix"):
                _validate.positive(name, value)

    def _kernel(self):
        return self.algorithm(_LogDensity(self.potential), **self.parameters)

    def init(self, x: Any, logw: Any = None) -> Particles:
        """Particles at ``x`` with one BlackJAX chain state per particle in ``aux``."""
        state = Particles.create(x, logw)
        chains = jax.vmap(self._kernel().init)(state.x)
        return Particles(x=state.x, logw=state.logw, v=state.v, t=state.t, aux=chains)

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One transition of every particle's chain (keys split per particle)."""
        if state.aux is None:
            raise ValueError("state.aux holds no chain states: build the state with this flow's init")
        chains = state.aux
        new, info = jax.vmap(self._kernel().step)(jr.split(key, state.num_particles), chains)
        dt = self.parameters.get("step_size", jnp.ones(()))
        out = {}
        for name in ("acceptance_rate", "is_divergent"):
            if hasattr(info, name):
                out[name] = jnp.mean(jnp.asarray(getattr(info, name), state.x.dtype))
        if hasattr(new, "logdensity"):
            out["energy"] = -jnp.sum(state.weights * new.logdensity.astype(state.x.dtype))
        moved = Particles(
            x=new.position, logw=state.logw, v=state.v, t=state.t + jnp.asarray(dt, state.t.dtype), aux=new
        )
        return moved, out
