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

Arguments are checked at the boundary: concrete bad values (σ < 0, q ∉ [0, 1], δ ∉ [0, 1), a negative
or fractional step count, NaN anywhere) raise ``ValueError`` naming the argument. Traced values (under
``jit``/``vmap``) are checked by ``eqx.error_if`` in :func:`rdp_epsilon` (scalars: cheap); the curve
functions do not re-check traced values, so an ε computed from them under ``jit`` is only as good as
its inputs.
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


def _f(x, dtype, name: str | None = None):
    if name is not None:
        _validate.representable(name, x, dtype)
    return jnp.asarray(x, dtype)


def _orders(orders, minimum: float = 1.0) -> Array:
    """``orders`` as a floating array, each finite and ≥ ``minimum`` (concrete values only)."""
    a = _validate.floating_array("orders", orders)
    if _validate.is_concrete(a):
        arr = np.asarray(a)
        if arr.size == 0 or np.any(~np.isfinite(arr) | (arr < minimum)):
            raise ValueError(f"orders must be non-empty, finite and >= {minimum}, got {_validate.show(arr)}")
    return a


def _noise(noise_multiplier, *, scalar: bool = False) -> None:
    _validate.required("noise_multiplier", noise_multiplier)
    _validate.positive("noise_multiplier", noise_multiplier, allow_zero=True)
    if scalar and np.ndim(noise_multiplier) != 0:
        raise ValueError(f"noise_multiplier must be a scalar, got shape {np.shape(noise_multiplier)}")


def _pure(pure_epsilon, *, allow_zero: bool = True) -> None:
    _validate.required("pure_epsilon", pure_epsilon)
    _validate.positive("pure_epsilon", pure_epsilon, allow_zero=allow_zero)
    if np.ndim(pure_epsilon) != 0:
        raise ValueError(f"pure_epsilon must be a scalar, got shape {np.shape(pure_epsilon)}")


def rdp_gaussian(orders: Float[Array, " k"], noise_multiplier) -> Float[Array, " k"]:
    """α / (2σ²) (∞ for σ = 0).

    Raises:
        ValueError: an order < 1 or non-finite, or σ < 0 / non-finite (concrete values).
    """
    orders = _orders(orders)
    _noise(noise_multiplier, scalar=True)
    sigma = _f(noise_multiplier, orders.dtype, "noise_multiplier")
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

    Raises:
        ValueError: orders not integers in [2, max_order], q ∉ [0, 1] or σ < 0 (concrete values).
    """
    max_order = _validate.positive_int("max_order", max_order)
    _validate.required("sampling_rate", sampling_rate)
    _validate.in_closed_interval("sampling_rate", sampling_rate, 0.0, 1.0)
    if np.ndim(sampling_rate) != 0:
        raise ValueError(f"sampling_rate must be a scalar (vmap over rates), got shape {np.shape(sampling_rate)}")
    _noise(noise_multiplier, scalar=True)
    dtype = jnp.result_type(float)
    a = _validate.floating_array("orders", orders).astype(dtype)
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
    q = _f(sampling_rate, dtype, "sampling_rate")
    sigma = _f(noise_multiplier, dtype, "noise_multiplier")
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
    """Exact RDP of the Laplace mechanism with ε₀ = sensitivity/scale (Mironov 2017, Prop. 6).

    Raises:
        ValueError: an order < 1 or non-finite, or ε₀ < 0 / non-finite (concrete values).
    """
    orders = _orders(orders)
    _pure(pure_epsilon)
    eps = _f(pure_epsilon, orders.dtype, "pure_epsilon")
    a = orders
    kl = eps + jnp.expm1(-eps)
    am1 = jnp.where(a > 1, a - 1, 1.0)
    general = eps + jnp.log1p(am1 * jnp.expm1(eps * (1 - 2 * a)) / (2 * a - 1)) / am1
    return jnp.where(a == 1, kl, general)


def rdp_pure(orders: Array, pure_epsilon) -> Array:
    """RDP implied by pure ε₀-DP: min(ε₀, α ε₀²/2).

    Raises:
        ValueError: an order < 1 or non-finite, or ε₀ < 0 / non-finite (concrete values).
    """
    orders = _orders(orders)
    _pure(pure_epsilon)
    eps = _f(pure_epsilon, orders.dtype, "pure_epsilon")
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

    Raises:
        ValueError: an order < 1 or non-finite, ε₀ ≤ 0 / non-finite, or ``iterations`` < 1.
    """
    orders = _orders(orders)
    _pure(pure_epsilon, allow_zero=False)
    iterations = _validate.positive_int("iterations", iterations)
    dtype = orders.dtype
    eps = _f(pure_epsilon, dtype, "pure_epsilon")
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
    # For huge ε₀ the objective overflows (0·∞ = NaN); ε(α) ≤ ε₀ always holds (BR implies ε₀-DP).
    general = jnp.where(jnp.isnan(general), eps, general)
    return jnp.where(orders == 1, kl, jnp.minimum(general, eps))


def epsilon_from_rdp(orders: Array, rdp: Array, delta) -> Array:
    """Smallest ε over orders: rdp(α) + log(1 − 1/α) − (log δ + log α)/(α − 1), clipped at 0.

    Matches ``dp_accounting.rdp.compute_epsilon`` including its special cases: orders ≤ 1.01 give
    ∞, ε = 0 when δ² + expm1(−rdp) > 0 (the KL bound already suffices), δ = 0 gives 0 or ∞.

    Raises:
        ValueError: (concrete values) orders non-finite or ≤ 0, ``rdp`` of another shape or holding
            NaN or negative values (+∞ is allowed: no privacy at that order), δ ∉ [0, 1).
    """
    orders = _orders(orders, minimum=0.0)
    rdp = _validate.floating_array("rdp", rdp)
    if rdp.shape != orders.shape:
        raise ValueError(f"rdp must have the shape of orders {orders.shape}, got {rdp.shape}")
    _validate.not_nan("rdp", rdp)
    if _validate.is_concrete(rdp) and bool(np.any(np.asarray(rdp) < 0)):
        raise ValueError(f"rdp must be >= 0 (or +inf), got {_validate.show(rdp)}")
    _validate.required("delta", delta)
    _validate.in_half_open_interval("delta", delta, 0.0, 1.0)
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


def rdp_epsilon(noise_multiplier, sampling_rate, steps, delta, *, orders: tuple[int, ...] = INTEGER_ORDERS) -> Array:
    """ε(δ) of ``steps`` Poisson-subsampled Gaussian steps (q = 1: plain Gaussian), jittable.

    Args:
        noise_multiplier: σ ≥ 0 (σ = 0 gives ε = ∞ for q > 0). All four numbers are scalars: map a
            grid with ``jax.vmap``.
        sampling_rate: q ∈ [0, 1].
        steps: the number of steps T, a whole number ≥ 0 (int or float dtype).
        delta: δ ∈ [0, 1) (δ = 0 gives ε = ∞ unless nothing is released).
        orders: static integer orders ≥ 2 to minimise over.

    Raises:
        ValueError: a concrete argument outside its range or NaN, naming it. Traced arguments (under
            ``jit``/``vmap``) are checked with ``eqx.error_if``: a bad value raises at run time
            instead of returning a number that would slip past ``if eps > budget``.

    Example:
        >>> import jax
        >>> with jax.enable_x64(True):
        ...     print(round(float(rdp_epsilon(1.5, 0.04, 2250, 1e-5)), 4))
        7.3299
    """
    for name, value in (("sampling_rate", sampling_rate), ("steps", steps), ("delta", delta)):
        _validate.required(name, value)
    for name, value in (
        ("noise_multiplier", noise_multiplier),
        ("sampling_rate", sampling_rate),
        ("steps", steps),
        ("delta", delta),
    ):
        if np.ndim(value) != 0:  # shapes are static: checked for tracers too (vmap for a grid)
            raise ValueError(f"{name} must be a scalar (vmap over a grid), got shape {np.shape(value)}")
    _noise(noise_multiplier)
    _validate.in_closed_interval("sampling_rate", sampling_rate, 0.0, 1.0)
    _validate.integer_valued("steps", steps)
    _validate.in_half_open_interval("delta", delta, 0.0, 1.0)
    for name, value in (("noise_multiplier", noise_multiplier), ("steps", steps)):
        _validate.representable(name, value, jnp.result_type(float))
    orders = tuple(orders)
    if not orders or not all(isinstance(a, int | float | np.integer | np.floating) for a in orders):
        raise ValueError(f"orders must be a non-empty tuple of numbers, got {orders!r}")
    if not all(float(a).is_integer() and a >= 2 for a in orders):
        raise ValueError(f"orders must be integers >= 2, got {orders!r}")
    return _rdp_epsilon(noise_multiplier, sampling_rate, steps, delta, orders=orders)


@ft.partial(jax.jit, static_argnames="orders")
def _rdp_epsilon(noise_multiplier, sampling_rate, steps, delta, *, orders: tuple[int, ...]) -> Array:
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
    # Traced arguments were not checked in Python: refuse bad ones here (scalar checks, cheap).
    d = jnp.asarray(delta, dtype)
    bad = (
        jnp.any(~(sigma >= 0) | ~jnp.isfinite(sigma))
        | jnp.any(~((q >= 0) & (q <= 1)))
        | jnp.any(~(steps >= 0) | ~jnp.isfinite(steps) | (steps != jnp.round(steps)))
        | jnp.any(~((d >= 0) & (d < 1)))
    )
    steps = eqx.error_if(
        steps,
        bad,
        "rdp_epsilon: noise_multiplier must be finite and >= 0, sampling_rate in [0, 1], steps a whole "
        "number >= 0 and delta in [0, 1)",
    )
    return epsilon_from_rdp(o, steps * curve, delta)
