"""The ledger never reports less than the certificates it was given (found by the privacy notebook).

A DP-SW release spends δ/2 on its sensitivity bound's failure and δ/2 on the Gaussian noise; the
ledger used to keep only the noise, so a (2, 1e-5) release composed to ε = 1.92 at δ = 1e-5.
"""

import math

import jax.numpy as jnp
import jax.random as jr
import pytest

from dpflows import privacy, swf


def _rows(n=400):
    x = jr.normal(jr.key(0), (n, 3))
    return 0.2 * x / (1.0 + jnp.linalg.norm(x, axis=1, keepdims=True))  # inside the unit ball


@pytest.mark.parametrize("num_releases", [1, 6])
def test_dpsw_certificate_composes_to_at_least_its_epsilon(num_releases):
    release, cert = swf.private_release(
        jr.key(2), _rows(), num_projections=16, epsilon=2.0, delta=1e-5, num_releases=num_releases
    )
    assert cert.event_failure == pytest.approx(0.5e-5, rel=1e-9)
    for ledger in (privacy.PrivacyLedger().add_certificate(cert), release.ledger):
        eps = ledger.epsilon(1e-5)
        # At least the certified ε (PLD discretisation is conservative), and not loose.
        assert 2.0 - 1e-6 <= eps <= 2.0 * 1.01, eps
        # The failure probability is an (ε=0, δ) entry: asking for a δ below it is impossible.
        assert math.isinf(ledger.epsilon(0.4e-5))


def test_self_composed_event_is_composed_tightly():
    # T full-batch releases: the accountant sees T Gaussians, not T basic (ε, δ) pairs.
    _, cert = swf.private_release(jr.key(3), _rows(), num_projections=16, epsilon=1.0, delta=1e-5, num_releases=8)
    ledger = privacy.PrivacyLedger().add_certificate(cert)
    kinds = sorted(e.kind for e in ledger.entries)
    assert kinds == ["approx", "gaussian"], kinds
    twice = privacy.PrivacyLedger().add_certificate(cert, count=2).epsilon(2e-5)
    basic = 2 * cert.epsilon
    assert cert.epsilon < twice < basic  # composed by PLD, better than basic composition


def test_pairs_only_ledger_at_exactly_their_delta():
    cert = privacy.PrivacyCertificate(2.0, 1e-5, "x", "mechanism")
    ledger = privacy.PrivacyLedger().add_certificate(cert)
    assert ledger.epsilon(1e-5) == 2.0
    assert math.isinf(ledger.epsilon(0.9e-5))
    assert ledger.delta(2.0) == pytest.approx(1e-5)


def test_event_failure_is_validated():
    with pytest.raises(ValueError, match="event_failure"):
        privacy.PrivacyCertificate(1.0, 1e-6, "x", "mechanism", event_failure=1e-5)
