"""AUD-5 (RELIABILITY.md §3.3): a GDP audit of the sliced flow's released projections, with planted bugs.

Design: d = 2, k = 64 directions, T = 4 full-batch releases (resample=True, q = 1), (ε, δ) = (2, 1e-5),
one private row, replace-one neighbours y₀ = −u vs y₁ = +u. The adversary knows the directions and
scores each transcript with the likelihood ratio Σ_t ⟨Θ_t(y₁ − y₀), v_t − Θ_t(y₀ + y₁)/2⟩ / σ_t²,
which is N(±μ²/2, μ²) with μ² = Σ_t ‖Θ_t(y₁ − y₀)‖²/σ_t² ≤ T/s² = μ_claim² when the bound holds.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dpflows import swf
from dpflows.privacy import PrivacyAuditError, audit_mu_scores

N = 20_000
U = jnp.array([[0.6, 0.8]])


def _flow(y):
    return swf.DPSlicedWassersteinFlow(
        y, epsilon=2.0, delta=1e-5, num_projections=64, step_size=1.0, num_steps=4, resample=True, key=jr.key(3)
    )


def _claim():
    """μ of the certificate: T full-batch Gaussian releases with multiplier s compose to μ = √T/s."""
    mech = _flow(-U).mechanism.plain()
    swf._mechanism.cache_clear()
    return math.sqrt(mech.num_releases) / mech.noise_multiplier


def _audit(scale=1.0):
    y0, y1 = -scale * U, scale * U
    mech = _flow(y0).mechanism.plain()

    def score(key, data):
        rel = swf.private_release(key, data, **mech.release_kwargs())  # the function the flow calls
        diff = rel.directions @ (U[0] - (-U[0]))  # the adversary's idea of Θ(y₁ − y₀) with clipped rows
        v = rel.values[:, :, 0]
        return jnp.sum(jnp.sum(diff * v, axis=1) / rel.noise_std**2)

    keys = jr.split(jr.key(7), 2 * N)
    s0 = jax.vmap(score, in_axes=(0, None))(keys[:N], y0)
    s1 = jax.vmap(score, in_axes=(0, None))(keys[N:], y1)
    return audit_mu_scores(np.asarray(s0), np.asarray(s1), name="DP sliced release")


@pytest.fixture(autouse=True)
def _fresh_calibration():
    swf._mechanism.cache_clear()  # planted bugs patch the calibration, which is cached
    yield
    swf._mechanism.cache_clear()


def test_release_audit_passes_and_sees_the_mechanism():
    claim = _claim()
    res = _audit()
    assert 0.30 <= res.mu_lower <= claim, (res.describe(claim), claim)
    res.check(claim)


def test_audit_catches_halved_noise(monkeypatch):
    claim = _claim()
    original = swf._calibrate
    monkeypatch.setattr(swf, "_calibrate", lambda *a: 0.5 * original(*a))
    with pytest.raises(PrivacyAuditError):
        _audit().check(claim)


def test_audit_catches_releases_left_out_of_the_accounting(monkeypatch):
    # The dpswgf pattern: noise re-drawn at every step but accounted as a single release.
    claim = _claim()
    monkeypatch.setattr(swf, "_accounted_releases", lambda resample, num_steps: 1)
    with pytest.raises(PrivacyAuditError):
        _audit().check(claim)


def test_audit_catches_missing_row_clipping(monkeypatch):
    claim = _claim()
    monkeypatch.setattr(swf, "_clip_rows", lambda y: y)
    with pytest.warns(UserWarning, match="norm > 1"):
        res = _audit(scale=5.0)
    with pytest.raises(PrivacyAuditError):
        res.check(claim)
