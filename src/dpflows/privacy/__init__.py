"""Privacy layer: mechanisms, certificates, composition, jittable RDP accounting and audits.

Every DP number in dpflows is a :class:`PrivacyCertificate` that says what it covers. See
``THREAT_MODEL`` for what a ``covers="mechanism"`` guarantee assumes.
"""

from ._gaussian import calibrate_gaussian, gaussian_delta, gaussian_epsilon, gdp_delta
from .accounting import PrivacyLedger, calibrate_noise_multiplier
from .audit import (
    AuditResult,
    PrivacyAuditError,
    audit_epsilon,
    audit_epsilon_scores,
    audit_mu,
    audit_mu_scores,
    clopper_pearson,
)
from .calibration import (
    calibrate_subsampled_gaussian,
    classical_gaussian_multiplier,
    subsampled_gaussian_epsilon,
    subsampled_gaussian_event,
)
from .certificate import COVERS, THREAT_MODEL, PrivacyCertificate, Release
from .conversions import binary_kl, bounded_range_epsilon, delta_from_kl, epsilon_from_kl
from .mechanisms import (
    exponential_mechanism,
    gaussian_ldp,
    gaussian_mechanism,
    gaussian_scale,
    laplace_ldp,
    laplace_mechanism,
    laplace_scale,
    release_key,
    snapping_guarantee,
)
from .rdp import (
    INTEGER_ORDERS,
    epsilon_from_rdp,
    rdp_bounded_range,
    rdp_epsilon,
    rdp_gaussian,
    rdp_laplace,
    rdp_pure,
    rdp_subsampled_gaussian,
)

__all__ = [
    "COVERS",
    "INTEGER_ORDERS",
    "THREAT_MODEL",
    "AuditResult",
    "PrivacyAuditError",
    "PrivacyCertificate",
    "PrivacyLedger",
    "Release",
    "audit_epsilon",
    "audit_epsilon_scores",
    "audit_mu",
    "audit_mu_scores",
    "binary_kl",
    "bounded_range_epsilon",
    "calibrate_gaussian",
    "calibrate_noise_multiplier",
    "calibrate_subsampled_gaussian",
    "classical_gaussian_multiplier",
    "clopper_pearson",
    "delta_from_kl",
    "epsilon_from_kl",
    "epsilon_from_rdp",
    "exponential_mechanism",
    "gaussian_delta",
    "gaussian_epsilon",
    "gaussian_ldp",
    "gaussian_mechanism",
    "gaussian_scale",
    "gdp_delta",
    "laplace_ldp",
    "laplace_mechanism",
    "laplace_scale",
    "rdp_bounded_range",
    "rdp_epsilon",
    "rdp_gaussian",
    "rdp_laplace",
    "rdp_pure",
    "rdp_subsampled_gaussian",
    "release_key",
    "snapping_guarantee",
    "subsampled_gaussian_epsilon",
    "subsampled_gaussian_event",
]
