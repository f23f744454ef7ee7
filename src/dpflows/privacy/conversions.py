"""Conversions between privacy notions: KL → (ε, δ) via the hockey stick, bounded range → (ε, δ).

* A KL bound K ≥ KL(P‖Q) between the output laws on neighbouring datasets gives (ε, δ)-DP with
  δ(ε) = sup {E_{e^ε}(P‖Q) : KL(P‖Q) ≤ K}, where E_γ(P‖Q) = ∫ (p − γq)₊ is the hockey-stick
  divergence (:func:`delta_from_kl`, and its inverse :func:`epsilon_from_kl`).
* One ε₀-bounded-range release (an exponential mechanism, or the exact SHK sampler) is also
  (ε, δ)-DP with ε < ε₀ for δ > 0 (:func:`bounded_range_epsilon`, through the ledger's PLD and
  bounded-range zCDP accountants, Cesar & Rogers 2021).

Host-side NumPy/SciPy in float64; none of this runs under ``jit``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _validate
from .._typing import Real
from .accounting import PrivacyLedger

__all__ = ["binary_kl", "bounded_range_epsilon", "delta_from_kl", "epsilon_from_kl"]


def binary_kl(p: Real, q: Real) -> float:
    """kl(p‖q) = p log(p/q) + (1 − p) log((1 − p)/(1 − q)), the KL between Bernoulli(p) and Bernoulli(q).

    Example:
        >>> round(binary_kl(0.5, 0.5), 12)
        0.0
    """
    p, q = float(p), float(q)
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def delta_from_kl(kl: Real, epsilon: Real) -> float:
    """Tight hockey-stick bound from a KL bound: δ(ε) = sup {E_{e^ε}(P‖Q) : KL(P‖Q) ≤ K}.

    E_{e^ε}(P‖Q) = P(S) − e^ε Q(S) on S = {p > e^ε q}, and data processing gives
    kl(P(S)‖Q(S)) ≤ K for the binary KL, so δ(ε) ≤ max_p [p − e^ε q_K(p)] with q_K(p) the smallest
    q ≤ p with kl(p‖q) ≤ K. Binary pairs attain it, so nothing smaller is valid from KL alone. At
    ε = 0 it is the exact TV–KL trade-off (below Pinsker's √(K/2)).

    Args:
        kl: K ≥ 0, a bound on KL(P‖Q) (nats).
        epsilon: ε ≥ 0.

    Returns:
        δ ∈ [0, 1].

    Example:
        >>> delta_from_kl(0.0, 1.0)
        0.0
        >>> 0.0 < delta_from_kl(0.5, 0.0) < (0.5 / 2) ** 0.5  # below Pinsker
        True
    """
    from scipy.optimize import brentq, minimize_scalar

    _validate.positive("kl", kl, allow_zero=True)
    _validate.positive("epsilon", epsilon, allow_zero=True)
    k, e = float(kl), math.exp(float(epsilon))
    if k == 0:
        return 0.0

    def q_min(p: float) -> float:
        if binary_kl(p, 1e-300) <= k:  # q → 0 is allowed
            return 0.0
        return brentq(lambda q: binary_kl(p, q) - k, 1e-300, p, xtol=1e-15, rtol=1e-13)

    res = minimize_scalar(
        lambda p: -(p - e * q_min(p)), bounds=(1e-12, 1.0 - 1e-12), method="bounded", options={"xatol": 1e-12}
    )
    grid = np.linspace(1e-6, 1 - 1e-6, 201)  # guard against a local optimum of the bounded search
    best = max([-res.fun] + [p - e * q_min(p) for p in grid])
    return float(min(1.0, max(0.0, best)))


def epsilon_from_kl(kl: Real, delta: Real, *, tol: float = 1e-9) -> float:
    """The smallest ε ≥ 0 with :func:`delta_from_kl` (K, ε) ≤ δ (bisection; δ(ε) is non-increasing).

    Args:
        kl: K ≥ 0, a bound on KL(P‖Q).
        delta: δ ∈ (0, 1).
        tol: absolute tolerance on ε; the returned ε is on the valid side (δ(ε) ≤ δ).

    Example:
        >>> eps = epsilon_from_kl(0.5, 1e-3)
        >>> delta_from_kl(0.5, eps) <= 1e-3
        True
    """
    _validate.positive("kl", kl, allow_zero=True)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    k, d = float(kl), float(delta)
    if delta_from_kl(k, 0.0) <= d:
        return 0.0
    lo, hi = 0.0, 1.0
    while delta_from_kl(k, hi) > d:
        lo, hi = hi, 2.0 * hi
    while hi - lo > tol * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        if delta_from_kl(k, mid) > d:
            lo = mid
        else:
            hi = mid
    return hi


def bounded_range_epsilon(epsilon: Real, delta: Real) -> tuple[float, str]:
    """(ε, δ) of one ε₀-bounded-range release: the ledger's best of PLD and BR-zCDP, capped by ε₀.

    An ε₀-bounded-range mechanism (the exponential mechanism; the exact pure-reaction SHK sampler
    with ε₀ = ε(t)) is ε₀²/8-zCDP (Cesar & Rogers 2021), which at δ > 0 can give less than ε₀.

    Args:
        epsilon: ε₀ ≥ 0, the bounded-range (pure) parameter.
        delta: δ ∈ (0, 1).

    Returns:
        ``(ε, route)``: ε ≤ ε₀ and the name of the conversion that gave it (``"pure"`` when ε₀ itself).

    Example:
        >>> bounded_range_epsilon(0.1, 1e-5)[0] < 0.1
        True
    """
    _validate.positive("epsilon", epsilon, allow_zero=True)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    epsilon_pure = float(epsilon)
    if epsilon_pure == 0:
        return 0.0, "pure"
    eps = PrivacyLedger().add_exponential(epsilon_pure).epsilon(float(delta), "best")
    if eps < epsilon_pure:
        return eps, "bounded-range composition (Cesar-Rogers zCDP / PLD) at delta"
    return epsilon_pure, "pure"
