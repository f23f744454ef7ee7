"""AUD-5 (RELIABILITY.md §3.3): a GDP audit of the sliced flow's released projections, with planted bugs.

Design: d = 2, k = 64 directions, T = 4 full-batch releases (num_releases=4, q = 1), (ε, δ) = (2, 1e-5),
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

from dpflows import privacy, swf
from dpflows.privacy import PrivacyAuditError, audit_mu_scores
from dpflows.swf import _mechanism as swf_mechanism  # the clipping seam a planted bug removes

N = 20_000
U = jnp.array([[0.6, 0.8]])


def _release(y):
    return swf.private_release(jr.key(3), y, num_projections=64, epsilon=2.0, delta=1e-5, num_releases=4)[0]


def _claim():
    """μ of the certificate: T full-batch Gaussian releases with multiplier s compose to μ = √T/s."""
    p = _release(-U).parameters()
    return math.sqrt(p["num_releases"]) / p["noise_multiplier"]


def _audit(scale=1.0):
    y0, y1 = -scale * U, scale * U
    kwargs = _release(y0).mechanism_kwargs()

    def score(key, data):
        rel = swf.sliced_gaussian_mechanism(key, data, **kwargs)  # the draw private_release makes
        diff = rel.directions @ (U[0] - (-U[0]))  # the adversary's idea of Θ(y₁ − y₀) with clipped rows
        v = rel.values[:, :, 0]
        return jnp.sum(jnp.sum(diff * v, axis=1) / rel.noise_std**2)

    keys = jr.split(jr.key(7), 2 * N)
    s0 = jax.vmap(score, in_axes=(0, None))(keys[:N], y0)
    s1 = jax.vmap(score, in_axes=(0, None))(keys[N:], y1)
    return audit_mu_scores(np.asarray(s0), np.asarray(s1), name="DP sliced release")


def test_release_audit_passes_and_sees_the_mechanism():
    claim = _claim()
    res = _audit()
    assert 0.30 <= res.mu_lower <= claim, (res.describe(claim), claim)
    res.check(claim)


def test_audit_catches_halved_noise(monkeypatch):
    claim = _claim()
    original = privacy.calibrate_subsampled_gaussian  # swf looks this public name up at call time
    monkeypatch.setattr(privacy, "calibrate_subsampled_gaussian", lambda *a: 0.5 * original(*a))
    with pytest.raises(PrivacyAuditError):
        _audit().check(claim)


def test_audit_catches_releases_left_out_of_the_accounting(monkeypatch):
    # The dpswgf pattern: noise re-drawn at every step but accounted as a single release.
    claim = _claim()
    original = privacy.calibrate_subsampled_gaussian

    def one_release(epsilon, delta, num_releases, sampling_rate):
        return original(epsilon, delta, 1, sampling_rate)

    monkeypatch.setattr(privacy, "calibrate_subsampled_gaussian", one_release)
    with pytest.raises(PrivacyAuditError):
        _audit().check(claim)


def test_audit_catches_missing_row_clipping(monkeypatch):
    claim = _claim()
    monkeypatch.setattr(swf_mechanism, "_clip_rows", lambda y: y)
    with pytest.warns(UserWarning, match="norm > 1"):
        res = _audit(scale=5.0)
    with pytest.raises(PrivacyAuditError):
        res.check(claim)
