"""Property-based fuzzing of the public boundary (issue 23).

Every public function or constructor of privacy (rdp, mechanisms, accounting, audit), potentials,
metrics, data, ot, particles and ULA + ``dpflows.run`` is called with arbitrary arguments (NaN, ±inf,
zero, negative, huge, wrong shapes, wrong types). The property: the call either returns a result
of the right shape holding no NaN (and no inf where none is allowed), which passes a cheap
correctness check, or raises ``ValueError``/``TypeError`` whose message names one of the arguments.
A NaN or inf that slips through silently is a failure.

The default run draws ~12 examples per property (``FUZZ``, derandomised so CI is deterministic);
``test_fuzz_deep`` (``-m slow``) draws 200 per property with fresh randomness.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dpflows
from dpflows import data, metrics, ot, privacy
from dpflows.langevin import ULA
from dpflows.particles import Particles, resample, resample_if, reweight
from dpflows.potentials import GaussianMixturePotential, GaussianPotential

# No shrinking in the default run: a failure is reported at once (shrinking is for -m slow hunts).
FUZZ = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
DEEP = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))

NAN, INF = math.nan, math.inf
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, 1e30, 1e300, -1e300, NAN, INF, -INF]


def numbers(lo: float = -10.0, hi: float = 10.0) -> st.SearchStrategy:
    """Mostly plain floats in [lo, hi], often a special value (NaN, ±inf, 0, tiny, huge)."""
    return st.one_of(st.sampled_from(SPECIAL), st.floats(lo, hi, allow_nan=False))


def odd_types() -> st.SearchStrategy:
    """Values of the wrong type for a scalar argument."""
    return st.sampled_from(["1.0", None, True, [1.0, 2.0], np.ones(2)])


def maybe_odd(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(strategy, strategy, strategy, odd_types())


def elements() -> st.SearchStrategy:
    return st.one_of(
        st.floats(-5.0, 5.0, allow_nan=False, width=32),
        st.floats(-5.0, 5.0, allow_nan=False, width=32),
        st.sampled_from([NAN, INF, -INF, 1e30, 0.0]),
    )


def clouds(n=(1, 3), d=(1, 2)) -> st.SearchStrategy:
    """(n, d) float32 arrays, usually finite, sometimes with NaN/inf/huge entries."""
    shapes = st.tuples(st.sampled_from(n), st.sampled_from(d))
    return shapes.flatmap(lambda s: hnp.arrays(np.float32, s, elements=elements()))


def vectors(n=(1, 2, 3)) -> st.SearchStrategy:
    return st.sampled_from(n).flatmap(lambda k: hnp.arrays(np.float32, (k,), elements=elements()))


def _floats_of(tree: Any) -> list[np.ndarray]:
    out = []
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, bool | int):
            continue
        if isinstance(leaf, float):
            out.append(np.asarray(leaf))
        elif hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            out.append(np.asarray(leaf))
    return out


def outcome(fn, names: tuple[str, ...], *, allow_inf: bool = False, errors: tuple[type, ...] = ()):
    """Call ``fn``: return its result if clean, ``None`` if it raised an error naming an argument.

    ``errors`` adds accepted error types (``dpflows.FlowError`` for a run that diverged).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a RuntimeWarning (overflow, invalid value) is a finding too
            result = fn()
    except (ValueError, TypeError, *errors) as err:
        message = str(err)
        if not any(name in message for name in names):
            raise AssertionError(f"error names none of {names}: {type(err).__name__}: {message}") from err
        return None
    for arr in _floats_of(result):
        assert not np.any(np.isnan(arr)), f"NaN returned silently: {result!r}"
        if not allow_inf:
            assert np.all(np.isfinite(arr)), f"inf returned silently: {result!r}"
    return result


# ------------------------------------------------------------------------------------ properties
@dataclass(frozen=True)
class Property:
    name: str
    strategies: dict[str, st.SearchStrategy]
    body: Any
    known_bug: str | None = None


PROPERTIES: list[Property] = []


def prop(known_bug: str | None = None, **strategies):
    """Register a property. ``known_bug`` marks one that fails today in a module this suite does not
    own: a strict xfail, so the test starts failing (and the marker must go) once the bug is fixed."""

    def deco(body):
        PROPERTIES.append(Property(body.__name__, strategies, body, known_bug))
        return body

    return deco


KEY = jr.key(0)
ORDERS = jnp.asarray([1.5, 2.0, 8.0, 64.0])


@prop(
    sigma=maybe_odd(numbers(0.0, 10.0)),
    q=maybe_odd(numbers(0.0, 1.0)),
    steps=maybe_odd(st.one_of(st.integers(-5, 10_000), numbers(0.0, 1e4))),
    delta=maybe_odd(numbers(0.0, 1e-3)),
)
def rdp_epsilon(sigma, q, steps, delta):
    names = ("noise_multiplier", "sampling_rate", "steps", "delta", "orders")
    eps = outcome(lambda: privacy.rdp_epsilon(sigma, q, steps, delta), names, allow_inf=True)
    if eps is None:
        return
    assert eps.shape == ()
    assert float(eps) >= 0
    if q == 0 or steps == 0:
        assert float(eps) == 0.0
    if math.isinf(float(eps)):  # ∞ only where it is the documented answer: no noise, or δ = 0
        assert sigma == 0 or delta == 0


@prop(
    orders=st.one_of(st.just(np.asarray([2.0, 4.0, 32.0], np.float32)), vectors()),
    rdp=vectors(),
    delta=maybe_odd(numbers(0.0, 1e-3)),
)
def epsilon_from_rdp(orders, rdp, delta):
    eps = outcome(
        lambda: privacy.epsilon_from_rdp(jnp.asarray(orders), jnp.asarray(rdp), delta),
        ("orders", "rdp", "delta"),
        allow_inf=True,
    )
    if eps is not None:
        assert eps.shape == ()
        assert float(eps) >= 0


@prop(
    which=st.sampled_from(["gaussian", "laplace", "pure", "bounded_range"]),
    value=maybe_odd(numbers(0.0, 5.0)),
    orders=st.one_of(st.just(np.asarray(ORDERS)), vectors()),
)
def rdp_curves(which, value, orders):
    fn = {
        "gaussian": privacy.rdp_gaussian,
        "laplace": privacy.rdp_laplace,
        "pure": privacy.rdp_pure,
        "bounded_range": privacy.rdp_bounded_range,
    }[which]
    curve = outcome(
        lambda: fn(jnp.asarray(orders), value), ("orders", "noise_multiplier", "pure_epsilon"), allow_inf=True
    )
    if curve is None:
        return
    assert curve.shape == np.shape(orders)
    assert bool(jnp.all(curve >= -1e-6))
    if which != "gaussian" or value > 1e-15:  # α/(2σ²) beyond float32 for smaller σ: ∞ is the answer
        assert bool(jnp.all(jnp.isfinite(curve)))


@prop(
    q=maybe_odd(numbers(0.0, 1.0)),
    sigma=maybe_odd(numbers(0.0, 10.0)),
    orders=st.one_of(st.just(np.asarray([2.0, 3.0, 16.0])), vectors()),
)
def rdp_subsampled_gaussian(q, sigma, orders):
    curve = outcome(
        lambda: privacy.rdp_subsampled_gaussian(jnp.asarray(orders), q, sigma, max_order=64),
        ("orders", "sampling_rate", "noise_multiplier"),
        allow_inf=True,
    )
    if curve is not None:
        assert curve.shape == np.shape(orders)
        assert bool(jnp.all(curve >= 0))
        if sigma > 1e-15:
            assert bool(jnp.all(jnp.isfinite(curve)))


@prop(
    kind=st.sampled_from(["laplace", "gaussian"]),
    value=st.one_of(vectors(), numbers()),
    sensitivity=maybe_odd(numbers(0.0, 10.0)),
    epsilon=maybe_odd(numbers(0.0, 10.0)),
    delta=maybe_odd(numbers(0.0, 1.0)),
)
def central_mechanisms(kind, value, sensitivity, epsilon, delta):
    if kind == "laplace":
        call = lambda: privacy.laplace_mechanism(KEY, value, sensitivity=sensitivity, epsilon=epsilon, snap=False)  # noqa: E731
    else:
        call = lambda: privacy.gaussian_mechanism(  # noqa: E731
            KEY, value, sensitivity=sensitivity, epsilon=epsilon, delta=delta, snap=False
        )
    release = outcome(call, ("key", "value", "sensitivity", "epsilon", "delta", "noise scale"))
    if release is None:
        return
    assert release.value.shape == np.shape(value)
    assert release.certificate.covers == "mechanism"
    assert math.isclose(release.certificate.epsilon, float(epsilon), rel_tol=1e-6)


@prop(
    kind=st.sampled_from(["laplace", "gaussian"]),
    x=clouds(),
    epsilon=maybe_odd(numbers(0.0, 10.0)),
    delta=maybe_odd(numbers(0.0, 1.0)),
    size=maybe_odd(numbers(0.0, 10.0)),
)
def local_mechanisms(kind, x, epsilon, delta, size):
    if kind == "laplace":
        call = lambda: privacy.laplace_ldp(KEY, x, epsilon=epsilon, bound=size)  # noqa: E731
    else:
        call = lambda: privacy.gaussian_ldp(KEY, x, epsilon=epsilon, delta=delta, radius=size)  # noqa: E731
    release = outcome(call, ("key", "x", "epsilon", "delta", "bound", "radius", "noise scale", "sensitivity"))
    if release is not None:
        assert release.value.shape == x.shape


@prop(utilities=vectors(), sensitivity=maybe_odd(numbers(0.0, 10.0)), epsilon=maybe_odd(numbers(0.0, 10.0)))
def exponential_mechanism(utilities, sensitivity, epsilon):
    release = outcome(
        lambda: privacy.exponential_mechanism(KEY, utilities, sensitivity=sensitivity, epsilon=epsilon),
        ("utilities", "sensitivity", "epsilon"),
    )
    if release is not None:
        assert 0 <= int(release.value) < utilities.shape[0]


@prop(
    scale=maybe_odd(numbers(0.0, 10.0)),
    sensitivity=maybe_odd(numbers(0.0, 10.0)),
    epsilon=maybe_odd(numbers(0.0, 10.0)),
    delta=maybe_odd(numbers(0.0, 1.0)),
)
def scales(scale, sensitivity, epsilon, delta):
    b = outcome(lambda: privacy.laplace_scale(sensitivity, epsilon), ("sensitivity", "epsilon"))
    if b is not None:
        assert b > 0
    s = outcome(lambda: privacy.gaussian_scale(sensitivity, epsilon, delta), ("sensitivity", "epsilon", "delta"))
    if s is not None:
        assert s > 0
    g = outcome(
        lambda: privacy.snapping_guarantee(
            "laplace", scale=scale, grid=1.0, bound=1e3, sensitivity=sensitivity, epsilon=epsilon
        ),
        ("scale", "grid", "bound", "sensitivity", "epsilon", "delta"),
    )
    if g is not None:
        assert g["epsilon"] >= float(epsilon)


@prop(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["gaussian", "laplace", "pure", "exponential"]),
            maybe_odd(numbers(0.0, 10.0)),
            st.one_of(st.integers(-2, 50), odd_types()),
            st.one_of(st.none(), numbers(0.0, 1.0)),
        ),
        min_size=1,
        max_size=3,
    ),
    delta=maybe_odd(numbers(0.0, 1e-3)),
)
def ledger(entries, delta):
    def build():
        led = privacy.PrivacyLedger()
        for kind, value, count, q in entries:
            if kind == "gaussian":
                led.add_gaussian(value, count, q)
            elif kind == "laplace":
                led.add_laplace(value, count)
            elif kind == "pure":
                led.add_pure(value, count)
            else:
                led.add_exponential(value, count)
        return led.epsilon(delta, "rdp")

    eps = outcome(build, ("noise_multiplier", "epsilon", "count", "sampling_rate", "delta"), allow_inf=True)
    if eps is not None:
        assert eps >= 0


@prop(count=st.one_of(st.integers(-2, 30), odd_types()), n=st.one_of(st.integers(-2, 30), odd_types()), alpha=numbers())
def clopper_pearson(count, n, alpha):
    bounds = outcome(lambda: privacy.clopper_pearson(count, n, alpha), ("count", "n", "alpha"))
    if bounds is not None:
        lo, hi = bounds
        assert 0.0 <= lo <= count / n <= hi <= 1.0


@prop(
    s0=vectors((1, 5, 60)),
    s1=vectors((1, 5, 60)),
    threshold=st.one_of(st.just("split"), numbers(), odd_types()),
    alpha=numbers(0.0, 0.5),
)
def audit_scores(s0, s1, threshold, alpha):
    result = outcome(
        lambda: privacy.audit_epsilon_scores(s0, s1, threshold=threshold, alpha=alpha),
        ("scores", "threshold", "alpha", "delta", "selection_fraction"),
    )
    if result is not None:
        assert result.epsilon_lower >= 0


@prop(mean=vectors((1, 2)), scale=numbers(0.0, 4.0), off=numbers(), x=vectors((1, 2)))
def gaussian_potential(mean, scale, off, x):
    d = mean.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):  # the test's own float32 cast of 1e300 is inf
        eye = np.eye(d, dtype=np.float32)
        precision = eye * np.float32(scale) + np.float32(off) * (1 - eye)

    def build():
        return GaussianPotential(mean, precision)

    V = outcome(build, ("mean", "precision"))
    if V is None:
        return
    assert V.dim == d
    assert float(V(jnp.asarray(mean))) == 0.0
    if x.shape == mean.shape and np.all(np.abs(x) < 1e3) and np.all(np.abs(mean) < 1e3):
        value = float(V(jnp.asarray(x)))
        assert value >= -1e-3 * (1 + abs(value))
        assert bool(jnp.all(jnp.isfinite(V.grad(jnp.asarray(x)))))


@prop(means=clouds((1, 2, 3), (1, 2)), weight0=numbers(0.0, 1.0), scales=numbers(0.0, 3.0))
def mixture_potential(means, weight0, scales):
    k = means.shape[0]
    weights = np.full((k,), 1.0 / k, np.float32)
    with np.errstate(over="ignore"):  # a weight beyond float32 becomes inf: the constructor must refuse it
        weights[0] = np.float32(weight0) if k > 1 else weights[0]
    V = outcome(lambda: GaussianMixturePotential(means, weights, scales), ("means", "weights", "scales"))
    if V is not None and np.all(np.abs(means) < 1e3) and 1e-3 < scales < 1e3:
        assert bool(jnp.isfinite(V(jnp.zeros(means.shape[1]))))


@prop(
    which=st.sampled_from(["energy", "mmd", "w2", "frechet", "coverage", "nn"]),
    x=clouds((1, 3)),
    y=clouds((1, 3)),
    knob=maybe_odd(numbers(0.0, 2.0)),
)
def sample_metrics(which, x, y, knob):
    calls = {
        "energy": lambda: metrics.energy_distance(x, y),
        "mmd": lambda: metrics.mmd(x, y, bandwidths=(knob,)),
        "w2": lambda: metrics.wasserstein2(x, y),
        "frechet": lambda: metrics.frechet_distance(x, y),
        "coverage": lambda: metrics.mode_coverage(x, y, radius=knob),
        "nn": lambda: metrics.nearest_neighbour_distances(x, y),
    }
    names = ("x", "y", "bandwidths", "radius", "centers", "reference", "min_share", "mmd", "wasserstein2", "frechet")
    value = outcome(calls[which], names)
    if value is None:
        return
    if which in ("energy", "w2", "frechet"):
        assert value >= -1e-6 * (1 + abs(value))
    if which == "coverage":
        assert all(0.0 <= v <= 1.0 for v in value.values())
    if which == "nn":
        assert value.shape == (x.shape[0],)
        assert np.all(value >= 0)


@prop(mean0=vectors((1, 2)), mean1=vectors((1, 2)), s0=numbers(0.0, 3.0), s1=numbers(0.0, 3.0))
def gaussian_kl(mean0, mean1, s0, s1):
    d = mean0.shape[0]

    def kl():
        with np.errstate(over="ignore", invalid="ignore"):
            c0, c1 = np.float32(s0) * np.eye(d, dtype=np.float32), np.float32(s1) * np.eye(d, dtype=np.float32)
        return metrics.gaussian_kl(jnp.asarray(mean0), jnp.asarray(c0), jnp.asarray(mean1), jnp.asarray(c1))

    value = outcome(kl, ("mean0", "mean1", "cov0", "cov1"))
    if value is not None and np.all(np.abs(mean0) < 1e3) and np.all(np.abs(mean1) < 1e3):
        assert float(value) >= -1e-4


@prop(
    which=st.sampled_from(["eight", "moons", "twenty_five", "swiss", "centers8", "centers25"]),
    n=st.one_of(st.integers(-1, 20), odd_types()),
    a=maybe_odd(numbers(0.0, 2.0)),
    b=maybe_odd(numbers(0.0, 2.0)),
)
def datasets(which, n, a, b):
    calls = {
        "eight": lambda: data.eight_gaussians(KEY, n, radius=a, std=b),
        "moons": lambda: data.two_moons(KEY, n, noise=b, scale=a),
        "twenty_five": lambda: data.twenty_five_gaussians(KEY, n, spacing=a, std=b),
        "swiss": lambda: data.swiss_roll(KEY, n, noise=b, scale=a),
        "centers8": lambda: data.eight_gaussians_centers(a),
        "centers25": lambda: data.twenty_five_gaussians_centers(a),
    }
    out = outcome(calls[which], ("n", "radius", "std", "noise", "scale", "spacing", "key"))
    if out is None:
        return
    if which.startswith("centers"):
        assert out.shape == ((8, 2) if which == "centers8" else (25, 2))
    else:
        points, labels = out
        assert points.shape == (n, 2)
        assert labels.shape == (n,)


@prop(
    x=clouds((1, 3), (1, 2)),
    y=clouds((1, 3), (1, 2)),
    epsilon=maybe_odd(numbers(0.0, 2.0)),
    divergence=st.booleans(),
)
def entropic_transport(x, y, epsilon, divergence):
    fn = ot.sinkhorn_divergence if divergence else ot.entropic_ot
    result = outcome(lambda: fn(x, y, epsilon=epsilon, max_iterations=200, warn=False), ("x", "y", "epsilon", "a", "b"))
    if result is None:
        return
    value = result.value if divergence else result.cost
    assert value.shape == ()
    if divergence:
        assert float(value) >= 0


@prop(x=clouds((1, 3), (2,)), y=clouds((1, 3), (2,)), directions=clouds((1, 2), (2,)))
def sliced(x, y, directions):
    value = outcome(lambda: ot.sliced_wasserstein(x, y, directions=directions), ("x", "y", "directions", "a", "b"))
    if value is not None:
        assert value.shape == ()
        assert float(value) >= 0


@prop(
    u=vectors((1, 3)),
    v=vectors((1, 3)),
    num_quantiles=st.one_of(st.none(), st.integers(-1, 4)),
)
def quantile_map(u, v, num_quantiles):
    out = outcome(lambda: ot.quantile_map(u, v, num_quantiles=num_quantiles), ("u", "v", "num_quantiles"))
    if out is not None:
        assert out.shape == u.shape
        assert float(jnp.min(out)) >= float(np.min(v)) - 1e-4 * (1 + abs(float(np.min(v))))
        assert float(jnp.max(out)) <= float(np.max(v)) + 1e-4 * (1 + abs(float(np.max(v))))


@prop(x=clouds((1, 3), (1, 2)), logw=st.one_of(st.none(), vectors((1, 3))), normalise=st.booleans())
def particles_create_resample(x, logw, normalise):
    p = outcome(lambda: Particles.create(x, logw, normalise=normalise), ("x", "logw", "v"))
    if p is None:
        return
    assert p.x.shape == x.shape
    assert float(jnp.sum(p.weights)) == pytest.approx(1.0, abs=1e-4)
    r = outcome(lambda: resample(KEY, p), ("key", "particles"))
    assert r is not None
    assert r.x.shape == x.shape
    assert float(jnp.sum(r.weights)) == pytest.approx(1.0, abs=1e-4)


@prop(
    n=st.sampled_from([1, 3]),
    potential=vectors((1, 3)),
    rate=maybe_odd(numbers(0.0, 2.0)),
    threshold=maybe_odd(numbers(0.0, 1.0)),
)
def particles_reweight_resample_if(n, potential, rate, threshold):
    p = Particles.uniform(jnp.zeros((n, 2)))
    w = outcome(lambda: reweight(p, jnp.asarray(potential), rate), ("potential", "rate"))
    if w is not None:
        assert w.x.shape == (n, 2)
        assert float(jnp.sum(w.weights)) == pytest.approx(1.0, abs=1e-4)
    q = outcome(lambda: resample_if(KEY, p, threshold), ("threshold",))
    if q is not None:
        assert q[0].x.shape == (n, 2)
        assert q[1].shape == ()


def _ula_run(x, step_size, num_steps):
    V = GaussianPotential(jnp.zeros(2), jnp.eye(2))

    def go():
        flow = ULA(V, step_size=step_size)
        return dpflows.run(flow, flow.init(x), KEY, num_steps)

    # A diverged run is a FlowError whose message names step_size: that is a clean refusal too.
    out = outcome(go, ("step_size", "x", "num_steps", "state"), errors=(dpflows.FlowError,))
    if out is not None:
        final, _ = out
        assert final.x.shape == x.shape


@prop(x=clouds((1, 3), (2,)), step_size=numbers(0.0, 0.5), num_steps=st.one_of(st.integers(-1, 5), odd_types()))
def ula_run(x, step_size, num_steps):
    _ula_run(x, step_size, num_steps)


@prop(
    known_bug="langevin.ULA's converter runs before __check_init__: ULA(V, step_size=None) raises "
    "'None is not a valid value for jnp.array', ULA(V, step_size='1.0') a JAX TypeError; neither names step_size",
    step_size=st.sampled_from([None, "1.0"]),
)
def ula_odd_step_size(step_size):
    _ula_run(np.zeros((2, 2), np.float32), step_size, 2)


# ---------------------------------------------------------------------------------------- tests
def _check(p: Property, profile: settings) -> None:
    profile(given(**p.strategies)(p.body))()


def _params():
    for p in PROPERTIES:
        marks = [pytest.mark.xfail(reason=p.known_bug, strict=True)] if p.known_bug else []
        yield pytest.param(p, id=p.name, marks=marks)


@pytest.mark.parametrize("p", list(_params()))
def test_fuzz(p):
    _check(p, FUZZ)


@pytest.mark.slow
@pytest.mark.parametrize("p", list(_params()))
def test_fuzz_deep(p):
    _check(p, DEEP)
