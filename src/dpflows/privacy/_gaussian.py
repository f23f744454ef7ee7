"""Analytic Gaussian mechanism (Balle & Wang 2018): exact δ(ε) and calibration, in float64 on the host.

For Y = f(D) + N(0, σ²I) with L2 sensitivity Δ the privacy profile is exactly

    δ(ε) = Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ),

i.e. the mechanism is μ-GDP with μ = Δ/σ. We solve δ(ε; σ) = δ for σ (or ε) by bisection in log
space with ``scipy.special.log_ndtr``, which stays accurate for δ down to 1e-300. dp-accounting's
``get_sigma_gaussian`` computes the same root; we keep our own because it is jittable-adjacent
(vectorised over grids) and exposes the profile itself, which the tests and audits need.
"""

from __future__ import annotations

import math

from scipy import special

from .. import _validate
from .._typing import Real

__all__ = ["calibrate_gaussian", "gaussian_delta", "gaussian_epsilon", "gdp_delta"]


def _log_sub_exp(a: Real, b: Real) -> float:
    """log(e^a − e^b) for a ≥ b (−inf when equal)."""
    if b == -math.inf:
        return a
    if b >= a:
        return -math.inf
    return a + math.log(-math.expm1(b - a))


def gdp_delta(epsilon: Real, mu: Real) -> float:
    """δ(ε) of a μ-GDP mechanism: Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)."""
    if mu == 0:
        return 0.0
    if mu == math.inf:
        return 1.0
    a = special.log_ndtr(-epsilon / mu + mu / 2)
    b = epsilon + special.log_ndtr(-epsilon / mu - mu / 2)
    return math.exp(_log_sub_exp(float(a), float(b)))


def gaussian_delta(sigma: Real, epsilon: Real, sensitivity: Real = 1.0) -> float:
    """Exact δ(ε) of the Gaussian mechanism with noise σ and L2 sensitivity Δ (μ = Δ/σ)."""
    _validate.positive("sigma", sigma, allow_zero=True)
    _validate.positive("epsilon", epsilon, allow_zero=True)
    _validate.positive("sensitivity", sensitivity, allow_zero=True)
    if sigma == 0:
        return 1.0 if sensitivity > 0 else 0.0
    return gdp_delta(float(epsilon), float(sensitivity) / float(sigma))


def _bisect_log(fn, lo: Real, hi: Real, iters: int = 200) -> float:
    """Root of a monotone decreasing ``fn`` on [lo, hi] (positive values), bisected in log space."""
    llo, lhi = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = 0.5 * (llo + lhi)
        if fn(math.exp(mid)) > 0:
            llo = mid
        else:
            lhi = mid
        if lhi - llo < 1e-15:
            break
    return math.exp(lhi)


def calibrate_gaussian(epsilon: Real, delta: Real, sensitivity: Real = 1.0, *, method: str = "analytic") -> float:
    """Smallest σ such that N(0, σ²) noise on an L2-sensitivity-Δ query is (ε, δ)-DP.

    ``method="analytic"`` (default) solves Balle & Wang's exact equation δ(ε; σ) = δ (to a relative
    1e-15 in σ, on the safe side). ``method="classical"`` returns Δ√(2 ln(1.25/δ))/ε (Dwork & Roth,
    Thm A.1), which is only proven for ε < 1 and is *not* private above ε ≈ 9 (at ε = 10, δ = 1e-5
    its true ε is 10.39), so it raises for ε ≥ 1.

    Raises:
        ValueError: ε ≤ 0, δ ∉ (0, 1), Δ ≤ 0, an unknown method, or ε ≥ 1 with "classical".

    Example:
        >>> round(calibrate_gaussian(1.0, 1e-5), 6)
        3.730632
    """
    _validate.positive("epsilon", epsilon)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    _validate.positive("sensitivity", sensitivity)
    _validate.one_of("method", method, ("analytic", "classical"))
    epsilon, delta, sensitivity = float(epsilon), float(delta), float(sensitivity)
    if method == "classical":
        if epsilon >= 1:
            raise ValueError(
                f"method='classical' is only valid for epsilon < 1 (got {epsilon}); it is not private for "
                "epsilon above about 9. Use method='analytic'."
            )
        return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    log_delta = math.log(delta)

    def excess(sigma: Real) -> float:  # > 0 while σ is too small
        d = gaussian_delta(sigma, epsilon, 1.0)
        return (math.log(d) if d > 0 else -math.inf) - log_delta

    lo, hi = 1e-3, 1.0
    while excess(hi) > 0:
        hi *= 2
    while excess(lo) <= 0 and lo > 1e-300:
        lo /= 2
    return sensitivity * _bisect_log(excess, lo, hi)


def gaussian_epsilon(sigma: Real, delta: Real, sensitivity: Real = 1.0) -> float:
    """Smallest ε with δ(ε; σ) ≤ δ for the Gaussian mechanism (0 if already δ(0) ≤ δ; ∞ if σ = 0)."""
    _validate.positive("sigma", sigma, allow_zero=True)
    _validate.in_closed_interval("delta", delta, 0.0, 1.0)
    _validate.positive("sensitivity", sensitivity)
    if sigma == 0:
        return math.inf
    if delta >= 1:
        return 0.0
    if delta == 0:
        return math.inf
    if gaussian_delta(sigma, 0.0, sensitivity) <= delta:
        return 0.0
    hi = 1.0
    while gaussian_delta(sigma, hi, sensitivity) > delta:
        hi *= 2
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gaussian_delta(sigma, mid, sensitivity) > delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, hi):
            break
    return hi


def gdp_mu(sigma: Real, sensitivity: Real = 1.0, count: int = 1) -> float:
    """μ of ``count`` composed Gaussian mechanisms: √count · Δ/σ (exact)."""
    return math.sqrt(count) * sensitivity / sigma if sigma > 0 else math.inf
