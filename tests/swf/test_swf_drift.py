"""The DP-SW drift's fast path (issue 24): packed-key argsort, blocked cumsum, flat scatter vs a plain reference."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dpflows import swf
from dpflows.swf import _drift


def _reference_drift(x, w, directions, table, count, noise):
    """The drift written out per direction in NumPy float64: stable argsort, mid-rank levels, np.interp, scatter."""
    x, w, directions, table, noise = (np.asarray(a, np.float64) for a in (x, w, directions, table, noise))
    c = int(count)
    grid = (np.arange(c) + 0.5) / c
    u = directions @ x.T + noise
    q = np.empty_like(u)
    for row in range(u.shape[0]):
        order = np.argsort(u[row], kind="stable")
        levels = np.cumsum(w[order]) - 0.5 * w[order]
        q[row, order] = np.interp(levels, grid, table[row, :c])
    r = u - q
    return r.T @ directions / directions.shape[0], float(np.mean(r**2, axis=0) @ w)


def _case(key, n, d, k, m, *, width=None, ties=False):
    kx, kt, kn, kw = jr.split(key, 4)
    x = jr.normal(kx, (n, d))
    if ties:  # duplicated particles (as after resampling) project to equal values in every direction
        x = x.at[n // 2 :].set(x[: n - n // 2])
    directions = jr.normal(jr.fold_in(key, 7), (k, d))
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    table = jnp.sort(2.0 * jr.normal(kt, (k, width or m)), axis=1)
    if width is not None:  # padded as a release pads: beyond the count, the row's largest valid value
        table = jnp.where(jnp.arange(width) < m, table, table[:, m - 1 : m])
    noise = 0.3 * jr.normal(kn, (k, n))
    w = jr.uniform(kw, (n,), minval=0.5, maxval=2.0)
    return x, w / jnp.sum(w), directions, table, jnp.asarray(m, jnp.int32), noise


def test_drift_matches_a_plain_reference_in_float64(key, x64):
    # Any weights (one of them 0), uniform ones, padded tables (count < width), duplicated particles
    # (ties, broken by index): the fast path is the same map to float64 rounding. (float64 keys take
    # the two-pass radix sort, float32 ones the packed primitive: both equal jnp.argsort exactly, below.)
    n = 257
    x, w, directions, table, count, noise = _case(key, n, 2, 5, 100, width=130, ties=True)
    for weights in (w.at[0].set(0.0) / jnp.sum(w.at[0].set(0.0)), jnp.full((n,), 1.0 / n)):
        drift, sw2 = swf.sliced_drift(x, weights, directions, table, count, noise)
        ref_drift, ref_sw2 = _reference_drift(x, weights, directions, table, count, noise)
        assert drift.dtype == jnp.float64
        np.testing.assert_allclose(drift, ref_drift, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sw2, ref_sw2, rtol=1e-12)


def test_drift_matches_the_reference_in_float32(key):
    # float32 (x64 off): the packed 64-bit sort still runs; identities hold to float32 rounding.
    x, w, directions, table, count, noise = _case(key, 257, 2, 5, 100, width=130, ties=True)
    drift, sw2 = swf.sliced_drift(x, w, directions, table, count, noise)
    ref_drift, ref_sw2 = _reference_drift(x, w, directions, table, count, noise)
    assert drift.dtype == jnp.float32
    # A float32 identity on O(1) values (STYLE: 1e-5); observed 6e-7 on the drift.
    np.testing.assert_allclose(drift, ref_drift, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sw2, ref_sw2, rtol=1e-5)


def _awkward_rows(dtype):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((4, 1000)).astype(dtype)
    u[0, 3] = u[0, 9]  # a tie
    u[1, 2], u[1, 5] = -0.0, 0.0  # signed zeros compare equal
    u[2, :500] = 1.5  # a long run of ties
    u[2, 1], u[2, 4], u[2, 8] = np.inf, -np.inf, np.finfo(dtype).tiny / 4  # infinities and a subnormal
    u[3, 1], u[3, 8] = np.nan, -np.nan  # NaNs last, by index (as jnp.argsort)
    return u


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_argsort_rows_is_the_stable_argsort(dtype):
    with jax.enable_x64(dtype == "float64"):
        u = jnp.asarray(_awkward_rows(dtype))
        expected = np.asarray(jnp.argsort(u, axis=-1, stable=True))
        np.testing.assert_array_equal(jax.jit(_drift._argsort_rows)(u), expected)
        # vmap (a sweep) with the batch axis last: the primitive's batching rule moves it first.
        flipped = u[:, ::-1]
        both = jax.vmap(_drift._argsort_rows, in_axes=2, out_axes=0)(jnp.stack([u, flipped], axis=-1))
        np.testing.assert_array_equal(both[0], expected)
        np.testing.assert_array_equal(both[1], np.asarray(jnp.argsort(flipped, axis=-1, stable=True)))


def test_argsort_rows_mutant_without_canonical_zeros_fails():
    # Negative control: raw IEEE bits order −0 before +0, which jnp.argsort treats as a tie.
    u = jnp.asarray([[0.0, -0.0, 1.0]])
    raw = jax.lax.bitcast_convert_type(u, jnp.uint32)
    raw = raw ^ jnp.where(raw >= jnp.uint32(1 << 31), jnp.uint32(0xFFFFFFFF), jnp.uint32(1 << 31))
    np.testing.assert_array_equal(_drift._argsort_rows(u), [[0, 1, 2]])
    assert np.asarray(_drift._packed_argsort_p.bind(raw)).tolist() == [[1, 0, 2]]


def test_gradient_through_the_drift(key):
    # q is piecewise constant in x, so ∂ sw2/∂x_i = 2 w_i (1/L) Σ_l (u_il − q_il) θ_l = 2 w_i g_i:
    # autodiff passes the packed primitive (float32 keys of a stop_gradient) untouched. Float32
    # identity (1e-5); gradients are O(1e-2), observed error 1e-9.
    x, w, directions, table, count, noise = _case(key, 257, 2, 5, 100, width=130)
    drift, _ = swf.sliced_drift(x, w, directions, table, count, noise)
    grad = jax.grad(lambda x: swf.sliced_drift(x, w, directions, table, count, noise)[1])(x)
    np.testing.assert_allclose(grad, 2 * w[:, None] * drift, rtol=1e-5, atol=1e-8)
