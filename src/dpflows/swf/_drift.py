"""The flow's arithmetic on a release: 1-D transport maps and the sliced drift (METHODS.md §4b, steps 1-4)."""

from __future__ import annotations

import functools as ft
from typing import Any

import jax
import jax.numpy as jnp

from .._typing import Array, Float

__all__ = ["sliced_drift"]


@ft.partial(jax.jit, static_argnames="percentiles")  # one program, so eager (notebook) steps compile once
def _drift(x, w, directions, table, count, noise, percentiles):
    u = directions @ x.T + noise  # (L, n): sorting along the last axis is fastest on XLA:CPU
    q = _transport_percentiles(u, table) if percentiles else _transport_exact(u, w, table, count)
    r = u - q
    drift = (r.T @ directions) / directions.shape[0]
    return drift, jnp.mean(r**2, axis=0) @ w


def _transport_exact(u: Array, w: Array, table: Array, count: Array) -> Array:
    """q_il = Q_l(F_l(u_il)): weighted mid-rank levels of u against the table's (j + ½)/count grid."""
    perm = jnp.argsort(u, axis=-1)
    ws = w[perm]
    levels = jnp.cumsum(ws, axis=-1) - 0.5 * ws
    q_sorted = _interp_uniform(levels, table, count)
    return jax.vmap(lambda p, q: jnp.zeros_like(q).at[p].set(q))(perm, q_sorted)


def _interp_uniform(levels: Array, table: Array, count: Array) -> Array:
    """Row-wise ``jnp.interp(levels, (j + ½)/count, table)`` by arithmetic on the uniform grid.

    The grid is uniform, so the bracketing index is ⌊level·count − ½⌋ (clamped, as interp clamps):
    two gathers per level instead of a binary search (which is ~50x slower on XLA:CPU here).
    """
    c = jnp.maximum(count, 1).astype(levels.dtype)
    pos = jnp.clip(levels * c - 0.5, 0.0, c - 1)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(count, 1).astype(jnp.int32) - 1)
    frac = pos - lo.astype(levels.dtype)
    take = jax.vmap(jnp.take)
    return take(table, lo) * (1 - frac) + take(table, hi) * frac


def _transport_percentiles(u: Array, table: Array) -> Array:
    """The official code's map: F from the particles' own P-percentile table, Q from the release's."""
    num = table.shape[-1]
    perc = jnp.linspace(0.0, 1.0, num, dtype=u.dtype)
    qu = jnp.quantile(u, perc, axis=-1).T  # (L, P)
    cdf = jnp.clip(jax.vmap(jnp.interp, in_axes=(0, 0, None))(u, qu, perc), 0.0, 1.0)
    return jax.vmap(jnp.interp, in_axes=(0, None, 0))(cdf, perc, table)


def _targets(u: Array, w: Array, table: Array, count: Array, percentiles: bool) -> Array:
    """Targets q = Q(F(u)) per direction, by the exact or the P-percentile map (for the trainer's loss)."""
    return _transport_percentiles(u, table) if percentiles else _transport_exact(u, w, table, count)


def sliced_drift(
    x: Float[Array, "n d"],
    w: Float[Array, " n"],
    directions: Float[Array, "L d"],
    table: Float[Array, "L B"],
    count: Any,
    noise: Float[Array, "L n"],
    *,
    percentiles: bool = False,
) -> tuple[Float[Array, "n d"], Float[Array, ""]]:
    """g_i = (1/L) Σ_l (u_il − q_il) θ_l with u = Θx + noise, and the sliced W₂² estimate Σ_i w_i mean_l (u − q)².

    ``table`` holds the target's sorted values (first ``count`` valid) or, with ``percentiles``, its
    quantiles at P equally spaced levels. With zero noise and exact tables, g is the
    sliced-Wasserstein flow's drift (Liutkus et al. 2019) for the target's empirical projections.
    Differentiable in ``x`` almost everywhere (through the sorted pairing).
    """
    return _drift(x, w, directions, table, count, noise, percentiles)
