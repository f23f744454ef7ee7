"""ACC-6: the pure-JAX RDP accountant against dp-accounting, jitted and vmapped over a grid."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib

from dpflows.privacy import (
    INTEGER_ORDERS,
    epsilon_from_rdp,
    rdp_bounded_range,
    rdp_epsilon,
    rdp_laplace,
    rdp_pure,
    rdp_subsampled_gaussian,
)

ORDERS = [float(a) for a in INTEGER_ORDERS]


def _reference(sigma, q, steps, delta):
    rdp = steps * np.asarray(rdp_lib._compute_rdp_poisson_subsampled_gaussian(q, sigma, ORDERS))
    return rdp_lib.compute_epsilon(ORDERS, rdp, delta)[0]


def test_jitted_grid_matches_dp_accounting(x64):
    sigmas = np.array([0.6, 1.0, 2.5, 8.0])
    qs = np.array([1e-3, 0.01, 0.2, 0.999, 1.0])
    steps = np.array([1, 100, 10_000])
    grid = np.array(list(itertools.product(sigmas, qs, steps)))
    fn = jax.jit(jax.vmap(lambda s, q, t: rdp_epsilon(s, q, t, 1e-5)))
    got = np.asarray(fn(*(jnp.asarray(c) for c in grid.T)))
    ref = np.array([_reference(s, q, int(t), 1e-5) for s, q, t in grid])
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "delta", "expected"),
    [(0.01, 1.0, 1000, 1e-5, 2.107753), (0.04, 1.5, 2250, 1e-5, 7.329877), (0.001, 0.8, 10000, 1e-6, 1.720123)],
)
def test_table_c_integer_orders(q, sigma, steps, delta, expected, x64):
    assert float(rdp_epsilon(sigma, q, steps, delta)) == pytest.approx(expected, abs=1e-6)


def test_per_order_values_table_e(x64):
    orders = jnp.asarray([2.0, 4, 8, 16, 32, 64])
    expected = [1.7181342207e-4, 3.6315404891e-4, 8.9364390761e-4, 3.0878507837, 11.246275937, 27.321731875]
    np.testing.assert_allclose(rdp_subsampled_gaussian(orders, 0.01, 1.0), expected, rtol=1e-8)


def _mp_rdp(q, sigma, alpha):
    """50-digit reference: log A_α / (α − 1) by the defining binomial sum (mpmath)."""
    import mpmath as mp

    mp.mp.dps = 50
    q, s = mp.mpf(q), mp.mpf(sigma)
    total = mp.fsum(
        mp.binomial(alpha, k) * (1 - q) ** (alpha - k) * q**k * mp.e ** ((k * k - k) / (2 * s * s))
        for k in range(alpha + 1)
    )
    return float(mp.log(total) / (alpha - 1))


@pytest.mark.parametrize(("q", "sigma"), [(1e-7, 0.1), (0.999, 0.1), (0.5, 100.0), (1e-7, 100.0), (0.999, 5.0)])
def test_log_space_at_extreme_corners(q, sigma, x64):
    # No overflow at α = 1024 or q = 0.999; agreement with a 50-digit mpmath sum (rtol 1e-4, as
    # upstream's own test). At q = 1e-7, σ = 100 dp-accounting itself is 2e-4 off (cancellation in
    # its log A); we are exact there because we sum the k ≥ 2 excess A − 1 directly.
    orders = [2, 16, 256, 1024]
    got = np.asarray(rdp_subsampled_gaussian(jnp.asarray(orders, jnp.float64), q, sigma))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [_mp_rdp(q, sigma, a) for a in orders], rtol=1e-4)


def test_float32_is_close_enough():
    # Documented: float32 agrees to about 1e-4 relative (cancellation in log A at large α).
    got = float(rdp_epsilon(1.5, 0.04, 2250, 1e-5))
    assert got == pytest.approx(7.329877, rel=1e-4)


def test_conversion_anchor(x64):
    # dp-accounting's test: constant RDP 1.1 on orders 2..32, δ = 1e-5 → ε = 1.32783806176.
    orders = jnp.arange(2.0, 33.0)
    assert float(epsilon_from_rdp(orders, jnp.full(orders.shape, 1.1), 1e-5)) == pytest.approx(1.32783806176, rel=1e-9)
    assert float(epsilon_from_rdp(orders, jnp.zeros(orders.shape), 0.0)) == 0.0
    assert float(epsilon_from_rdp(orders, jnp.full(orders.shape, 0.1), 0.0)) == np.inf


def test_laplace_pure_and_bounded_range_curves(x64):
    orders = jnp.asarray([1.0, 1.05, 1.5, 2.0, 10.0, 100.0])
    ref = [rdp_lib._laplace_rdp(1.0, float(a)) for a in orders]
    np.testing.assert_allclose(
        rdp_laplace(orders, 1.0)[jnp.asarray([0, 2, 3, 4, 5])], np.array(ref)[[0, 2, 3, 4, 5]], rtol=1e-10
    )
    br = rdp_bounded_range(orders, 1.0)
    assert float(br[0]) == pytest.approx(0.1233015615, rel=1e-9)  # the KL of 1-BR (Cesar & Rogers)
    assert np.all(np.asarray(br) <= np.asarray(orders) / 8 + 1e-12)  # never above ε₀²α/8 (zCDP)
    assert np.all(np.asarray(br) <= 1.0 + 1e-12)  # nor above ε₀
    assert np.all(np.diff(np.asarray(br)) >= -1e-12)  # non-decreasing in α
    np.testing.assert_allclose(rdp_pure(orders, 0.1), np.minimum(0.1, np.asarray(orders) * 0.005))


def test_orders_the_binomial_sum_cannot_represent_are_refused(x64):
    # Regression: orders above max_order (or fractional) used to truncate the sum silently,
    # understating the RDP, i.e. overstating privacy.
    with pytest.raises(ValueError, match="orders must be integers"):
        rdp_subsampled_gaussian(jnp.asarray([2.0, 2048.0]), 0.01, 1.0)
    with pytest.raises(ValueError, match="orders must be integers"):
        rdp_subsampled_gaussian(jnp.asarray([1.5, 3.0]), 0.01, 1.0)
    # rdp_epsilon with larger custom orders sizes the sum to fit them.
    got = float(rdp_epsilon(1.0, 0.01, 1000, 1e-5, orders=(2, 4, 2048)))
    ref = [float(a) for a in (2, 4, 2048)]
    rdp = 1000 * np.asarray(rdp_lib._compute_rdp_poisson_subsampled_gaussian(0.01, 1.0, ref))
    assert got == pytest.approx(rdp_lib.compute_epsilon(ref, rdp, 1e-5)[0], rel=1e-6)
