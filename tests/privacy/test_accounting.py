"""ACC-3 … ACC-10: the ledger against dp-accounting reference values (RELIABILITY.md §1.2)."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpflows.privacy import PrivacyCertificate, PrivacyLedger, calibrate_noise_multiplier, gdp_delta
from dpflows.privacy._gaussian import gaussian_epsilon


def _exact_gdp_epsilon(sigma, k, delta):
    # k Gaussians with σ = one Gaussian with σ/√k: ε from the exact profile.
    return gaussian_epsilon(sigma / math.sqrt(k), delta)


TABLE_B = [  # σ, k, PLD, RDP at δ = 1e-5 (the σ = 1, k = 100 row is slow in PLD)
    (1, 1, 4.377178, 4.728507),
    (1, 10, 17.856587, 19.053598),
    (2, 1, 1.993091, 2.165716),
    (2, 100, 33.103732, 35.081754),
    (5, 10, 2.594383, 2.813653),
    (10, 100, 4.377178, 4.728507),
]


@pytest.mark.parametrize(("sigma", "k", "pld", "rdp"), TABLE_B)
def test_gaussian_composition_table_b(sigma, k, pld, rdp):
    ledger = PrivacyLedger().add_gaussian(sigma, count=k)
    got_pld = ledger.epsilon(1e-5, "pld")
    np.testing.assert_allclose(got_pld, pld, rtol=1e-6)
    np.testing.assert_allclose(ledger.epsilon(1e-5, "rdp"), rdp, rtol=1e-6)
    assert got_pld >= _exact_gdp_epsilon(sigma, k, 1e-5) - 1e-6  # pessimistic direction


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "delta", "pld", "rdp"),
    [(0.01, 1.0, 1000, 1e-5, 1.828244, 2.101367), (0.04, 1.5, 2250, 1e-5, 6.768787, 7.329335)],
)
def test_subsampled_gaussian_table_c(q, sigma, steps, delta, pld, rdp):
    ledger = PrivacyLedger().add_gaussian(sigma, steps, sampling_rate=q)
    np.testing.assert_allclose(ledger.epsilon(delta, "rdp"), rdp, rtol=1e-6)
    np.testing.assert_allclose(ledger.epsilon(delta, "pld"), pld, rtol=1e-5)


@pytest.mark.parametrize(("eps0", "k", "pld", "rdp"), [(1, 1, 0.999980, 1.002824), (0.1, 100, 4.220347, 4.532686)])
def test_laplace_table_d(eps0, k, pld, rdp):
    ledger = PrivacyLedger().add_laplace(1 / eps0, count=k)
    np.testing.assert_allclose(ledger.epsilon(1e-5, "pld"), pld, rtol=1e-6)
    # An all-pure ledger is also capped by Σε (valid at every δ): 1.0 < RDP's 1.002824.
    np.testing.assert_allclose(ledger.epsilon(1e-5, "rdp"), min(rdp, k * eps0), rtol=1e-6)
    assert ledger.epsilon(0.0) == pytest.approx(k * eps0)  # pure track


def test_closed_form_anchors():
    # ACC-4: dp-accounting's own anchors.
    d = PrivacyLedger().add_gaussian(math.sqrt(3), 3).delta(1.0)
    assert abs(d - 0.126936) < 1e-3
    assert d >= gdp_delta(1.0, 1.0) - 1e-12
    eps = PrivacyLedger().add_laplace(1.0, 3).add_laplace(2.0, 2).epsilon(1e-14)
    assert eps == pytest.approx(4.0, abs=1e-6)
    assert PrivacyLedger().add_pure(1.0).add_pure(2.0).epsilon(0.0) == 3.0
    assert abs(PrivacyLedger().add_gaussian(0.5, 3, sampling_rate=0.2).delta(1.0) - 0.15594) < 1e-3


def test_invariants():
    # ACC-5
    for d in (0.0, 1e-12, 1.0):
        assert PrivacyLedger().epsilon(d) == 0.0
    assert PrivacyLedger().add_gaussian(0.0).epsilon(1e-5) == math.inf
    assert PrivacyLedger().add_gaussian(1.0, 5, sampling_rate=0.0).epsilon(1e-5) == 0.0
    none = PrivacyCertificate(math.inf, 1.0, "no guarantee", "none")
    with pytest.raises(ValueError, match="covers='none'"):
        PrivacyLedger().add_certificate(none)
    ideal = PrivacyCertificate(0.5, 0.0, "a flow", "ideal flow")
    with pytest.raises(ValueError, match="only guarantees of released outputs"):
        PrivacyLedger().add_certificate(ideal)


@pytest.mark.parametrize("q", [0.0, 0.01, 0.1, 1.0])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 10.0])
def test_epsilon_delta_round_trip(q, sigma):
    ledger = PrivacyLedger().add_gaussian(sigma, 10, sampling_rate=q)
    for delta in (1e-3, 1e-5, 1e-9):
        eps = ledger.epsilon(delta, "rdp")
        if 0 < eps < math.inf:
            np.testing.assert_allclose(ledger.epsilon(ledger.delta(eps, "rdp"), "rdp"), eps, rtol=1e-6)


@settings(max_examples=15, deadline=None)
@given(sigma=st.floats(1.0, 5.0), steps=st.integers(1, 200), q=st.floats(0.001, 1.0), factor=st.floats(1.05, 3.0))
def test_epsilon_is_monotone(sigma, steps, q, factor):
    # σ ≥ 1: below it dp-accounting drops fractional orders whose series does not converge (see
    # test_dp_accounting_fractional_orders_are_dropped_at_small_sigma), which breaks monotonicity.
    eps = PrivacyLedger().add_gaussian(sigma, steps, q).epsilon(1e-5, "rdp")
    assert PrivacyLedger().add_gaussian(sigma * factor, steps, q).epsilon(1e-5, "rdp") <= eps + 1e-12
    assert PrivacyLedger().add_gaussian(sigma, steps + 10, q).epsilon(1e-5, "rdp") >= eps - 1e-12
    assert PrivacyLedger().add_gaussian(sigma, steps, min(1.0, q * factor)).epsilon(1e-5, "rdp") >= eps - 1e-12


def test_dp_accounting_fractional_orders_are_dropped_at_small_sigma():
    # A peer finding, pinned: at σ = 0.5, 23 steps, ε is *lower* at q = 0.53 than at q = 0.5 because
    # dp-accounting excludes more unconverged orders < 2 at q = 0.5. The bound stays valid (it is
    # conservative); the exact integer orders are monotone (71.47 → 74.08).
    a = PrivacyLedger().add_gaussian(0.5, 23, 0.5).epsilon(1e-5, "rdp")
    b = PrivacyLedger().add_gaussian(0.5, 23, 0.53125).epsilon(1e-5, "rdp")
    assert a > b
    ints = tuple(float(o) for o in (*range(2, 65), 128, 256, 512, 1024))
    ia = PrivacyLedger().add_gaussian(0.5, 23, 0.5).epsilon(1e-5, "rdp", orders=ints)
    ib = PrivacyLedger().add_gaussian(0.5, 23, 0.53125).epsilon(1e-5, "rdp", orders=ints)
    assert ia < ib


def test_calibration_table_f_rdp():
    # ACC-7 / 7b (RDP; the PLD calibration takes ~15 s and is in the slow test below).
    sigma = calibrate_noise_multiplier(8.0, 1e-5, 2000, 0.04, accountant="rdp")
    assert abs(sigma - 1.356240) < 1e-4
    eps = PrivacyLedger().add_gaussian(sigma, 2000, 0.04).epsilon(1e-5, "rdp")
    assert 8.0 - 1e-3 <= eps <= 8.0
    sigma = calibrate_noise_multiplier(1.0, 1e-5, 1000, 0.01, accountant="rdp")
    assert abs(sigma - 1.513122) < 1e-4


@pytest.mark.slow
def test_calibration_table_f_pld():
    sigma = calibrate_noise_multiplier(8.0, 1e-5, 2000, 0.04, accountant="pld")
    assert abs(sigma - 1.289968) < 1e-3
    assert PrivacyLedger().add_gaussian(sigma, 2000, 0.04).epsilon(1e-5, "pld") <= 8.0


@settings(max_examples=8, deadline=None)
@given(target=st.floats(0.5, 10.0), steps=st.integers(10, 1000), q=st.sampled_from([1e-3, 1e-2, 0.1, 1.0]))
def test_calibration_never_overshoots(target, steps, q):
    sigma = calibrate_noise_multiplier(target, 1e-5, steps, q, accountant="rdp", tol=1e-5)
    eps = PrivacyLedger().add_gaussian(sigma, steps, q).epsilon(1e-5, "rdp")
    assert eps <= target
    assert eps >= target - 1e-2  # tight (tol 1e-5 in σ)


def test_exponential_mechanism_composes_as_bounded_range():
    # ACC-8: 100 × EM(0.1) is 0.125-zCDP: ε(1e-5) = 2.165716 by RDP; generic pure DP would give ≥ 4.2.
    em = PrivacyLedger().add_exponential(0.1, 100)
    assert em.epsilon(1e-5, "rdp") == pytest.approx(2.165716, abs=1e-5)
    assert PrivacyLedger().add_pure(0.1, 100).epsilon(1e-5, "rdp") >= 4.2
    assert em.epsilon(0.0) == pytest.approx(10.0)


def test_json_round_trip_mid_run():
    # ACC-9: stop after 1250 of 2250 steps, serialise (JSON, no pickle), reload, finish.
    full = PrivacyLedger().add_gaussian(1.5, 2250, 0.04)
    part = PrivacyLedger().add_gaussian(1.5, 1250, 0.04)
    resumed = PrivacyLedger.from_dict(json.loads(part.to_json())).add_gaussian(1.5, 1000, 0.04)
    assert resumed.epsilon(1e-5, "rdp") == pytest.approx(full.epsilon(1e-5, "rdp"), rel=1e-12)
    with pytest.raises(ValueError, match="ledger state"):
        PrivacyLedger.from_dict({"entries": []})
    with pytest.raises(ValueError, match="malformed ledger entry"):
        PrivacyLedger.from_dict({"version": 1, "entries": [{"kind": "gaussian"}]})


def test_certificates_with_delta_compose_by_basic_composition():
    cert = PrivacyCertificate(0.5, 1e-6, "some (ε, δ) release", "mechanism")
    ledger = PrivacyLedger().add_certificate(cert, count=2).add_laplace(1.0)
    # δ budget 1e-5: 2e-6 goes to the certificates, the Laplace gets 8e-6; εs add.
    expected = PrivacyLedger().add_laplace(1.0).epsilon(8e-6) + 1.0
    assert ledger.epsilon(1e-5) == pytest.approx(expected)
    assert ledger.epsilon(1e-6) == math.inf


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: PrivacyLedger().add_gaussian(-1.0), "noise_multiplier"),
        (lambda: PrivacyLedger().add_gaussian(1.0, sampling_rate=1.5), "sampling_rate"),
        (lambda: PrivacyLedger().add_gaussian(1.0, count=0), "count must be >= 1"),
        (lambda: PrivacyLedger().add_pure(0.0), "epsilon"),
        (lambda: PrivacyLedger().add_pure(float("nan")), "epsilon"),
        (lambda: PrivacyLedger().epsilon(1.5), "delta"),
        (lambda: PrivacyLedger().epsilon(1e-5, accountant="prv"), "accountant must be one of"),
        (lambda: calibrate_noise_multiplier(1.0, 0.0, 10), "target_delta"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_snapped_certificates_compose_with_their_float_terms(x64):
    from dpflows import privacy

    cert = privacy.laplace_mechanism(None, 0.0, sensitivity=1.0, epsilon=1.0).certificate
    assert cert.float_safe
    assert cert.epsilon > 1.0
    assert cert.delta > 0
    ledger = PrivacyLedger().add_certificate(cert, count=3)
    assert ledger.entries[0].kind == "approx"
    assert ledger.epsilon(1e-5) == pytest.approx(3 * cert.epsilon)  # never the ideal 3.0
    assert ledger.epsilon(3 * cert.delta / 2) == math.inf  # its δ′ is charged, not dropped


def test_certificate_accepts_numpy_numbers():
    cert = PrivacyCertificate(np.float32(0.5), np.float64(1e-6), "m", "mechanism")
    assert isinstance(cert.epsilon, float)
    assert cert.epsilon == 0.5
