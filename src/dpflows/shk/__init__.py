"""SHK (spherical Hellinger–Kantorovich) / birth–death Langevin sampling, with DP certificates.

The SHK (Wasserstein–Fisher–Rao on probability measures) gradient flow of KL(ρ‖π), π ∝ e^{−V}:

    ∂ₜρ = α ∇·(ρ ∇ log(ρ/π))  −  β ρ (log(ρ/π) − E_ρ[log(ρ/π)]),

transport (Langevin) at weight α = ``transport`` and reaction (birth–death) at rate β = ``reaction``.
The reaction moves mass between modes without crossing the barriers between them, which is what
Langevin alone cannot do. Two particle schemes (METHODS.md §1c):

* ``"weighted"``: ULA positions, exponentiated-gradient log-weights, resampling at low ESS;
* ``"jump"``: Lu–Lu–Nolen kill/clone with N equally weighted particles.

Privacy (exponential mechanism V_D = γ L(·; D)): :func:`dp_certificate` returns ε(t) with an honest
``covers``. Only one sampler is covered as run (``covers="mechanism"``): the *exact* pure-reaction
weighted sampler (``transport=0`` and ``init(..., log_density0=...)``) started from a data-independent
sample of ρ₀ and released as one draw X_I, I ~ Cat(w) (:func:`private_sample`). Everything else —
KDE reactions, transport, the jump scheme — is an approximation of a flow whose bound is an
*ideal-flow* figure, never a guarantee of the released sample.

Layout: the JAX flow (``_sampler``: :class:`SHKSampler`, :class:`ExactReaction`, :func:`draw`,
:func:`release`), the exponential mechanism (``_mechanism``) and the host-side theory
(``_certificates``: certificates, SciPy ODE laws, utility). The density estimates are in
:mod:`dpflows.kde`, the generic KL/bounded-range conversions in :mod:`dpflows.privacy.conversions`
(``delta_from_kl``, ``kde_log_density`` and ``silverman_bandwidth`` are re-exported here for
compatibility).

References:
    Lu, Lu & Nolen (2019), "Accelerating Langevin sampling with birth–death", arXiv:1905.09863.
    Mustafi & Mukherjee (2026), "On the stability of spherical Hellinger–Kantorovich flows and
    their implications for differential privacy", arXiv:2605.23879 (bounds reconstructed:
    METHODS.md §1 lists what is exact and what is not).
"""

from ..kde import kde_log_density, silverman_bandwidth
from ..privacy import delta_from_kl
from ._certificates import (
    GaussianShift,
    UtilityBound,
    dp_certificate,
    gaussian_law,
    gaussian_shift_certificate,
    gaussian_shift_divergence,
    reaction_epsilon,
    utility_bound,
)
from ._mechanism import ExponentialMechanismPotential, exponential_mechanism, inverse_temperature, private_sample
from ._sampler import COLLAPSE_FRACTION, HEALTHY_STEP_ESS, ExactReaction, SHKSampler, draw, release

__all__ = [
    "COLLAPSE_FRACTION",
    "HEALTHY_STEP_ESS",
    "ExactReaction",
    "ExponentialMechanismPotential",
    "GaussianShift",
    "SHKSampler",
    "UtilityBound",
    "delta_from_kl",
    "dp_certificate",
    "draw",
    "exponential_mechanism",
    "gaussian_law",
    "gaussian_shift_certificate",
    "gaussian_shift_divergence",
    "inverse_temperature",
    "kde_log_density",
    "private_sample",
    "reaction_epsilon",
    "release",
    "silverman_bandwidth",
    "utility_bound",
]
