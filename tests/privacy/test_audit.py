"""AUD-0 … AUD-3: the auditor itself, and audits of the mechanisms with planted bugs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import get_epsilon_gaussian
from scipy import special, stats

from dpflows import privacy
from dpflows.privacy import PrivacyAuditError, audit_epsilon, audit_epsilon_scores, audit_mu, audit_mu_scores
from dpflows.privacy import mechanisms as mech


def _quantile_normal(n, shift=0.0):
    """Deterministic N(shift, 1) scores: quantiles at (i + ½)/n (the jax_privacy auditor-test pattern)."""
    return shift + special.ndtri((np.arange(n) + 0.5) / n)


# ------------------------------------------------------------------------------ AUD-0
@pytest.mark.parametrize("mu", [0.3, 1.0, 1.5])
def test_auditor_on_deterministic_gaussian_scores(mu):
    n = 2_000_000
    s0, s1 = _quantile_normal(n), _quantile_normal(n, mu)
    rng = np.random.default_rng(0)  # shuffle so the selection split is representative
    s0, s1 = rng.permutation(s0), rng.permutation(s1)
    true_eps = get_epsilon_gaussian(1 / mu, 0.1)
    eps = audit_epsilon_scores(s0, s1, delta=0.1).epsilon_lower
    assert 0.8 * true_eps < eps < true_eps, (eps, true_eps)
    m = audit_mu_scores(s0, s1).mu_lower
    assert mu - 0.02 <= m <= mu, m


def test_explicit_threshold_equals_the_hand_formula():
    s0 = np.array([0.0] * 900 + [2.0] * 100)
    s1 = np.array([0.0] * 600 + [2.0] * 400)
    res = audit_epsilon_scores(s0, s1, threshold=1.0, alpha=0.01)
    a = 0.01 / 4
    p1_lo = stats.beta.ppf(a, 400, 601)
    p0_hi = stats.beta.ppf(1 - a, 101, 900)
    assert res.counts == (100, 1000, 400, 1000)
    assert res.epsilon_lower == pytest.approx(math.log(p1_lo / p0_hi), rel=1e-12)


def test_degenerate_mechanisms():
    n = 10_000
    leaky = audit_epsilon_scores(np.zeros(n), np.ones(n), threshold=0.5)
    assert 5 < leaky.epsilon_lower < math.inf  # finite, large: about log(n)
    same = audit_epsilon_scores(np.zeros(n), np.zeros(n), threshold=0.5)
    assert same.epsilon_lower == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"alpha": 0.0}, "alpha"), ({"alpha": 0.6}, "alpha"), ({"delta": -0.1}, "delta"), ({"delta": 1.5}, "delta")],
)
def test_auditor_input_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        audit_epsilon_scores(np.zeros(10), np.ones(10), threshold=0.5, **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        audit_epsilon_scores(np.zeros(0), np.ones(10))
    with pytest.raises(ValueError, match="finite"):
        audit_mu_scores(np.array([np.nan, 0.0]), np.ones(2))


# ------------------------------------------------------------------------------ AUD-1
def _laplace(k, d):
    return privacy.laplace_mechanism(k, d, sensitivity=1.0, epsilon=1.0, snap=False).value


def test_laplace_mechanism_audit(key):
    res = audit_epsilon(_laplace, 0.0, 1.0, key=key, num_trials=50_000, threshold=1.0, claimed_epsilon=1.0)
    assert 0.85 <= res.epsilon_lower <= 1.0  # clearly above 0: the audit can see


def test_snapped_laplace_audit(key, x64):
    def snapped(k, d):
        return privacy.laplace_mechanism(k, d, sensitivity=1.0, epsilon=1.0, bound=64.0).value

    cert = privacy.laplace_mechanism(key, 0.0, sensitivity=1.0, epsilon=1.0, bound=64.0).certificate
    res = audit_epsilon(snapped, 0.0, 1.0, key=key, num_trials=50_000, threshold=1.0, claimed_epsilon=cert.epsilon)
    assert res.epsilon_lower >= 0.85


@pytest.mark.parametrize("factor", [0.5, 0.8])
def test_laplace_audit_catches_too_little_noise(monkeypatch, key, factor):
    # Planted bug: the noise scale shrinks but the claim stays at ε = 1 (the certificate is not consulted).
    monkeypatch.setattr(mech, "laplace_scale", lambda s, e: factor * s / e)
    with pytest.raises(PrivacyAuditError, match=r"counts [\d,]+/50,000 \(d0\)"):
        audit_epsilon(_laplace, 0.0, 1.0, key=key, num_trials=50_000, threshold=1.0, claimed_epsilon=1.0)


# ------------------------------------------------------------------------------ AUD-2
def _ldp_laplace(k, x):
    return privacy.laplace_ldp(k, x[None, :], epsilon=1.0, bound=1.0).value[0]


def _min_coordinate(y):
    return jnp.min(y)  # the event "all coordinates beyond the boundary" attains the full ε


@pytest.mark.parametrize("scale", [1.0, 3.0])  # in-domain and out-of-domain neighbours
def test_laplace_ldp_audit(key, scale):
    d0, d1 = -scale * jnp.ones(2), scale * jnp.ones(2)
    res = audit_epsilon(
        _ldp_laplace, d0, d1, key=key, num_trials=50_000, statistic=_min_coordinate, threshold=1.0, claimed_epsilon=1.0
    )
    assert 0.85 <= res.epsilon_lower <= 1.0


def test_laplace_ldp_audit_catches_missing_clipping(monkeypatch, key):
    monkeypatch.setattr(mech, "clip_box", lambda x, bound: x)
    with pytest.raises(PrivacyAuditError):
        audit_epsilon(
            _ldp_laplace,
            -3 * jnp.ones(2),
            3 * jnp.ones(2),
            key=key,
            num_trials=50_000,
            statistic=_min_coordinate,
            threshold=1.0,
            claimed_epsilon=1.0,
        )


def test_laplace_ldp_audit_catches_a_wrong_sensitivity(monkeypatch, key):
    # Planted bug: sensitivity R·d instead of the box's L1 diameter 2R·d (noise halved).
    original = mech.laplace_scale
    monkeypatch.setattr(mech, "laplace_scale", lambda s, e: original(s / 2, e))
    cert = privacy.laplace_ldp(key, jnp.zeros((1, 2)), epsilon=1.0, bound=1.0).certificate
    assert cert.epsilon == pytest.approx(2.0)  # one source of truth: the certificate tells
    with pytest.raises(PrivacyAuditError):
        audit_epsilon(
            _ldp_laplace,
            -jnp.ones(2),
            jnp.ones(2),
            key=key,
            num_trials=50_000,
            statistic=_min_coordinate,
            threshold=1.0,
            claimed_epsilon=1.0,
        )


# ------------------------------------------------------------------------------ AUD-3
MU_CLAIM = 2 / privacy.calibrate_gaussian(1.0, 1e-5, 2.0)  # μ = Δ₂/σ with Δ₂ = 2R, R = 1 (≈ 0.2681)


def _ldp_gauss(k, x):
    return privacy.gaussian_ldp(k, x[None, :], epsilon=1.0, delta=1e-5, radius=1.0).value[0]


def _first(y):
    return y[0]


def test_gaussian_ldp_audit(key):
    d0, d1 = jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0])
    res = audit_mu(_ldp_gauss, d0, d1, key=key, num_trials=100_000, statistic=_first, claimed_mu=MU_CLAIM)
    assert 0.20 <= res.mu_lower <= MU_CLAIM
    eps = audit_epsilon(_ldp_gauss, d0, d1, key=key, num_trials=100_000, statistic=_first, delta=1e-5)
    assert eps.epsilon_lower <= 1.0


def test_gaussian_ldp_audit_catches_halved_noise(monkeypatch, key):
    original = mech.gaussian_scale
    monkeypatch.setattr(mech, "gaussian_scale", lambda s, e, d: 0.5 * original(s, e, d))
    d0, d1 = jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0])
    with pytest.raises(PrivacyAuditError, match="mu lower bound"):
        audit_mu(_ldp_gauss, d0, d1, key=key, num_trials=100_000, statistic=_first, claimed_mu=MU_CLAIM)
    with pytest.raises(PrivacyAuditError):
        audit_epsilon(
            _ldp_gauss,
            d0,
            d1,
            key=key,
            num_trials=100_000,
            statistic=_first,
            threshold="split",
            delta=1e-5,
            claimed_epsilon=1.0,
        )


def test_audit_is_jitted_and_fast_enough(key):
    # The default suite runs these audits; each must stay well under a second after compilation.
    import time

    audit_epsilon(_laplace, 0.0, 1.0, key=key, num_trials=1000, threshold=1.0)  # compile
    start = time.perf_counter()
    audit_epsilon(_laplace, 0.0, 1.0, key=jax.random.fold_in(key, 1), num_trials=50_000, threshold=1.0)
    assert time.perf_counter() - start < 5.0
