"""ACC-1, ACC-2: the analytic Gaussian mechanism (RELIABILITY.md Table A)."""

import math

import numpy as np
import pytest
from dp_accounting import get_epsilon_gaussian, get_sigma_gaussian

from dpflows.privacy import calibrate_gaussian, gaussian_delta, gaussian_epsilon, gdp_delta

TABLE_A = [  # (ε, δ, analytic σ) from dp-accounting's get_sigma_gaussian
    (0.1, 1e-5, 30.7495661320),
    (0.5, 1e-5, 7.0318266756),
    (1, 1e-5, 3.7306316348),
    (2, 1e-5, 1.9938124456),
    (4, 1e-5, 1.0811618495),
    (8, 1e-5, 0.6002290722),
    (1, 1e-6, 4.2246788893),
    (1, 1e-3, 2.5746570186),
]


@pytest.mark.parametrize(("eps", "delta", "sigma"), TABLE_A)
def test_analytic_sigma_matches_table_a_and_its_equation(eps, delta, sigma):
    got = calibrate_gaussian(eps, delta)
    np.testing.assert_allclose(got, sigma, rtol=1e-8)
    np.testing.assert_allclose(got, get_sigma_gaussian(eps, delta), rtol=1e-8)
    # The defining equation δ(ε; σ) = δ, to 1e-9 in log δ.
    assert abs(math.log(gaussian_delta(got, eps)) - math.log(delta)) <= 1e-9
    # Sensitivity scales σ linearly.
    np.testing.assert_allclose(calibrate_gaussian(eps, delta, 3.0), 3 * got, rtol=1e-12)


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("delta", [1e-10, 1e-5, 0.1, 0.5])
def test_epsilon_inverts_sigma(sigma, delta):
    eps = gaussian_epsilon(sigma, delta)
    ref = get_epsilon_gaussian(sigma, delta)
    np.testing.assert_allclose(eps, ref, rtol=1e-6, atol=1e-9)
    if 1e-3 < eps < 1e3:
        np.testing.assert_allclose(calibrate_gaussian(eps, delta), sigma, rtol=1e-7)


def test_edge_cases():
    assert gaussian_epsilon(0.0, 1e-5) == math.inf
    assert gaussian_epsilon(1.0, 1.0) == 0.0
    assert gaussian_epsilon(1.0, 0.0) == math.inf
    np.testing.assert_allclose(gdp_delta(1.0, 1.0), 0.12693673750664, rtol=1e-10)  # closed form at μ = 1


def test_classical_formula_is_guarded():
    # ACC-2: only for ε < 1, and a check of why: at claimed ε = 10 the true ε is 10.394.
    with pytest.raises(ValueError, match="only valid for epsilon < 1"):
        calibrate_gaussian(10.0, 1e-5, method="classical")
    classical_sigma = math.sqrt(2 * math.log(1.25 / 1e-5)) / 10
    np.testing.assert_allclose(gaussian_epsilon(classical_sigma, 1e-5), 10.394, atol=1e-3)
    assert calibrate_gaussian(0.5, 1e-5, method="classical") > calibrate_gaussian(0.5, 1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0, "delta": 1e-5}, "epsilon must be finite and > 0"),
        ({"epsilon": -1.0, "delta": 1e-5}, "epsilon"),
        ({"epsilon": 1.0, "delta": 0.0}, r"delta must lie in \(0.0, 1.0\)"),
        ({"epsilon": 1.0, "delta": 1.0}, "delta"),
        ({"epsilon": 1.0, "delta": 1e-5, "sensitivity": -1.0}, "sensitivity"),
        ({"epsilon": float("nan"), "delta": 1e-5}, "epsilon"),
        ({"epsilon": 1.0, "delta": 1e-5, "method": "nope"}, "method must be one of"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibrate_gaussian(**kwargs)
