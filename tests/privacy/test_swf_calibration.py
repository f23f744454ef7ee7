"""Calibration of T (Poisson-subsampled) Gaussian releases (privacy/calibration.py), as the DP-SW mechanism uses it."""

import math

import dp_accounting as dpa
import pytest

from dpflows.privacy import (
    PrivacyLedger,
    calibrate_gaussian,
    calibrate_subsampled_gaussian,
    classical_gaussian_multiplier,
    subsampled_gaussian_epsilon,
    subsampled_gaussian_event,
)


def test_full_batch_releases_are_exact():
    # One release: the analytic Gaussian mechanism; T releases: one Gaussian of multiplier s/√T.
    s1 = calibrate_subsampled_gaussian(2.0, 1e-5)
    assert s1 == calibrate_gaussian(2.0, 1e-5)
    s9 = calibrate_subsampled_gaussian(2.0, 1e-5, 9)
    assert s9 == pytest.approx(3 * s1, rel=1e-12)
    assert subsampled_gaussian_epsilon(s9, 1e-5, 9) == pytest.approx(2.0, rel=1e-9)
    # dp-accounting's PLD on the same event agrees (to its default grid).
    pld = dpa.pld.PLDAccountant().compose(subsampled_gaussian_event(s9, 9)).get_epsilon(1e-5)
    assert pld == pytest.approx(2.0, rel=2e-3)


def test_subsampled_calibration_meets_the_target_and_is_nearly_the_smallest():
    s = calibrate_subsampled_gaussian(5.0, 5e-6, 6, 0.5)
    event = subsampled_gaussian_event(s, 6, 0.5)
    assert isinstance(event, dpa.SelfComposedDpEvent)
    pld = dpa.pld.PLDAccountant().compose(event).get_epsilon(5e-6)  # an independent route
    assert 4.9 < pld <= 5.0 + 1e-3
    ours = subsampled_gaussian_epsilon(s, 5e-6, 6, 0.5)
    assert ours <= 5.0 + 1e-3
    assert ours == pytest.approx(pld, rel=1e-3)
    rdp = subsampled_gaussian_epsilon(s, 5e-6, 6, 0.5, accountant="rdp")
    assert pld <= rdp < 1.25 * pld
    assert PrivacyLedger().add_gaussian(0.99 * s, 6, 0.5).epsilon(5e-6) > 5.0  # 1 % less noise fails


def test_epsilon_is_monotone_in_noise_releases_and_rate():
    def eps(s, t, q):
        return subsampled_gaussian_epsilon(s, 1e-5, t, q, accountant="rdp")

    assert eps(1.0, 50, 0.1) > eps(1.5, 50, 0.1) > eps(2.0, 50, 0.1)
    assert eps(1.0, 10, 0.1) < eps(1.0, 50, 0.1) < eps(1.0, 200, 0.1)
    assert eps(1.0, 50, 0.05) < eps(1.0, 50, 0.1) < eps(1.0, 50, 0.3)
    assert math.isinf(subsampled_gaussian_epsilon(0.0, 1e-5, 3))


def test_classical_multiplier_is_the_textbook_formula_and_larger_below_one():
    assert classical_gaussian_multiplier(0.5, 1e-5) == pytest.approx(math.sqrt(2 * math.log(1.25e5)) / 0.5)
    assert classical_gaussian_multiplier(0.5, 1e-5) > calibrate_gaussian(0.5, 1e-5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: calibrate_subsampled_gaussian(0.0, 1e-5), "epsilon"),
        (lambda: calibrate_subsampled_gaussian(1.0, 1.0), "delta"),
        (lambda: calibrate_subsampled_gaussian(1.0, 1e-5, 0), "num_releases"),
        (lambda: calibrate_subsampled_gaussian(1.0, 1e-5, 2, 0.0), "sampling_rate"),
        (lambda: subsampled_gaussian_epsilon(-1.0, 1e-5), "noise_multiplier"),
        (lambda: subsampled_gaussian_epsilon(1.0, 1e-5, accountant="moments"), "accountant"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
