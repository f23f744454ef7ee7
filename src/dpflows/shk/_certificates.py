"""Host-side SHK theory: DP certificates, the exact Gaussian laws (SciPy ODEs) and the utility bound.

NumPy/SciPy in float64; nothing here is traced. The generic conversions (KL → (ε, δ), bounded range
→ (ε, δ)) live in :mod:`dpflows.privacy.conversions`; this module only says what the SHK flow's
numbers are (METHODS.md §1b, reconstructed where marked).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .. import _validate
from .._typing import Real
from ..privacy import PrivacyCertificate, bounded_range_epsilon, delta_from_kl, gaussian_epsilon

__all__ = [
    "GaussianShift",
    "UtilityBound",
    "dp_certificate",
    "gaussian_law",
    "gaussian_shift_certificate",
    "gaussian_shift_divergence",
    "reaction_epsilon",
    "utility_bound",
]


def reaction_epsilon(epsilon: Any, time: Any, *, reaction: Any = 1.0) -> Any:
    """ε(t) = (1 − e^{−βt}) · ε: the pure-DP curve of the pure-reaction SHK flow from a data-independent ρ₀.

    ε is the exact exponential mechanism's (ε_EM = 2γΔ); the factor 1 − e^{−βt} is the weight the
    target has gained by time t in log ρₜ = e^{−βt} log ρ₀ + (1 − e^{−βt}) log π + c (METHODS.md §1b).
    This is the one place the formula is written: :func:`dp_certificate`, the experiments and the
    plots call it. Elementwise on NumPy arrays (broadcast); a float for scalar arguments.

    Args:
        epsilon: ε ≥ 0 of the exact exponential mechanism.
        time: t ≥ 0.
        reaction: β ≥ 0.

    Example:
        >>> round(reaction_epsilon(1.0, 3.0), 4)
        0.9502
    """
    _validate.positive("epsilon", epsilon, allow_zero=True)
    _validate.positive("time", time, allow_zero=True)
    _validate.positive("reaction", reaction, allow_zero=True)
    eps, t, beta = (np.asarray(v, np.float64) for v in (epsilon, time, reaction))
    out = -np.expm1(-beta * t) * eps
    return float(out) if out.ndim == 0 else out


def _duhamel_factor(beta: float, time: float) -> float:
    """∫₀ᵗ e^{−β(t−s)} ds = (1 − e^{−βt})/β, → t as β → 0."""
    return time if beta == 0 else -math.expm1(-beta * time) / beta


def dp_certificate(
    *,
    sensitivity: Real,
    inverse_temperature: Real,
    time: Real,
    reaction: Real = 1.0,
    transport: Real = 0.0,
    delta: Real | None = None,
    exact_reaction: bool = True,
    transport_bound: Real | None = None,
) -> PrivacyCertificate:
    """DP certificate for one draw from the SHK flow towards π_D ∝ e^{−γ L(·; D)} at time t.

    With ε_EM = 2γΔ (the exact exponential mechanism; Δ bounds |L_D − L_D′| uniformly in θ):

    * ``transport=0``: ε(t) = (1 − e^{−βt}) · ε_EM, exact for the pure-reaction flow from a
      data-independent ρ₀. ``covers="mechanism"`` when ``exact_reaction`` (the sampler of
      :func:`private_sample`: exact weights on data-independent candidates, one draw X_I — an
      exponential mechanism at temperature (1 − e^{−βt})γ, for every N and step size). With a KDE
      reaction (``exact_reaction=False``) the figure is the ideal flow's only — and it is *not* a
      bound for the KDE samplers: on the audit problem of RELIABILITY.md §3.3 (t = 3, 64 particles)
      they audit at ε ≥ 1.21 (weighted) and ≥ 1.09 (jump) against the ideal flow's 0.95
      (``tests/shk/test_shk_privacy.py::test_report_only_audit_of_the_kde_samplers``, slow).
    * ``transport=α > 0``: the reconstructed maximum-principle bound (METHODS.md §1b, not the paper's
      constants)

          ε(t) ≤ (1 − e^{−βt}) ε_EM + αγ G (1 − e^{−βt})/β,   G ≥ sup_s osc_θ(ΔL_diff + ∇log ρ′_s·∇L_diff),

      with L_diff = L_D − L_D′ and G = ``transport_bound`` (required; (1 − e^{−βt})/β → t at β = 0).
      G is an *oscillation* (sup − inf, at most twice the sup norm): the maximum principle bounds
      the growth of osc(log ρₜ/ρ′ₜ) by the source's oscillation. METHODS.md §1b wrote the sup norm,
      which is too small by up to 2× (the grid test shows a violation at β = 0).
      ``covers="ideal flow"``: no finite-particle sampler with transport is covered.
    * ``delta``: (ε, δ) from the bounded-range structure (RDP of an ε(t)-bounded-range mechanism,
      Cesar & Rogers 2021), or the pure ε(t) when smaller.

    The certificate's ``parameters`` carry ``kind="exponential"`` for the covered sampler, so
    :class:`~dpflows.privacy.PrivacyLedger` composes it as ε(t)²/8-zCDP, not ε(t)²/2.
    """
    _validate.positive("sensitivity", sensitivity)
    _validate.positive("inverse_temperature", inverse_temperature)
    _validate.positive("time", time, allow_zero=True)
    _validate.positive("reaction", reaction, allow_zero=True)
    _validate.positive("transport", transport, allow_zero=True)
    if delta is not None:
        _validate.in_open_interval("delta", delta, 0.0, 1.0)
    gamma, big_delta, t = float(inverse_temperature), float(sensitivity), float(time)
    beta, alpha = float(reaction), float(transport)
    eps_em = 2.0 * gamma * big_delta
    factor = reaction_epsilon(1.0, t, reaction=beta)  # 1 − e^{−βt}
    eps = factor * eps_em
    params: dict[str, Any] = {
        "epsilon_em": eps_em,
        "inverse_temperature": gamma,
        "sensitivity": big_delta,
        "time": t,
        "reaction": beta,
        "transport": alpha,
        "reaction_factor": factor,
    }
    if alpha == 0 and exact_reaction:
        covers = "mechanism"
        mech = f"exact pure-reaction SHK sampler, one draw (beta={beta:g}, t={t:g}, gamma={gamma:g})"
        notes = (
            "Exact for the weighted pure-reaction sampler (SHKSampler(transport=0), init(..., log_density0=...)) "
            "started from a data-independent sample of rho_0 and released as one draw X_I, I ~ Cat(w): it is an "
            "exponential mechanism at temperature (1-e^(-beta t)) gamma over data-independent candidates, so "
            "eps(t) = (1 - e^(-beta t)) * 2 gamma Delta holds for any number of particles and step size. "
            "Assumes |L(.;D) - L(.;D')| <= Delta everywhere and a secret release key."
        )
        params["kind"] = "exponential"
    elif alpha == 0:
        covers = "ideal flow"
        mech = f"pure-reaction SHK flow (beta={beta:g}, t={t:g}, gamma={gamma:g})"
        notes = (
            "Ideal-flow figure: the exact pure-reaction flow rho_t is (1 - e^(-beta t)) 2 gamma Delta-DP. The KDE "
            "particle sampler only approximates rho_t (kernel bias, particle interaction): NOT a guarantee of "
            "its output."
        )
    else:
        if transport_bound is None:
            raise ValueError(
                "transport_bound is required when transport > 0: an upper bound G on the oscillation "
                "sup_s osc(Laplacian(L_D - L_D') + grad log rho'_s . grad(L_D - L_D')) (see dp_certificate)"
            )
        _validate.positive("transport_bound", transport_bound, allow_zero=True)
        g = float(transport_bound)
        eps = eps + alpha * gamma * g * _duhamel_factor(beta, t)
        params["transport_bound"] = g
        covers = "ideal flow"
        mech = f"SHK flow (alpha={alpha:g}, beta={beta:g}, t={t:g}, gamma={gamma:g})"
        notes = (
            "Ideal-flow figure from a reconstructed maximum-principle bound (METHODS.md §1b), not the paper's "
            "constants: eps(t) <= (1-e^(-beta t)) eps_EM + alpha gamma G (1-e^(-beta t))/beta. No particle sampler "
            "with transport is covered: NOT a guarantee of a released sample."
        )
    params["epsilon_pure"] = eps
    if delta is None:
        return PrivacyCertificate(eps, 0.0, mech, covers, notes=notes, parameters=params)
    eps_approx, route = bounded_range_epsilon(eps, float(delta))
    params["approximate_route"] = route
    if route != "pure":
        params.pop("kind", None)  # compose as the stated (ε, δ), not as a pure bounded-range event
        notes += f" (eps, delta) via the {route}."
    return PrivacyCertificate(eps_approx, float(delta), mech, covers, notes=notes, parameters=params)


# ---------------------------------------------------------------------------- Gaussian closed forms
def _ode_solve(rhs: Callable, y0: np.ndarray, time: float) -> np.ndarray:
    from scipy.integrate import solve_ivp

    if time == 0:
        return y0
    sol = solve_ivp(rhs, (0.0, time), y0, method="DOP853", rtol=1e-11, atol=1e-13)
    if not sol.success:  # pragma: no cover - DOP853 on a smooth linear-quadratic ODE
        raise RuntimeError(f"ODE solver failed: {sol.message}")
    return sol.y[:, -1]


def _as_spd(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or not np.allclose(arr, arr.T, atol=1e-10 * max(1.0, np.abs(arr).max())):
        raise ValueError(f"{name} must be finite and symmetric")
    if np.linalg.eigvalsh(arr).min() <= 0:
        raise ValueError(f"{name} must be positive definite")
    return arr


def _as_vector(name: str, value: Any, d: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def gaussian_law(
    mean0: Any, cov0: Any, target_mean: Any, precision: Any, time: Real, *, transport: Real = 1.0, reaction: Real = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact SHK law at time t for π = N(b, A⁻¹) from ρ₀ = N(m₀, S₀) (it stays Gaussian).

        ṁ = −(αI + βS) A (m − b),     Ṗ = α(−2P² + PA + AP) + β(A − P),   P = S⁻¹,

    integrated with DOP853 (rtol 1e-11) in float64 NumPy. Returns (mₜ, Sₜ). The fixed point is (b, A⁻¹).
    """
    a = _as_spd("precision", precision)
    d = a.shape[0]
    s0 = _as_spd("cov0", cov0)
    m0 = _as_vector("mean0", mean0, d)
    b = _as_vector("target_mean", target_mean, d)
    _validate.positive("time", time, allow_zero=True)
    _validate.positive("transport", transport, allow_zero=True)
    _validate.positive("reaction", reaction, allow_zero=True)
    alpha, beta = float(transport), float(reaction)

    def rhs(_, y):
        m, p = y[:d], y[d:].reshape(d, d)
        s = np.linalg.inv(p)
        dm = -(alpha * np.eye(d) + beta * s) @ a @ (m - b)
        dp = alpha * (-2 * p @ p + p @ a + a @ p) + beta * (a - p)
        return np.concatenate([dm, dp.ravel()])

    y = _ode_solve(rhs, np.concatenate([m0, np.linalg.inv(s0).ravel()]), float(time))
    p = y[d:].reshape(d, d)
    cov = np.linalg.inv(0.5 * (p + p.T))
    return y[:d], 0.5 * (cov + cov.T)


class GaussianShift(NamedTuple):
    """KL(ρₜ‖ρ′ₜ) for two SHK flows whose Gaussian targets differ by a mean shift (equal covariances)."""

    kl: float
    mu: float  # the pair is exactly μ-GDP, μ² = 2 KL
    mean_difference: np.ndarray
    cov: np.ndarray


def gaussian_shift_divergence(
    precision: Any, shift: Any, cov0: Any, time: Real, *, transport: Real = 1.0, reaction: Real = 1.0
) -> GaussianShift:
    """Exact divergence between SHK flows towards N(b, A⁻¹) and N(b′, A⁻¹) from the same N(m₀, S₀).

    The covariance ODE does not see b, so both laws share Sₜ, and their means differ by δₜ with
    δ̇ = −(αI + βSₜ) A (δ − (b − b′)), δ₀ = 0. Then KL = ½ δₜᵀ Sₜ⁻¹ δₜ and, since equal-covariance
    Gaussians are a Gaussian shift, the pair is exactly μ-GDP with μ = √(δₜᵀ Sₜ⁻¹ δₜ).
    """
    a = _as_spd("precision", precision)
    d = a.shape[0]
    s = _as_vector("shift", shift, d)
    # δ obeys the mean ODE of gaussian_law with target mean b − b′, started at 0.
    dl, cov = gaussian_law(np.zeros(d), cov0, s, a, time, transport=transport, reaction=reaction)
    quad = max(float(dl @ np.linalg.solve(cov, dl)), 0.0)
    return GaussianShift(0.5 * quad, math.sqrt(quad), dl, cov)


def gaussian_shift_certificate(
    *,
    precision: Any,
    shift: Any,
    cov0: Any,
    time: Real,
    delta: Real,
    transport: Real = 1.0,
    reaction: Real = 1.0,
) -> PrivacyCertificate:
    """(ε, δ) for SHK flows towards Gaussians that differ by a mean shift (``covers="ideal flow"``).

    The pair (ρₜ, ρ′ₜ) is exactly μₜ-GDP (:func:`gaussian_shift_divergence`), so ε(δ) is exact for
    the flow: the smallest ε with Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) ≤ δ. Pure DP fails here (the
    log ratio is linear in θ). ``parameters`` also holds the KL and the KL-route δ(ε) (:func:`delta_from_kl`),
    which is valid but looser.
    """
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    res = gaussian_shift_divergence(precision, shift, cov0, time, transport=transport, reaction=reaction)
    eps = 0.0 if res.mu == 0 else float(gaussian_epsilon(1.0 / res.mu, float(delta), 1.0))
    return PrivacyCertificate(
        eps,
        float(delta),
        f"SHK flow between Gaussian targets with a mean shift (alpha={float(transport):g}, "
        f"beta={float(reaction):g}, t={float(time):g})",
        "ideal flow",
        notes=(
            f"Exact for the continuous-time flow: mu_t-GDP with mu_t = {res.mu:.6g} (KL = {res.kl:.6g}); "
            "particle samplers only approximate it."
        ),
        parameters={"mu": res.mu, "kl": res.kl, "delta_from_kl": delta_from_kl(res.kl, eps), "time": float(time)},
    )


# ------------------------------------------------------------------------------------- utility
class UtilityBound(NamedTuple):
    """E_{ρₜ}[L] − min L ≤ intrinsic + finite_time (METHODS.md §1b)."""

    intrinsic: float  # E_{π_D}[L] − min L ≤ d/γ (convex L on ℝᵈ)
    finite_time: float  # osc(L) · TV(ρₜ, π_D)
    tv: float
    total: float


def utility_bound(
    *,
    inverse_temperature: Real,
    dimension: int,
    loss_oscillation: Real,
    time: Real | None = None,
    reaction: Real = 1.0,
    initial_log_ratio_oscillation: Real | None = None,
    kl: Real | None = None,
) -> UtilityBound:
    """Split of the expected excess loss of one SHK draw: the EM's own part plus the sampling part.

    * intrinsic: E_{π_D}[L] − min L ≤ d/γ for convex L (the Gibbs-measure bound);
    * finite_time: osc(L) · TV(ρₜ, π_D), with TV bounded by the smaller of
      - √(KL/2) (Pinsker) when ``kl`` ≥ KL(ρₜ‖π_D) is given;
      - tanh(Mₜ/4), Mₜ = e^{−βt} M, for the pure-reaction flow, whose log(ρₜ/π) = e^{−βt} log(ρ₀/π)
        + c has oscillation e^{−βt} M with M = ``initial_log_ratio_oscillation``; tanh(M/4) is the
        largest TV between two laws whose log ratio has oscillation M.
    """
    _validate.positive("inverse_temperature", inverse_temperature)
    dimension = _validate.positive_int("dimension", dimension)
    _validate.positive("loss_oscillation", loss_oscillation, allow_zero=True)
    tvs = [1.0]
    if kl is not None:
        _validate.positive("kl", kl, allow_zero=True)
        tvs.append(math.sqrt(float(kl) / 2.0))
    if initial_log_ratio_oscillation is not None:
        if time is None:
            raise ValueError("time is required with initial_log_ratio_oscillation")
        _validate.positive("initial_log_ratio_oscillation", initial_log_ratio_oscillation, allow_zero=True)
        _validate.positive("time", time, allow_zero=True)
        _validate.positive("reaction", reaction, allow_zero=True)
        m_t = math.exp(-float(reaction) * float(time)) * float(initial_log_ratio_oscillation)
        tvs.append(math.tanh(m_t / 4.0))
    tv = min(tvs)
    intrinsic = dimension / float(inverse_temperature)
    finite = float(loss_oscillation) * tv
    return UtilityBound(intrinsic, finite, tv, intrinsic + finite)
