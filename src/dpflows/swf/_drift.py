"""The flow's arithmetic on a release: 1-D transport maps and the sliced drift (METHODS.md §4b, steps 1-4)."""

from __future__ import annotations

import functools as ft
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.extend.mlir import ir
from jax.extend.mlir.dialects import stablehlo as hlo
from jax.interpreters import batching, mlir

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
    perm = _argsort_rows(jax.lax.stop_gradient(u))  # the pairing is piecewise constant in u
    ws = w[perm]
    levels = _cumsum_rows(ws) - 0.5 * ws
    return _unpermute_rows(perm, _interp_uniform(levels, table, count))


def _unpermute_rows(perm: Array, values: Array) -> Array:
    """out[l, perm[l, j]] = values[l, j], as one scatter into the flattened rows (~2x faster than row-batched)."""
    rows, n = perm.shape
    if rows * n >= 2**31:  # flat int32 indices would overflow
        return jax.vmap(lambda p, v: jnp.zeros_like(v).at[p].set(v))(perm, values)
    flat = (jax.lax.broadcasted_iota(jnp.int32, perm.shape, 0) * n + perm).reshape(-1)
    out = jnp.zeros(rows * n, values.dtype).at[flat].set(values.reshape(-1), mode="promise_in_bounds")
    return out.reshape(rows, n)


def _order_keys(u: Array) -> Array:
    """Unsigned integers in the order of u: its IEEE bits with the sign folded (−0 → +0, NaN → one NaN last).

    Positive floats order as their bits with the top bit set; negative ones as their flipped bits.
    Zeros and NaNs are first made canonical, so equal values (as ``jnp.sort`` compares them) get
    equal keys.
    """
    bits = 8 * u.dtype.itemsize
    utype = jnp.dtype(f"uint{bits}")
    u = jnp.where(jnp.isnan(u), jnp.asarray(jnp.nan, u.dtype), jnp.where(u == 0, jnp.zeros_like(u), u))
    b = jax.lax.bitcast_convert_type(u, utype)
    top = jnp.asarray(1 << (bits - 1), utype)
    return b ^ jnp.where(b >= top, ~jnp.zeros_like(b), top)


def _argsort_rows(u: Array) -> Array:
    """Stable argsort of each row of u (L, n): ties by index, NaNs last, as ``jnp.argsort``.

    XLA:CPU sorts one array of plain integers with the C++ library sort on native values, but an
    argsort (values and an index array, compared by a compiled total-order comparator) is ~4x slower. So
    each row's order keys k_i (see :func:`_order_keys`) are packed with their position i into unique
    integers k_i·2³² + i: for float32 one sort of these 64-bit integers orders the row, and its low
    32 bits are the permutation. StableHLO has 64-bit integers whatever ``jax_enable_x64`` says, so
    that sort is a small primitive lowered directly (:data:`_packed_argsort_p`). float64 keys
    (x64 on) take two such passes of an LSD radix sort (:func:`_radix_argsort`).
    """
    key = _order_keys(u)
    if key.dtype.itemsize <= 4:
        return _packed_argsort_p.bind(key)
    return _radix_argsort(key)


def _radix_argsort(key: Array) -> Array:
    """Stable argsort of 64-bit keys (L, n), as an LSD radix sort with the position packed under each digit.

    With b = ⌈log₂ n⌉ position bits, digits are ≤ 64 − b bits wide, so every packed integer is
    unique and one plain sort orders a pass; ties keep the previous pass's order. Two passes for
    n ≤ 2³².
    """
    utype, bits = key.dtype, 8 * key.dtype.itemsize
    n = key.shape[-1]
    index_bits = max(1, (n - 1).bit_length())
    digit_bits = bits - index_bits
    position = jax.lax.broadcasted_iota(utype, key.shape, 1)
    low = jnp.asarray((1 << index_bits) - 1, utype)
    take = jax.vmap(jnp.take)  # row-wise gathers (faster than take_along_axis on XLA:CPU)
    perm, shift = None, 0
    while shift < bits:
        width = min(digit_bits, bits - shift)
        k = key if perm is None else take(key, perm)  # keys in the previous pass's order
        digit = (k >> jnp.asarray(shift, utype)) & jnp.asarray((1 << width) - 1, utype)
        packed = jax.lax.sort((digit << jnp.asarray(index_bits, utype)) | position, dimension=1, is_stable=True)
        order = (packed & low).astype(jnp.int32)
        perm = order if perm is None else take(perm, order)
        shift += width
    return perm


def _packed_argsort_lowering(ctx: Any, keys: Any) -> list[Any]:
    """StableHLO for :data:`_packed_argsort_p`: sort (key << 32 | position) as uint64, keep the low word."""
    shape = ctx.avals_in[0].shape
    axis = len(shape) - 1
    u64 = ir.IntegerType.get_unsigned(64)
    wide = ir.RankedTensorType.get(shape, u64)

    def full(value: int) -> Any:
        return hlo.broadcast_in_dim(wide, mlir.ir_constant(np.uint64(value)), mlir.dense_int_array([]))

    packed = hlo.or_(hlo.shift_left(hlo.convert(wide, keys), full(32)), hlo.iota(wide, mlir.i64_attr(axis)))
    # The packed integers are distinct, so stability is moot; std::stable_sort is ~10% faster here.
    sort = hlo.SortOp([wide], [packed], dimension=mlir.i64_attr(axis), is_stable=ir.BoolAttr.get(True))
    scalar = ir.RankedTensorType.get([], u64)
    block = sort.comparator.blocks.append(scalar, scalar)
    with ir.InsertionPoint(block):
        less = hlo.ComparisonDirectionAttr.get("LT")
        hlo.return_([hlo.compare(*block.arguments, less, compare_type=hlo.ComparisonTypeAttr.get("UNSIGNED"))])
    low = hlo.and_(sort.results[0], full(0xFFFFFFFF))
    return [hlo.convert(ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(32)), low)]


def _packed_argsort_batch(args: Any, dims: Any) -> tuple[Array, int]:
    """Batching rule: the primitive sorts along the last axis, so any leading batch axis is fine."""
    return _packed_argsort_p.bind(jnp.moveaxis(args[0], dims[0], 0)), 0


# Argsort along the last axis of unsigned keys of ≤ 32 bits.
_packed_argsort_p = Primitive("dpflows_packed_argsort")
_packed_argsort_p.def_abstract_eval(lambda keys: keys.update(dtype=jnp.dtype(jnp.int32), weak_type=False))
_packed_argsort_p.def_impl(jax.jit(lambda keys: _packed_argsort_p.bind(keys)))  # eager calls run compiled
mlir.register_lowering(_packed_argsort_p, _packed_argsort_lowering)
batching.primitive_batchers[_packed_argsort_p] = _packed_argsort_batch


def _cumsum_rows(a: Array, block: int = 64) -> Array:
    """Inclusive cumulative sum along the last axis, as block matmuls with a triangle of ones.

    XLA:CPU lowers ``jnp.cumsum`` to a log-depth scan over the whole row (~5x slower here); within
    blocks of 64 a (64, 64) triangular matmul does it, and a short cumsum adds the block offsets.
    """
    n = a.shape[-1]
    num = -(-n // block)
    pad = [(0, 0)] * (a.ndim - 1) + [(0, num * block - n)]
    blocks = jnp.pad(a, pad).reshape(*a.shape[:-1], num, block)
    tri = jnp.triu(jnp.ones((block, block), a.dtype))
    within = jnp.matmul(blocks, tri, precision=jax.lax.Precision.HIGHEST)
    totals = within[..., -1]
    offsets = jnp.cumsum(totals, axis=-1) - totals
    return (within + offsets[..., None]).reshape(*a.shape[:-1], num * block)[..., :n]


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
