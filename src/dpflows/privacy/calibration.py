"""Calibration and accounting of T (Poisson-subsampled) Gaussian releases, the DP-SW mechanism's shape.

A release is σ = s·Δ Gaussian noise on an L2-sensitivity-Δ query; s = σ/Δ is the noise multiplier.
``num_releases`` = T such releases, each on a Poisson batch of rate q (q = 1: the whole dataset):

* one full-batch release: the analytic Gaussian mechanism (Balle & Wang 2018), exact;
* T full-batch releases: one Gaussian with multiplier s/√T (exact: the composed privacy-loss
  distribution of T Gaussians of multiplier s is the one of a single Gaussian of s/√T);
* otherwise: dp-accounting's privacy-loss-distribution (PLD) accountant, whose pessimistic
  discretisation keeps ε an upper bound; calibration bisects s inside the bracket that the (fast,
  looser) RDP accountant gives.

dp-accounting is the maintained accountant, so the PLD and RDP numbers come from it (through
:class:`~dpflows.privacy.PrivacyLedger` for RDP); this module adds the bisection, the exact
full-batch shortcuts and caching (a PLD calibration takes seconds and is pure).
"""

from __future__ import annotations

import functools as ft
import math

import dp_accounting as dpa
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from .. import _validate
from .._typing import Real
from ._gaussian import calibrate_gaussian, gaussian_epsilon
from .accounting import PrivacyLedger, calibrate_noise_multiplier

__all__ = [
    "calibrate_subsampled_gaussian",
    "classical_gaussian_multiplier",
    "subsampled_gaussian_epsilon",
    "subsampled_gaussian_event",
]

# dp-accounting's PLD default grid of the privacy loss; pessimistic, so a coarser grid is still an upper bound.
_PLD_INTERVAL = 1e-4


def _check(delta: Real, num_releases: int, sampling_rate: Real) -> tuple[float, int, float]:
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    num_releases = _validate.positive_int("num_releases", num_releases)
    _validate.in_open_interval("sampling_rate", sampling_rate, 0.0, 1.0 + 1e-12)
    return float(delta), num_releases, min(float(sampling_rate), 1.0)


def calibrate_subsampled_gaussian(
    epsilon: Real, delta: Real, num_releases: int = 1, sampling_rate: Real = 1.0
) -> float:
    """Noise multiplier s = σ/Δ such that ``num_releases`` Gaussian releases of rate q are (ε, δ)-DP.

    T = 1, q = 1: the analytic Gaussian mechanism (exact). q = 1: s = √T·s₁ (exact). Otherwise the
    smallest s, to a relative 1e-3 (the upper end of the final bracket, so its PLD ε ≤ ε), found by
    bisection on dp-accounting's PLD ε (on a coarse pessimistic grid, still a valid bound) inside
    [s_RDP/2, s_RDP]; the bracket widens downward if PLD is ever tighter than that. Cached.

    Args:
        epsilon: target ε > 0.
        delta: target δ ∈ (0, 1).
        num_releases: T ≥ 1 composed releases.
        sampling_rate: Poisson rate q ∈ (0, 1] of each release's batch.

    Returns:
        s (multiply by the sensitivity Δ for the noise std σ).

    Raises:
        ValueError: naming the argument out of range.

    Example:
        >>> round(calibrate_subsampled_gaussian(1.0, 1e-5), 6)  # = calibrate_gaussian(1.0, 1e-5)
        3.730632
        >>> round(calibrate_subsampled_gaussian(1.0, 1e-5, 4) / calibrate_subsampled_gaussian(1.0, 1e-5), 6)
        2.0
    """
    _validate.positive("epsilon", epsilon)
    delta, num_releases, q = _check(delta, num_releases, sampling_rate)
    return _calibrate(float(epsilon), delta, num_releases, q)


@ft.lru_cache(maxsize=256)
def _calibrate(epsilon: float, delta: float, releases: int, q: float) -> float:
    if q >= 1:  # T full-batch Gaussians are one Gaussian with s/√T (exact); T = 1: analytic mechanism
        return calibrate_gaussian(epsilon, delta, 1.0) * math.sqrt(releases)
    hi = calibrate_noise_multiplier(epsilon, delta, releases, q, accountant="rdp", tol=1e-4)
    lo = hi / 2

    def eps(s: float) -> float:  # a coarser (still pessimistic, so still valid) PLD grid: 10x faster
        return _pld_epsilon(s, releases, q, delta, max(1e-3, 2e-4 * epsilon))

    while eps(lo) <= epsilon and lo > 1e-6:  # PLD is never looser than RDP; widen if ever needed
        lo, hi = lo / 2, lo
    while hi / lo - 1 > 1e-3:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if eps(mid) > epsilon else (lo, mid)
    return hi


@ft.lru_cache(maxsize=1024)
def _pld_epsilon(s: float, releases: int, q: float, delta: float, interval: float) -> float:
    """ε of ``releases`` Poisson-subsampled Gaussians by dp-accounting's PLD (pessimistic grid of ``interval``)."""
    pld = pld_lib.from_gaussian_mechanism(s, sampling_prob=q, value_discretization_interval=interval)
    return float(pld.self_compose(releases).get_epsilon_for_delta(delta))


def subsampled_gaussian_epsilon(
    noise_multiplier: Real,
    delta: Real,
    num_releases: int = 1,
    sampling_rate: Real = 1.0,
    *,
    accountant: str = "pld",
    value_discretization_interval: Real = _PLD_INTERVAL,
) -> float:
    """ε at δ of ``num_releases`` Gaussian releases of multiplier s, each on a Poisson batch of rate q.

    ``accountant="pld"``: for q = 1 the exact Gaussian ε of s/√T (Balle & Wang); otherwise
    dp-accounting's PLD on a pessimistic grid of ``value_discretization_interval`` (an upper bound;
    a coarser grid is faster and looser). ``"rdp"``: dp-accounting's RDP accountant through
    :class:`~dpflows.privacy.PrivacyLedger` (looser, fast). s = 0 gives ∞.

    Example:
        >>> round(subsampled_gaussian_epsilon(calibrate_subsampled_gaussian(2.0, 1e-5, 9), 1e-5, 9), 6)
        2.0
    """
    _validate.positive("noise_multiplier", noise_multiplier, allow_zero=True)
    delta, num_releases, q = _check(delta, num_releases, sampling_rate)
    _validate.one_of("accountant", accountant, ("pld", "rdp"))
    _validate.positive("value_discretization_interval", value_discretization_interval)
    s = float(noise_multiplier)
    if s == 0:
        return math.inf
    if accountant == "rdp":
        return PrivacyLedger().add_gaussian(s, num_releases, None if q >= 1 else q).epsilon(delta, "rdp")
    if q >= 1:
        return gaussian_epsilon(s / math.sqrt(num_releases), delta, 1.0)
    return _pld_epsilon(s, num_releases, q, delta, float(value_discretization_interval))


def subsampled_gaussian_event(noise_multiplier: Real, num_releases: int = 1, sampling_rate: Real = 1.0):
    """The ``dp_accounting`` event of ``num_releases`` Poisson-subsampled Gaussian releases (for composition)."""
    _validate.positive("noise_multiplier", noise_multiplier, allow_zero=True)
    num_releases = _validate.positive_int("num_releases", num_releases)
    _validate.in_open_interval("sampling_rate", sampling_rate, 0.0, 1.0 + 1e-12)
    event = dpa.GaussianDpEvent(float(noise_multiplier))
    if float(sampling_rate) < 1:
        event = dpa.PoissonSampledDpEvent(float(sampling_rate), event)
    if num_releases > 1:
        event = dpa.SelfComposedDpEvent(event, num_releases)
    return event


def classical_gaussian_multiplier(epsilon: Real, delta: Real) -> float:
    """√(2 ln(1.25/δ))/ε, the classical Gaussian multiplier (Dwork & Roth, Thm A.1), for comparison only.

    Proven for ε < 1 only and not private above ε ≈ 9; use :func:`calibrate_subsampled_gaussian`
    (or :func:`~dpflows.privacy.calibrate_gaussian`) to calibrate. The DP-SW paper's code uses it.

    Example:
        >>> round(classical_gaussian_multiplier(10.0, 1e-5), 4)
        0.4845
    """
    _validate.positive("epsilon", epsilon)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    return math.sqrt(2 * math.log(1.25 / float(delta))) / float(epsilon)
