"""Host-side theory: the L2 sensitivity of the random-projection query (METHODS.md §4b, §4e(3))."""

from __future__ import annotations

import functools as ft
import math

import numpy as np
from scipy import optimize, special, stats

from .. import _validate
from .._typing import Real

__all__ = ["SENSITIVITY_METHODS", "sensitivity_bound"]

SENSITIVITY_METHODS = ("chernoff", "clt", "bernstein", "operator")


def _chernoff_sum(k: int, d: int, failure: float) -> float:
    """Smallest t with inf_λ e^{−λt} M(λ)^k ≤ failure, M(λ) = ₁F₁(½; d/2; λ) the Beta(½,(d−1)/2) MGF."""

    def log_mgf(lam: float) -> float:
        return float(np.log(special.hyp1f1(0.5, d / 2, lam)))

    def excess(t: float) -> float:  # > 0 while t is not yet a (1 − failure)-bound
        res = optimize.minimize_scalar(lambda lam: -lam * t + k * log_mgf(lam), bounds=(0.0, 600.0), method="bounded")
        return float(res.fun) - math.log(failure)

    hi = k * (1 - 1e-12)
    if excess(hi) > 0:
        return float(k)
    # A minimiser found only approximately overstates the infimum, so t comes out conservative.
    return float(optimize.brentq(excess, k / d, hi, xtol=1e-10))


@ft.lru_cache(maxsize=256)  # pure, and the Chernoff root takes a few hundred scipy minimisations
def _bound(k: int, d: int, fp: float, method: str) -> float:
    if d == 1:
        t = float(k)  # ⟨θ, z⟩² = 1
    elif method == "chernoff":
        t = _chernoff_sum(k, d, fp)
    elif method == "clt":
        t = k / d + float(stats.norm.ppf(1 - fp)) / d * math.sqrt(2 * k * (d - 1) / (d + 2))
    else:
        log_inv = math.log(1 / fp)
        t = k / d + 2 / 3 * log_inv + 2 / d * math.sqrt(k * (d - 1) / (d + 2) * log_inv)
    return 2.0 * math.sqrt(min(t, float(k)))


def sensitivity_bound(num_projections: int, dim: int, failure_probability: Real, method: str = "chernoff") -> float:
    """L2 sensitivity Δ of y ↦ Θy for replace-one neighbours in the unit ball, Θ with k uniform unit rows.

    P_Θ(‖Θ(y − y')‖ > Δ) ≤ δ_s for every fixed pair with ‖y‖, ‖y'‖ ≤ 1 (and Δ ≤ 2√k always). With
    S = Σ_l ⟨θ_l, z⟩², z = (y − y')/‖y − y'‖, the bound is Δ = 2√t with P(S > t) ≤ δ_s:

    * ``"chernoff"``: t from the exact Beta(½, (d−1)/2) MGF (a rigorous bound, within ~6% of the
      true quantile at the paper's sizes);
    * ``"clt"``: t = k/d + z_{1−δ_s}/d · √(2k(d−1)/(d+2)) (the paper's code for k > 30; an
      approximation that the skewed sum exceeds more often than δ_s);
    * ``"bernstein"``: t = k/d + ⅔ log(1/δ_s) + (2/d)√(k(d−1)/(d+2) log(1/δ_s)) (rigorous, loose).

    ``"operator"`` has no such constant (it depends on the drawn Θ); see
    :func:`~dpflows.swf.private_release`. Host-side (SciPy), cached; not differentiable.

    Example:
        >>> round(sensitivity_bound(70, 8, 5e-6, "clt"), 3)
        7.541
    """
    k = _validate.positive_int("num_projections", num_projections)
    d = _validate.positive_int("dim", dim)
    _validate.in_open_interval("failure_probability", failure_probability, 0.0, 1.0)
    _validate.one_of("method", method, SENSITIVITY_METHODS[:3])
    return _bound(k, d, float(failure_probability), method)
