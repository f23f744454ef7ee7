"""Every bad input to the public functions of privacy/, potentials, metrics and data raises an error
naming the argument (issue 23): regressions for inputs that used to return a number."""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest

from dpflows import data, metrics, privacy
from dpflows.potentials import GaussianMixturePotential, GaussianPotential

NAN, INF = math.nan, math.inf
KEY = jr.key(0)
ORD = jnp.asarray([2.0, 4.0, 8.0])
CLOUD = np.zeros((3, 2))

CASES = [
    # rdp_epsilon: each of these used to return a number (ε = 0, or NaN that passes `eps > budget`).
    ("steps=-100 gave eps=0", lambda: privacy.rdp_epsilon(1.0, 0.01, -100, 1e-5), "steps must be a whole number"),
    ("fractional steps", lambda: privacy.rdp_epsilon(1.0, 0.01, 2.5, 1e-5), "steps must be a whole number"),
    ("delta=2 gave eps=0", lambda: privacy.rdp_epsilon(1.0, 0.01, 100, 2.0), "delta must lie in [0.0, 1.0)"),
    ("delta=1", lambda: privacy.rdp_epsilon(1.0, 0.01, 100, 1.0), "delta must lie in"),
    ("q=1.5 treated as 1", lambda: privacy.rdp_epsilon(1.0, 1.5, 100, 1e-5), "sampling_rate must lie in"),
    ("negative q", lambda: privacy.rdp_epsilon(1.0, -0.1, 100, 1e-5), "sampling_rate must lie in"),
    ("NaN sigma", lambda: privacy.rdp_epsilon(NAN, 0.01, 100, 1e-5), "noise_multiplier must be finite"),
    ("negative sigma", lambda: privacy.rdp_epsilon(-1.0, 0.01, 100, 1e-5), "noise_multiplier must be finite"),
    ("NaN q", lambda: privacy.rdp_epsilon(1.0, NAN, 100, 1e-5), "sampling_rate must lie in"),
    ("NaN delta", lambda: privacy.rdp_epsilon(1.0, 0.01, 100, NAN), "delta must lie in"),
    ("NaN steps", lambda: privacy.rdp_epsilon(1.0, 0.01, NAN, 1e-5), "steps must be a whole number"),
    ("orders < 2", lambda: privacy.rdp_epsilon(1.0, 0.01, 10, 1e-5, orders=(1, 2)), "orders must be integers >= 2"),
    ("array steps", lambda: privacy.rdp_epsilon(1.0, 0.01, [1.0, 2.0], 1e-5), "steps must be a scalar"),
    ("rdp_gaussian sigma", lambda: privacy.rdp_gaussian(ORD, -1.0), "noise_multiplier must be finite"),
    ("rdp_gaussian orders", lambda: privacy.rdp_gaussian(jnp.asarray([0.5, NAN]), 1.0), "orders must be"),
    ("rdp_laplace eps", lambda: privacy.rdp_laplace(ORD, NAN), "pure_epsilon must be finite"),
    ("rdp_pure eps", lambda: privacy.rdp_pure(ORD, -0.1), "pure_epsilon must be finite"),
    ("rdp_bounded_range eps=0", lambda: privacy.rdp_bounded_range(ORD, 0.0), "pure_epsilon must be finite and > 0"),
    ("subsampled q", lambda: privacy.rdp_subsampled_gaussian(ORD, 1.5, 1.0), "sampling_rate must lie in"),
    ("subsampled sigma", lambda: privacy.rdp_subsampled_gaussian(ORD, 0.1, INF), "noise_multiplier must be finite"),
    ("epsilon_from_rdp NaN", lambda: privacy.epsilon_from_rdp(ORD, jnp.asarray([NAN, 1, 1]), 1e-5), "rdp must not"),
    ("epsilon_from_rdp <0", lambda: privacy.epsilon_from_rdp(ORD, jnp.asarray([-1.0, 1, 1]), 1e-5), "rdp must be >= 0"),
    ("epsilon_from_rdp shape", lambda: privacy.epsilon_from_rdp(ORD, jnp.ones(2), 1e-5), "rdp must have the shape"),
    ("epsilon_from_rdp delta", lambda: privacy.epsilon_from_rdp(ORD, jnp.ones(3), 1.5), "delta must lie in"),
    # mechanisms
    ("laplace_scale eps=0", lambda: privacy.laplace_scale(1.0, 0.0), "epsilon must be finite and > 0"),
    ("laplace_scale overflow", lambda: privacy.laplace_scale(1e300, 1e-300), "sensitivity / epsilon"),
    ("gaussian_scale delta", lambda: privacy.gaussian_scale(1.0, 1.0, 0.0), "delta must lie in (0.0, 1.0)"),
    ("gaussian_scale sens", lambda: privacy.gaussian_scale(NAN, 1.0, 1e-5), "sensitivity must be finite"),
    (
        "snapping kind",
        lambda: privacy.snapping_guarantee("cauchy", scale=1, grid=1, bound=1, sensitivity=1, epsilon=1),
        "kind must be one of",
    ),
    (
        "snapping dim",
        lambda: privacy.snapping_guarantee("laplace", scale=1, grid=1, bound=1, sensitivity=1, epsilon=1, dim=0),
        "dim must be >= 1",
    ),
    (
        "snapping scale",
        lambda: privacy.snapping_guarantee("laplace", scale=-1, grid=1, bound=1, sensitivity=1, epsilon=1),
        "scale must be finite and > 0",
    ),
    (
        "int key",
        lambda: privacy.laplace_mechanism(0, 1.0, sensitivity=1.0, epsilon=1.0, snap=False),
        "key must be a JAX PRNG key",
    ),
    ("laplace_ldp bound", lambda: privacy.laplace_ldp(KEY, CLOUD, epsilon=1.0, bound=1e308), "bound is too large"),
    ("laplace_ldp NaN x", lambda: privacy.laplace_ldp(KEY, CLOUD + NAN, epsilon=1.0, bound=1.0), "x must be finite"),
    (
        "exponential scale",
        lambda: privacy.exponential_mechanism(KEY, jnp.ones(3), sensitivity=1e300, epsilon=1e-300),
        "2 sensitivity / epsilon",
    ),
    # accounting
    (
        "ledger array sigma",
        lambda: privacy.PrivacyLedger().add_gaussian(np.ones(2)),
        "noise_multiplier must be a scalar",
    ),
    ("ledger NaN eps", lambda: privacy.PrivacyLedger().add_pure(NAN), "epsilon must be finite"),
    ("ledger count", lambda: privacy.PrivacyLedger().add_pure(1.0, count=0), "count must be >= 1"),
    ("ledger bool sigma", lambda: privacy.PrivacyLedger().add_laplace(True), "noise_multiplier must be"),
    ("ledger orders", lambda: privacy.PrivacyLedger().add_pure(1.0).epsilon(1e-5, "rdp", orders=(0.5,)), "orders"),
    (
        "ledger from_dict",
        lambda: privacy.PrivacyLedger.from_dict(
            {
                "version": 1,
                "entries": [
                    {
                        "kind": "gaussian",
                        "count": 1,
                        "noise_multiplier": -1.0,
                        "sampling_rate": None,
                        "epsilon": None,
                        "delta": None,
                        "label": "",
                    }
                ],
            }
        ),
        "noise_multiplier must be finite",
    ),
    ("calibrate q", lambda: privacy.calibrate_noise_multiplier(1.0, 1e-5, 10, 2.0), "sampling_rate must lie in"),
    ("calibrate accountant", lambda: privacy.calibrate_noise_multiplier(1.0, 1e-5, 10, accountant="x"), "accountant"),
    # audit
    ("clopper alpha", lambda: privacy.clopper_pearson(1, 10, 1.5), "alpha must lie in"),
    ("clopper float n", lambda: privacy.clopper_pearson(1, 10.5, 0.05), "n must be an int"),
    (
        "audit threshold",
        lambda: privacy.audit_epsilon_scores(np.zeros(100), np.ones(100), threshold="best"),
        "threshold must be 'split' or a number",
    ),
    (
        "audit tiny split",
        lambda: privacy.audit_mu_scores(np.zeros(3), np.ones(3), selection_fraction=0.1),
        "selection_fraction=0.1 leaves an empty selection",
    ),
    ("audit scores", lambda: privacy.audit_epsilon_scores(["a"], np.ones(3)), "scores0 must be a numeric array"),
    # potentials
    ("NaN mean", lambda: GaussianPotential(jnp.asarray([NAN, 0.0]), jnp.eye(2)), "mean must be finite"),
    ("inf precision", lambda: GaussianPotential(jnp.zeros(2), jnp.eye(2) * INF), "precision must be finite"),
    ("empty mean", lambda: GaussianPotential(jnp.zeros(0), jnp.eye(0)), "mean must have shape (d,) with d >= 1"),
    (
        "cov not PD",
        lambda: GaussianPotential.from_covariance(jnp.zeros(2), -jnp.eye(2)),
        "covariance must be symmetric",
    ),
    ("cov shape", lambda: GaussianPotential.from_covariance(jnp.zeros(2), jnp.ones(3)), "covariance must be a square"),
    (
        "mixture NaN means",
        lambda: GaussianMixturePotential(jnp.full((2, 1), NAN), jnp.asarray([0.5, 0.5]), 1.0),
        "means must be finite",
    ),
    (
        "mixture NaN weights",
        lambda: GaussianMixturePotential(jnp.zeros((2, 1)), jnp.asarray([NAN, 0.5]), 1.0),
        "weights must be finite",
    ),
    (
        "mixture scales shape",
        lambda: GaussianMixturePotential(jnp.zeros((2, 1)), jnp.asarray([0.5, 0.5]), jnp.ones(3)),
        "scales must be a scalar or have shape (2,)",
    ),
    # metrics
    ("huge cloud", lambda: metrics.energy_distance(np.full((3, 2), 1e200), CLOUD), "x must have entries of magnitude"),
    ("NaN centers", lambda: metrics.mode_coverage(CLOUD, CLOUD + NAN, radius=1.0), "centers must be finite"),
    ("min_share", lambda: metrics.mode_coverage(CLOUD, CLOUD, radius=1.0, min_share=-1.0), "min_share must be"),
    ("bandwidths", lambda: metrics.mmd(CLOUD, CLOUD, bandwidths=(0.1, 0.0)), "bandwidths must be finite and > 0"),
    ("chunk", lambda: metrics.nearest_neighbour_distances(CLOUD, CLOUD, chunk=0), "chunk must be >= 1"),
    ("reference", lambda: metrics.nearest_neighbour_distances(CLOUD, np.zeros((3, 3))), "x and reference must be"),
    (
        "kl cov not PD",
        lambda: metrics.gaussian_kl(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), -jnp.eye(2)),
        "cov1 must be symmetric positive definite",
    ),
    ("kl NaN mean", lambda: metrics.gaussian_kl(jnp.full(2, NAN), jnp.eye(2), jnp.zeros(2), jnp.eye(2)), "mean0 must"),
    ("fit weights", lambda: metrics.gaussian_fit(jnp.zeros((3, 2)), jnp.asarray([1.0, 1.0, -1.0])), "w must be"),
    # data
    ("data int key", lambda: data.eight_gaussians(0, 10), "key must be a JAX PRNG key"),
    ("data overflow", lambda: data.eight_gaussians(KEY, 10, std=3e38, radius=3e38), "overflow float32"),
    ("data array radius", lambda: data.eight_gaussians(KEY, 10, radius=np.ones(2)), "radius must be a scalar"),
    ("data huge std", lambda: data.eight_gaussians(KEY, 10, std=1e39), "std must be <= 3.403e+38"),
    ("data NaN noise", lambda: data.two_moons(KEY, 10, noise=NAN), "noise must be finite"),
    ("centers spacing", lambda: data.twenty_five_gaussians_centers(-1.0), "spacing must be finite and > 0"),
    ("swiss t", lambda: data.swiss_roll_curve(jnp.asarray([NAN])), "t must be finite"),
    ("swiss n", lambda: data.swiss_roll(KEY, 0), "n must be >= 1"),
]


@pytest.mark.parametrize(("fn", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(fn, message):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    if isinstance(info.value, jaxtyping.TypeCheckError):
        # The test-only annotation checker got there first; our own message is checked (as users
        # see it, without the checker) by test_messages_without_the_type_checker.
        return
    assert message in str(info.value)


def test_messages_without_the_type_checker():
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_boundary_validation import CASES
        bad = []
        for name, fn, message in CASES:
            try:
                fn()
                bad.append(f"{{name}}: no error")
            except (ValueError, TypeError) as err:
                if message not in str(err):
                    bad.append(f"{{name}}: {{type(err).__name__}}: {{str(err)[:300]}}")
        print("\\n".join(bad))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "", out.stdout


def test_rdp_epsilon_refuses_bad_traced_values_at_run_time():
    # Under jit the Python checks see tracers; eqx.error_if refuses instead of returning ε = 0.
    fn = jax.jit(lambda steps, delta: privacy.rdp_epsilon(1.0, 0.01, steps, delta))
    assert np.isfinite(float(fn(100.0, 1e-5)))
    for steps, delta in [(-100.0, 1e-5), (100.0, 2.0), (100.0, NAN)]:
        with pytest.raises(Exception, match="delta in \\[0, 1\\)"):  # noqa: PT011 - XLA wraps the error
            fn(steps, delta)


def test_valid_edge_values_still_work():
    assert float(privacy.rdp_epsilon(1.0, 0.0, 100, 1e-5)) == 0.0  # nothing sampled
    assert float(privacy.rdp_epsilon(1.0, 0.01, 0, 1e-5)) == 0.0  # no steps
    assert float(privacy.rdp_epsilon(0.0, 0.01, 10, 1e-5)) == math.inf  # no noise
    assert float(privacy.rdp_epsilon(1.0, 0.01, 100.0, 1e-5)) > 0  # float step counts are fine
    assert float(privacy.epsilon_from_rdp(ORD, jnp.full(3, INF), 1e-5)) == math.inf
    assert privacy.PrivacyLedger().add_gaussian(np.float32(2.0), count=3).epsilon(1e-5) > 0


def test_values_beyond_the_working_dtype_are_refused_not_cast_to_inf():
    # 1e300 becomes inf in float32 (with only a NumPy RuntimeWarning): refuse it, naming the argument.
    with pytest.raises(ValueError, match="pure_epsilon must be <= 3.403e\\+38"):
        privacy.rdp_laplace(ORD, 1e300)
    with pytest.raises(ValueError, match="noise_multiplier must be <= 3.403e\\+38"):
        privacy.rdp_epsilon(1e300, 0.01, 100, 1e-5)
    with jax.enable_x64(True):  # representable in float64: fine
        assert float(privacy.rdp_laplace(ORD.astype(jnp.float64), 1e300)[0]) == pytest.approx(1e300)
