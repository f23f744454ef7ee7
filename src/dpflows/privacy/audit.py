"""Empirical DP audits: lower bounds on ε (Clopper–Pearson) and on GDP μ from black-box runs.

Run a mechanism N times on each of two neighbouring inputs, reduce each output to a scalar score,
pick an event S = {score > t}, count hits c₀/N₀, c₁/N₁, and bound:

    ε_lo = max(0, log((p₁,lo − δ)/p₀,hi), log((q₀,lo − δ)/q₁,hi))      (p = P(S), q = P(Sᶜ))
    μ_lo = Φ⁻¹(TPR_lo) − Φ⁻¹(FPR_hi)                                   (TPR = P₁(S), FPR = P₀(S))

with one-sided Clopper–Pearson bounds, the confidence split by a union bound. Any (ε, δ)-DP
mechanism has ε_lo ≤ ε with probability ≥ 1 − α; any μ-GDP mechanism has μ_lo ≤ μ (Nasr et al.
2023). For Gaussian mechanisms audit μ: (ε, δ) audits cannot reach events of probability ~δ.
The threshold is fixed a priori (best when the optimal event is known) or chosen on a held-out
selection split (``"split"``), never on the data that is counted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from scipy import special, stats

from .. import _validate
from .._typing import Real

__all__ = ["AuditResult", "PrivacyAuditError", "audit_epsilon", "audit_mu", "clopper_pearson"]


class PrivacyAuditError(AssertionError):
    """The empirical lower bound exceeds the claimed guarantee: the mechanism or its accounting is wrong."""


def clopper_pearson(count: int, n: int, alpha: Real) -> tuple[float, float]:
    """One-sided Clopper–Pearson bounds (lower, upper), each holding with probability ≥ 1 − α.

    Raises:
        TypeError / ValueError: ``count`` or ``n`` not an int, ``n`` < 1, ``count`` ∉ [0, n], α ∉ (0, ½).
    """
    n = _validate.positive_int("n", n)
    count = _validate.positive_int("count", count, allow_zero=True)
    # α < ½: for larger α the "lower" quantile can exceed count/n and the bounds cross.
    _validate.in_open_interval("alpha", _validate.scalar("alpha", alpha), 0.0, 0.5)
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= count <= n:
        raise ValueError(f"count must be in [0, n], got {count} of {n}")
    lo = 0.0 if count == 0 else float(stats.beta.ppf(alpha, count, n - count + 1))
    hi = 1.0 if count == n else float(stats.beta.ppf(1 - alpha, count + 1, n - count))
    return lo, hi


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """An audit's lower bound and the counts behind it.

    Attributes:
        kind: ``"epsilon"`` or ``"mu"``.
        lower: the lower bound (ε_lo or μ_lo).
        counts: (c₀, n₀, c₁, n₁) — hits of S = {score > threshold} under d0 and d1.
        threshold: t.
        alpha: total failure probability of the bound.
        delta: δ used in the ε bound (0 for μ).
        direction: which ratio attained the bound.
    """

    kind: str
    lower: Real
    counts: tuple[int, int, int, int]
    threshold: Real
    alpha: Real
    delta: Real
    direction: str
    name: str = "mechanism"

    @property
    def epsilon_lower(self) -> float:
        """ε_lo (only for ``kind == "epsilon"``)."""
        if self.kind != "epsilon":
            raise AttributeError("this is a mu audit; use .mu_lower")
        return self.lower

    @property
    def mu_lower(self) -> float:
        """μ_lo (only for ``kind == "mu"``)."""
        if self.kind != "mu":
            raise AttributeError("this is an epsilon audit; use .epsilon_lower")
        return self.lower

    def describe(self, claim: Real | None = None) -> str:
        """One line with the bound, confidence, event and counts."""
        c0, n0, c1, n1 = self.counts
        conf = f"{100 * (1 - self.alpha):.3g}%"
        head = f"{self.kind} lower bound {self.lower:.4g} ({conf} Clopper–Pearson)"
        if claim is not None:
            head = f"DP audit of {self.name}: {head} vs claimed {self.kind} {claim:.4g}"
        return (
            f"{head}; event {{score > {self.threshold:.4g}}} ({self.direction}); counts {c0:,}/{n0:,} (d0) vs "
            f"{c1:,}/{n1:,} (d1)"
        )

    def check(self, claim: Real) -> AuditResult:
        """Raise :class:`PrivacyAuditError` if the lower bound exceeds ``claim``; return self otherwise."""
        if self.lower > claim:
            raise PrivacyAuditError("DP audit FAILED: " + self.describe(claim))
        return self


# ------------------------------------------------------------------------------ on scores
def _check_scores(s0, s1):
    s0 = np.asarray(_validate.floating_array("scores0", s0), dtype=np.float64).ravel()
    s1 = np.asarray(_validate.floating_array("scores1", s1), dtype=np.float64).ravel()
    if s0.size == 0 or s1.size == 0:
        raise ValueError("scores must be non-empty for both inputs")
    if not (np.all(np.isfinite(s0)) and np.all(np.isfinite(s1))):
        raise ValueError("scores must be finite (a NaN output is itself a privacy failure: inspect the mechanism)")
    return s0, s1


def _check_alpha_delta(alpha, delta):
    _validate.in_open_interval("alpha", _validate.scalar("alpha", alpha), 0.0, 0.5)
    _validate.in_closed_interval("delta", _validate.scalar("delta", delta), 0.0, 1.0)


def _threshold(threshold, auto: str) -> float:
    if isinstance(threshold, str):
        raise ValueError(f"threshold must be {auto!r} or a number, got {threshold!r}")
    t = _validate.scalar("threshold", threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {t}")
    return t


def _split_sizes(selection_fraction, n0: int, n1: int) -> tuple[int, int]:
    _validate.in_open_interval("selection_fraction", selection_fraction, 0.0, 1.0)
    m0, m1 = int(selection_fraction * n0), int(selection_fraction * n1)
    if min(m0, m1) < 1 or m0 >= n0 or m1 >= n1:
        raise ValueError(
            f"selection_fraction={selection_fraction} leaves an empty selection or test split for "
            f"{n0} and {n1} scores: give more scores or a fixed threshold"
        )
    return m0, m1


def _log_ratio(num_lo: Real, den_hi: Real, delta: Real) -> float:
    num = num_lo - delta
    if num <= 0 or den_hi <= 0:
        return 0.0 if num <= 0 else math.inf
    return math.log(num / den_hi)


def _epsilon_bound(c0, n0, c1, n1, alpha, delta):
    # Two statements (S favours d1, Sᶜ favours d0), two probabilities each: α/4 per bound.
    a = alpha / 4
    p0 = clopper_pearson(c0, n0, a)
    p1 = clopper_pearson(c1, n1, a)
    q0 = clopper_pearson(n0 - c0, n0, a)
    q1 = clopper_pearson(n1 - c1, n1, a)
    forward = _log_ratio(p1[0], p0[1], delta)
    backward = _log_ratio(q0[0], q1[1], delta)
    if forward >= backward:
        return max(0.0, forward), "P1(S) vs P0(S)"
    return max(0.0, backward), "P0(not S) vs P1(not S)"


def _select_threshold(s0, s1, min_count, delta):
    """Threshold with the best plug-in ε, log((p_a − δ)/p_b), on the selection split (well-populated events)."""
    pooled = np.concatenate([s0, s1])
    candidates = np.unique(np.quantile(pooled, np.linspace(0.005, 0.995, 199)))
    best, best_t = -math.inf, float(np.median(pooled))
    n0, n1 = s0.size, s1.size
    for t in candidates:
        c0, c1 = int(np.sum(s0 > t)), int(np.sum(s1 > t))
        for a, b, na, nb in ((c1, c0, n1, n0), (n0 - c0, n1 - c1, n0, n1)):
            if a >= min_count and b >= min_count and a / na > delta:
                value = math.log(a / na - delta) - math.log(b / nb)
                if value > best:
                    best, best_t = value, float(t)
    return best_t


def audit_epsilon_scores(
    scores0: Any,
    scores1: Any,
    *,
    threshold: Real | str = "split",
    alpha: Real = 1e-3,
    delta: Real = 0.0,
    selection_fraction: Real = 0.2,
    name: str = "mechanism",
) -> AuditResult:
    """ε lower bound from scores of runs on d0 (``scores0``) and d1 (``scores1``); see the module doc."""
    s0, s1 = _check_scores(scores0, scores1)
    _check_alpha_delta(alpha, delta)
    if isinstance(threshold, str) and threshold == "split":
        m0, m1 = _split_sizes(selection_fraction, s0.size, s1.size)
        min_count = max(10, min(m0, m1) // 100)
        t = _select_threshold(s0[:m0], s1[:m1], min_count, delta)
        s0, s1 = s0[m0:], s1[m1:]
    else:
        t = _threshold(threshold, "split")
    c0, c1 = int(np.sum(s0 > t)), int(np.sum(s1 > t))
    lower, direction = _epsilon_bound(c0, s0.size, c1, s1.size, alpha, delta)
    return AuditResult("epsilon", lower, (c0, s0.size, c1, s1.size), t, alpha, delta, direction, name)


def audit_mu_scores(
    scores0: Any,
    scores1: Any,
    *,
    threshold: Real | str = "midpoint",
    alpha: Real = 1e-3,
    selection_fraction: Real = 0.2,
    name: str = "mechanism",
) -> AuditResult:
    """GDP μ lower bound: Φ⁻¹(TPR_lo) − Φ⁻¹(FPR_hi) for S = {score > t} (scores oriented: d1 higher).

    ``threshold="midpoint"`` takes the midpoint of the two means on a held-out selection split.
    """
    s0, s1 = _check_scores(scores0, scores1)
    _check_alpha_delta(alpha, 0.0)
    if isinstance(threshold, str) and threshold == "midpoint":
        m0, m1 = _split_sizes(selection_fraction, s0.size, s1.size)
        t = 0.5 * (float(np.mean(s0[:m0])) + float(np.mean(s1[:m1])))
        s0, s1 = s0[m0:], s1[m1:]
    else:
        t = _threshold(threshold, "midpoint")
    c0, c1 = int(np.sum(s0 > t)), int(np.sum(s1 > t))
    fpr_hi = clopper_pearson(c0, s0.size, alpha / 2)[1]
    tpr_lo = clopper_pearson(c1, s1.size, alpha / 2)[0]
    lower = max(0.0, float(special.ndtri(tpr_lo) - special.ndtri(fpr_hi))) if tpr_lo > 0 and fpr_hi < 1 else 0.0
    return AuditResult("mu", lower, (c0, s0.size, c1, s1.size), t, alpha, 0.0, "TPR vs FPR", name)


# ------------------------------------------------------------------------------ on mechanisms
def _run(mechanism: Callable, d, key, num_trials: int, statistic: Callable | None):
    stat = statistic or (lambda y: jnp.ravel(y)[0] if jnp.ndim(y) else y)
    fn = jax.jit(jax.vmap(lambda k: stat(mechanism(k, d))))
    return np.asarray(fn(jr.split(key, num_trials)))


def _scores_of(mechanism, d0, d1, key, num_trials, statistic):
    """Scores of ``num_trials`` runs on each neighbour, with independent keys per side."""
    num_trials = _validate.positive_int("num_trials", num_trials)
    if not callable(mechanism):
        raise TypeError(f"mechanism must be callable, got {type(mechanism).__name__}")
    key = _validate.prng_key("key", key)
    k0, k1 = jr.split(key)
    return _run(mechanism, d0, k0, num_trials, statistic), _run(mechanism, d1, k1, num_trials, statistic)


def audit_epsilon(
    mechanism: Callable,
    d0: Any,
    d1: Any,
    *,
    key: Any,
    num_trials: int,
    statistic: Callable | None = None,
    threshold: Real | str = "split",
    alpha: Real = 1e-3,
    delta: Real = 0.0,
    claimed_epsilon: Real | None = None,
    name: str | None = None,
) -> AuditResult:
    """Audit ``mechanism(key, dataset) -> output`` on neighbours ``d0``, ``d1``: a lower bound on ε.

    Args:
        mechanism: jit- and vmap-able; the code whose output is released.
        d0: one dataset.
        d1: a neighbouring dataset.
        key: PRNG key (fixed in tests).
        num_trials: runs per dataset.
        statistic: output → scalar score, oriented so that d1 tends to score higher
            (default: the first entry of the output).
        threshold: a float (a priori event {score > t}) or ``"split"`` (chosen on 20% held out).
        alpha: total failure probability of the bound (default 1e-3: a tight correct mechanism
            would fail an α = 0.05 audit in up to 5% of seeds by design).
        delta: δ of the claim being tested.
        claimed_epsilon: if given, raise :class:`PrivacyAuditError` when the bound exceeds it.
        name: used in messages.
    """
    s0, s1 = _scores_of(mechanism, d0, d1, key, num_trials, statistic)
    result = audit_epsilon_scores(
        s0, s1, threshold=threshold, alpha=alpha, delta=delta, name=name or getattr(mechanism, "__name__", "mechanism")
    )
    return result if claimed_epsilon is None else result.check(claimed_epsilon)


def audit_mu(
    mechanism: Callable,
    d0: Any,
    d1: Any,
    *,
    key: Any,
    num_trials: int,
    statistic: Callable | None = None,
    threshold: Real | str = "midpoint",
    alpha: Real = 1e-3,
    claimed_mu: Real | None = None,
    name: str | None = None,
) -> AuditResult:
    """Audit a Gaussian-type mechanism for μ-GDP: a lower bound on μ (see :func:`audit_epsilon`)."""
    s0, s1 = _scores_of(mechanism, d0, d1, key, num_trials, statistic)
    result = audit_mu_scores(
        s0, s1, threshold=threshold, alpha=alpha, name=name or getattr(mechanism, "__name__", "mechanism")
    )
    return result if claimed_mu is None else result.check(claimed_mu)
