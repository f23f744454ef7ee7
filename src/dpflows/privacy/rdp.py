"""Rényi-DP curves and the RDP → (ε, δ) conversion in pure JAX (jit- and vmap-able).

dp-accounting's RDP accountant is the reference but runs in NumPy/Python loops and fails inside
``jax.jit``; these functions reproduce it (to 1e-6 relative in float64, checked in the tests) so a
sweep over a (σ, q, T) grid is one compiled call. Curves, for add/remove neighbours and sensitivity 1:

- Gaussian N(0, σ²):              ε(α) = α / (2σ²)
- Poisson-subsampled Gaussian:    ε(α) = log A_α / (α − 1),  integer α ≥ 2,
      A_α = Σ_{k=0..α} C(α, k) (1 − q)^{α−k} q^k exp((k² − k) / (2σ²))   (Mironov, Talwar, Zhang 2019)
      (computed as log1p of the k ≥ 2 excess, see rdp_subsampled_gaussian)
- Laplace, scale b (ε₀ = 1/b):    ε(α) = ε₀ + log(1 + (α − 1)(e^{(1−2α)ε₀} − 1)/(2α − 1)) / (α − 1)
- pure ε₀-DP:                     ε(α) ≤ min(ε₀, α ε₀² / 2)    (Bun & Steinke 2016)
- ε₀-bounded range (exponential mechanism): the exact worst case (derived below), ≤ α ε₀²/8.

Conversion (Balle et al. 2020, Prop. 12; as dp-accounting implements it):

    ε(δ) = min_α  rdp(α) + log(1 − 1/α) − (log δ + log α)/(α − 1),

with the KL shortcut ε = 0 when δ² + expm1(−rdp) > 0, orders ≤ 1.01 skipped, clipped at 0.

float64 is needed for the 1e-6 agreement (use ``jax.enable_x64``); in float32 the agreement is about
1e-4 relative, because log A is a cancellation-prone sum at large α.
"""

from __future__ import annotations

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp
from scipy import special as sp_special

from .. import _validate
from .._typing import Array, Float

__all__ = [
    "INTEGER_ORDERS",
    "epsilon_from_rdp",
    "rdp_bounded_range",
    "rdp_epsilon",
    "rdp_gaussian",
    "rdp_laplace",
    "rdp_pure",
    "rdp_subsampled_gaussian",
]

# Integer orders 2..64 and 128..1024 by doubling: the grid on which the subsampled-Gaussian curve
# is exact (RELIABILITY.md Table C, "integer orders" column).
INTEGER_ORDERS: tuple[int, ...] = (*range(2, 65), 128, 256, 512, 1024)


def _f(x, dtype):
    return jnp.asarray(x, dtype)


def rdp_gaussian(orders: Float[Array, " k"], noise_multiplier) -> Float[Array, " k"]:
    """α / (2σ²) (∞ for σ = 0)."""
    sigma = _f(noise_multiplier, orders.dtype)
    return jnp.where(sigma > 0, orders / (2 * sigma**2), jnp.inf)


def _log_comb(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def rdp_subsampled_gaussian(orders: Array, sampling_rate, noise_multiplier, *, max_order: int = 1024) -> Array:
    """RDP of one Poisson-subsampled Gaussian step at integer ``orders`` (log-space binomial sum).

    Args:
        orders: integer-valued orders ≥ 2 (float or int array), each ≤ ``max_order``.
        sampling_rate: q ∈ [0, 1].
        noise_multiplier: σ ≥ 0.
        max_order: static bound on the orders, sets the length of the summation.
    """
    dtype = jnp.result_type(float)
    a = jnp.asarray(orders).astype(dtype)
    # The binomial sum is exact only for integer α ≤ max_order: anything else would silently
    # truncate the sum and *understate* the RDP, so it is refused.
    bad = (a < 2) | (a > max_order) | (a != jnp.round(a))
    if _validate.is_concrete(a):
        if bool(np.any(np.asarray(bad))):
            raise ValueError(
                f"orders must be integers in [2, max_order={max_order}], got {np.asarray(orders).tolist()}"
            )
    else:
        a = eqx.error_if(a, jnp.any(bad), f"orders must be integers in [2, max_order={max_order}]")
    q = _f(sampling_rate, dtype)
    sigma = _f(noise_multiplier, dtype)
    k = jnp.arange(max_order + 1, dtype=dtype)

    def one(alpha):
        # Σ_k C(α,k)(1−q)^{α−k} q^k = 1, so A − 1 = Σ_{k≥2} C(α,k)(1−q)^{α−k} q^k expm1((k²−k)/(2σ²)):
        # every term is positive and log A = softplus(logsumexp(log terms)) has no cancellation,
        # even when A − 1 ≈ 1e-18 (q = 1e-7).
        valid = (k >= 2) & (k <= alpha)
        log1mq = jnp.where(alpha - k > 0, (alpha - k) * jnp.log1p(-jnp.minimum(q, 1.0)), 0.0)
        logq = jnp.where(k > 0, k * jnp.log(q), 0.0)
        inv = jnp.where(sigma > 0, 1.0 / (2 * sigma**2), jnp.inf)
        z = jnp.where(valid, (k * k - k) * inv, 1.0)
        log_expm1 = jnp.where(z > 30, z + jnp.log1p(-jnp.exp(-z)), jnp.log(jnp.expm1(z)))
        terms = _log_comb(alpha, k) + log1mq + logq + log_expm1
        log_a_minus_1 = logsumexp(jnp.where(valid, terms, -jnp.inf))
        return jnp.logaddexp(0.0, log_a_minus_1) / (alpha - 1)

    rdp = jax.vmap(one)(a)
    rdp = jnp.where(q == 0, 0.0, rdp)
    rdp = jnp.where((sigma == 0) & (q > 0), jnp.inf, rdp)
    return jnp.maximum(rdp, 0.0)


@ft.lru_cache(maxsize=32)
def _static_tables(orders: tuple[float, ...]):
    """Per bucket of orders: (positions, α column, log C(α, k) with −inf outside 2 ≤ k ≤ α, K)."""
    buckets: dict[int, list[int]] = {}
    for i, a in enumerate(orders):
        bound = 64 if a <= 64 else int(2 ** np.ceil(np.log2(a)))
        buckets.setdefault(bound, []).append(i)
    tables = []
    for bound, idx in sorted(buckets.items()):
        alpha = np.array([orders[i] for i in idx], dtype=np.float64)[:, None]
        k = np.arange(bound + 1, dtype=np.float64)[None, :]
        with np.errstate(invalid="ignore"):
            logc = sp_special.gammaln(alpha + 1) - sp_special.gammaln(k + 1) - sp_special.gammaln(alpha - k + 1)
        logc = np.where((k >= 2) & (k <= alpha), logc, -np.inf)
        tables.append((np.array(idx, dtype=np.int32), alpha, logc, bound))
    return tables


def _rdp_subsampled_static(orders: tuple[float, ...], q, sigma, dtype) -> Array:
    """Fast path for static integer orders: tables are constants, log expm1 is shared by all orders."""
    kmax = max(int(2 ** np.ceil(np.log2(a))) if a > 64 else 64 for a in orders)
    k = jnp.arange(kmax + 1, dtype=dtype)
    inv = jnp.where(sigma > 0, 1.0 / (2 * sigma**2), jnp.inf)
    z = jnp.where(k >= 2, (k * k - k) * inv, 1.0)
    log_expm1 = jnp.where(z > 30, z + jnp.log1p(-jnp.exp(-z)), jnp.log(jnp.expm1(z)))
    row = jnp.where(k > 0, k * jnp.log(q), 0.0) + log_expm1 - k * jnp.log1p(-jnp.minimum(q, 1.0))
    out = jnp.zeros((len(orders),), dtype)
    for idx, alpha, logc, bound in _static_tables(orders):
        a = jnp.asarray(alpha, dtype)
        # (α − k) log(1 − q) = α log(1 − q) − k log(1 − q): the k part is folded into `row`.
        terms = jnp.asarray(logc, dtype) + row[None, : bound + 1]
        excess = logsumexp(terms, axis=1) + a[:, 0] * jnp.log1p(-jnp.minimum(q, 1.0))
        out = out.at[idx].set(jnp.logaddexp(0.0, excess) / (a[:, 0] - 1))
    return out


def rdp_laplace(orders: Array, pure_epsilon) -> Array:
    """Exact RDP of the Laplace mechanism with ε₀ = sensitivity/scale (Mironov 2017, Prop. 6)."""
    eps = _f(pure_epsilon, orders.dtype)
    a = orders
    kl = eps + jnp.expm1(-eps)
    am1 = jnp.where(a > 1, a - 1, 1.0)
    general = eps + jnp.log1p(am1 * jnp.expm1(eps * (1 - 2 * a)) / (2 * a - 1)) / am1
    return jnp.where(a == 1, kl, general)


def rdp_pure(orders: Array, pure_epsilon) -> Array:
    """RDP implied by pure ε₀-DP: min(ε₀, α ε₀²/2)."""
    eps = _f(pure_epsilon, orders.dtype)
    return jnp.minimum(eps, orders * eps**2 / 2)


def _br_objective(p, alpha, eps):
    # log(1 − p(1 − e^{−ε})) + log(1 − p + p e^{(α−1)ε}) / (α − 1)
    return jnp.log1p(-p * (-jnp.expm1(-eps))) + jnp.log1p(p * jnp.expm1((alpha - 1) * eps)) / (alpha - 1)


def rdp_bounded_range(orders: Array, pure_epsilon, *, iterations: int = 80) -> Array:
    """Exact worst-case RDP of an ε₀-bounded-range mechanism (e.g. the exponential mechanism).

    The privacy loss L = log(P/Q) of an ε₀-BR pair lies in an interval [a, a + ε₀], and
    E_P[e^{−L}] = 1. For α > 1, E_P[e^{(α−1)L}] is maximised (u ↦ u^{1−α} is convex in u = e^{−L})
    by two-point laws on the endpoints: with mass p on a + ε₀ the constraint fixes
    a = log(1 − p(1 − e^{−ε₀})), so

        ε(α) = max_{p∈[0,1]} log(1 − p(1 − e^{−ε₀})) + log(1 − p + p e^{(α−1)ε₀}) / (α − 1),

    a concave problem solved by golden-section search. At α = 1 it is the KL bound t − 1 − log t,
    t = ε₀/(1 − e^{−ε₀}) (Cesar & Rogers 2021); it never exceeds the zCDP bound α ε₀²/8.
    """
    dtype = orders.dtype
    eps = _f(pure_epsilon, dtype)
    t = eps / (-jnp.expm1(-eps))
    kl = t - 1 - jnp.log(t)
    ratio = (jnp.sqrt(5.0) - 1) / 2

    def one(alpha):
        def body(_, lohi):
            lo, hi = lohi
            m1 = hi - ratio * (hi - lo)
            m2 = lo + ratio * (hi - lo)
            better_left = _br_objective(m1, alpha, eps) > _br_objective(m2, alpha, eps)
            return jnp.where(better_left, lo, m1), jnp.where(better_left, m2, hi)

        lo, hi = jax.lax.fori_loop(0, iterations, body, (jnp.zeros((), dtype), jnp.ones((), dtype)))
        return _br_objective((lo + hi) / 2, jnp.maximum(alpha, 1.0 + 1e-12), eps)

    general = jax.vmap(one)(orders)
    return jnp.where(orders == 1, kl, jnp.minimum(general, eps))


def epsilon_from_rdp(orders: Array, rdp: Array, delta) -> Array:
    """Smallest ε over orders: rdp(α) + log(1 − 1/α) − (log δ + log α)/(α − 1), clipped at 0.

    Matches ``dp_accounting.rdp.compute_epsilon`` including its special cases: orders ≤ 1.01 give
    ∞, ε = 0 when δ² + expm1(−rdp) > 0 (the KL bound already suffices), δ = 0 gives 0 or ∞.
    """
    dtype = rdp.dtype
    delta = _f(delta, dtype)
    a = orders.astype(dtype)
    safe_a = jnp.where(a > 1.01, a, 2.0)
    eps = rdp + jnp.log1p(-1 / safe_a) - (jnp.log(delta) + jnp.log(safe_a)) / (safe_a - 1)
    eps = jnp.where(a > 1.01, eps, jnp.inf)
    eps = jnp.where(delta**2 + jnp.expm1(-rdp) > 0, 0.0, eps)
    eps = jnp.where(rdp < 0, 0.0, eps)
    best = jnp.maximum(jnp.min(eps), 0.0)
    all_zero = jnp.all(rdp == 0)
    return jnp.where(delta == 0, jnp.where(all_zero, 0.0, jnp.inf), best)


@ft.partial(jax.jit, static_argnames="orders")
def rdp_epsilon(noise_multiplier, sampling_rate, steps, delta, *, orders: tuple[int, ...] = INTEGER_ORDERS) -> Array:
    """ε(δ) of ``steps`` Poisson-subsampled Gaussian steps (q = 1: plain Gaussian), jittable.

    Example:
        >>> import jax
        >>> with jax.enable_x64(True):
        ...     print(round(float(rdp_epsilon(1.5, 0.04, 2250, 1e-5)), 4))
        7.3299
    """
    dtype = jnp.result_type(float)
    o = jnp.asarray(orders, dtype=dtype)
    steps = jnp.asarray(steps).astype(dtype)
    q = jnp.asarray(sampling_rate, dtype)
    sigma = jnp.asarray(noise_multiplier, dtype)
    if q.ndim == 0 and sigma.ndim == 0 and all(float(a).is_integer() and a >= 2 for a in orders):
        q_safe = jnp.where(q >= 1, 0.5, q)
        curve = _rdp_subsampled_static(tuple(float(a) for a in orders), q_safe, sigma, dtype)
        # q = 1 is the plain Gaussian α/(2σ²): the folded (α − k) log(1 − q) would be −∞ + ∞ there.
        # Near q = 1 the folding cancels terms of size α|log(1 − q)| ≲ 10⁴: ~1e-12 absolute error.
        curve = jnp.where(q >= 1, rdp_gaussian(o, sigma), curve)
        curve = jnp.where(q == 0, 0.0, curve)
        curve = jnp.where((sigma == 0) & (q > 0), jnp.inf, jnp.maximum(curve, 0.0))
    else:
        curve = rdp_subsampled_gaussian(np.asarray(orders, np.float64), q, sigma, max_order=int(max(orders)))
    return epsilon_from_rdp(o, steps * curve, delta)
