"""SHK hyper-parameters are leaves (an ε or bandwidth sweep compiles once), private_sample runs on
``dpflows.run`` with the old outputs, and a collapsed run (tiny KDE bandwidth) is reported, not ok."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import kde, privacy, shk
from dpflows.potentials import GaussianMixturePotential, GaussianPotential


def abs_loss(theta, centre):
    return jnp.sum(jnp.abs(theta - centre))


def zero_log_density(x):
    return jnp.zeros((), x.dtype)


# ------------------------------------------------------------------------------------- leaves
def test_epsilon_sweep_of_the_exponential_mechanism_compiles_once(key):
    traces = []

    def counting_loss(theta, centre):  # a Python side effect runs once per trace, never per call
        traces.append(1)
        return abs_loss(theta, centre)

    data = jnp.array([0.5])
    x0 = jr.uniform(key, (64, 1), minval=-2.0, maxval=2.0)

    def flows(grid):
        return [
            shk.SHKSampler(
                shk.exponential_mechanism(counting_loss, data, sensitivity=1.0, epsilon=e), step_size=0.5, transport=0.0
            )
            for e in grid
        ]

    state = flows([1.0])[0].init(x0, log_density0=zero_log_density)
    traces.clear()
    swept, trace = dpflows.sweep(flows([0.5, 1.0, 4.0]), state, key, 4)
    assert bool(jnp.all(trace.ok))
    first = len(traces)
    assert first >= 1
    dpflows.sweep(flows([0.1, 2.0, 8.0]), state, key, 4)  # new ε values, same shapes: no new trace
    assert len(traces) == first
    # Each member is its own run; larger ε concentrates the weights on the data point.
    for i, flow in enumerate(flows([0.5, 1.0, 4.0])):
        single, _ = dpflows.run(flow, state, key, 4)
        np.testing.assert_allclose(swept.logw[i], single.logw, rtol=1e-5, atol=1e-6)
    spread = [float(jnp.sum(jnp.exp(swept.logw[i]) * jnp.abs(swept.x[i, :, 0] - 0.5))) for i in range(3)]
    assert spread[0] > spread[1] > spread[2]


def test_fixed_and_silverman_bandwidths_stack_into_one_sweep(key):
    target = GaussianPotential(jnp.zeros(2), jnp.eye(2))
    flows = [shk.SHKSampler(target, step_size=0.05, bandwidth=b) for b in (0.3, 0.6, None)]
    x0 = jr.normal(key, (32, 2)) + 1.0
    swept, trace = dpflows.sweep(flows, flows[0].init(x0), key, 3)
    assert bool(jnp.all(trace.ok))
    np.testing.assert_allclose(trace.info["bandwidth"][:2, 0], [0.3, 0.6], rtol=1e-6)
    for i, flow in enumerate(flows):
        single, single_trace = dpflows.run(flow, flow.init(x0), key, 3)
        np.testing.assert_allclose(swept.x[i], single.x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(trace.info["bandwidth"][i], single_trace.info["bandwidth"], rtol=1e-6)
    # The NaN sentinel is Silverman's rule: without transport the first KDE sees x0 itself.
    still = shk.SHKSampler(target, step_size=0.05, transport=0.0)
    _, info = still.step(still.init(x0), key)
    np.testing.assert_allclose(info["bandwidth"], kde.silverman_bandwidth(x0), rtol=1e-6)


def test_potential_leaves_and_their_checks():
    pot = shk.exponential_mechanism(abs_loss, jnp.array([0.0]), sensitivity=2.0, epsilon=3.0)
    for name in ("epsilon", "sensitivity", "inverse_temperature"):
        assert isinstance(getattr(pot, name), jax.Array)
    assert float(pot.inverse_temperature) == pytest.approx(0.75)
    assert pot.certificate(time=1.0).epsilon == pytest.approx(-np.expm1(-1.0) * 3.0)
    stacked = shk.ExponentialMechanismPotential(
        abs_loss, pot.data, jnp.array([0.25, 0.5]), jnp.array([2.0, 2.0]), jnp.array([1.0, 2.0])
    )
    with pytest.raises(ValueError, match="stacked"):
        stacked.certificate(time=1.0)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="sensitivity"):
            shk.inverse_temperature(1.0, bad)  # was ZeroDivisionError (0) and γ = −0.5 (−1)
        with pytest.raises(ValueError, match="epsilon"):
            shk.inverse_temperature(bad, 1.0)


def test_reaction_epsilon_is_the_certificates_curve():
    ts = np.array([0.0, 0.5, 3.0])
    np.testing.assert_allclose(shk.reaction_epsilon(2.0, ts, reaction=1.5), -np.expm1(-1.5 * ts) * 2.0, rtol=1e-15)
    cert = shk.dp_certificate(sensitivity=1.0, inverse_temperature=1.0, time=0.5, reaction=1.5)
    assert cert.epsilon == shk.reaction_epsilon(2.0, 0.5, reaction=1.5)


# ------------------------------------------------------------------------------ private_sample
def test_private_sample_on_run_gives_the_split_key_scan_outputs():
    # Before it ran on dpflows.run, private_sample scanned flow.step over split(k_run, num_steps).
    potential = shk.exponential_mechanism(abs_loss, jnp.array([0.5]), sensitivity=1.0, epsilon=2.0)

    def initial(k, n):
        return jr.uniform(k, (n, 1), minval=-1, maxval=1)

    def reference(key):
        k_init, k_run, k_out = jr.split(key, 3)
        flow = shk.SHKSampler(potential, step_size=2.0 / 3, transport=0.0, reaction=1.0)
        state = flow.init(initial(k_init, 32), log_density0=zero_log_density)
        state, _ = jax.lax.scan(lambda s, k: flow.step(s, k), state, jr.split(k_run, 3))
        return shk.draw(k_out, state)

    for i in range(5):
        k = jr.key(100 + i)
        got = shk.private_sample(
            k, potential, initial=initial, log_density0=zero_log_density, num_particles=32, time=2.0, num_steps=3
        )
        np.testing.assert_allclose(np.asarray(got), np.asarray(reference(k)), rtol=1e-6)


# ------------------------------------------------------------------------------------ collapse
def _mixture():
    means = np.array([[4.0, 0.0], [-4.0, 0.0]], np.float32)
    return GaussianMixturePotential(means, np.array([0.9, 0.1], np.float32), 0.7)


def _split_start(key, target, n=200):
    k1, k2 = jr.split(key)
    idx = jr.randint(k1, (n,), 0, 2)
    return target.means[idx] + 0.7 * jr.normal(k2, (n, 2))


@pytest.mark.parametrize("scheme", ["weighted", "jump"])
def test_tiny_bandwidth_collapse_is_not_ok_and_diagnosed(key, scheme):
    target = _mixture()
    x0 = _split_start(key, target)
    collapsed = shk.SHKSampler(target, step_size=0.02, bandwidth=0.005, scheme=scheme)
    with pytest.warns(dpflows.FlowWarning, match=r"info\['healthy'\]"):  # the runtime's own warning
        final, trace = dpflows.run(collapsed, collapsed.init(x0), key, 60, throw=False)
    assert not bool(trace.info["healthy"][-1])
    assert float(trace.info["step_ess"][-1]) < shk.HEALTHY_STEP_ESS
    assert not bool(trace.ok)  # the runtime ANDs the last step's info["healthy"] into ok
    with pytest.warns(RuntimeWarning, match="bandwidth=None"):
        msg = collapsed.diagnose(trace)
    assert "collapsed" in msg
    with pytest.raises(dpflows.FlowError):
        dpflows.run(collapsed, collapsed.init(x0), key, 60)
    # The control: Silverman's rule on the same start is healthy at every step.
    good = shk.SHKSampler(target, step_size=0.02, scheme=scheme)
    _, trace = dpflows.run(good, good.init(x0), key, 60)
    assert bool(jnp.all(trace.info["healthy"]))
    assert bool(trace.ok)
    assert float(jnp.min(trace.info["step_ess"])) > 0.9
    assert good.diagnose(trace) is None


def test_distinct_counts_copies_once(key):
    flow = shk.SHKSampler(GaussianPotential(jnp.zeros(2), jnp.eye(2)), step_size=0.5, transport=0.0, ess_threshold=1.0)
    x0 = jr.normal(key, (50, 2)) * 3.0
    state, info = flow.step(flow.init(x0), key)
    assert bool(info["resampled"])
    assert int(info["distinct"]) == len(np.unique(np.asarray(state.x), axis=0)) < 50
    _, info = flow.step(flow.init(x0), key)
    _, no_resampling = shk.SHKSampler(flow.potential, step_size=0.5, transport=0.0, ess_threshold=0.0).step(
        flow.init(x0), key
    )
    assert int(no_resampling["distinct"]) == 50


def test_exact_mode_is_always_healthy(key):
    flow = shk.SHKSampler(GaussianPotential(jnp.zeros(1), jnp.eye(1)), step_size=5.0, transport=0.0)
    state = flow.init(jr.normal(key, (64, 1)) * 4.0, log_density0=lambda x: -0.5 * jnp.sum(x**2) / 16.0)
    _, trace = dpflows.run(flow, state, key, 2)  # one huge exact step concentrates the weights by design
    assert bool(jnp.all(trace.info["healthy"]))


# ------------------------------------------------------------------------------- errors, moves
def test_dimension_mismatch_names_the_shapes(key):
    flow = shk.SHKSampler(GaussianPotential(jnp.zeros(3), jnp.eye(3)), step_size=0.1)
    with pytest.raises(ValueError, match=r"\(8, 2\)"):
        dpflows.run(flow, flow.init(jnp.zeros((8, 2))), key, 1)
    exact = shk.SHKSampler(GaussianPotential(jnp.zeros(3), jnp.eye(3)), step_size=0.1, transport=0.0)
    with pytest.raises(ValueError, match=r"potential cannot be evaluated on one particle"):
        exact.step(exact.init(jnp.zeros((8, 2)), log_density0=jnp.zeros(8)), key)


def test_conversions_live_in_privacy():
    assert shk.delta_from_kl is privacy.delta_from_kl
    assert shk.kde_log_density is kde.kde_log_density
    assert shk.silverman_bandwidth is kde.silverman_bandwidth
    for kl, delta in [(0.05, 1e-3), (0.5, 1e-5)]:
        eps = privacy.epsilon_from_kl(kl, delta)
        assert privacy.delta_from_kl(kl, eps) <= delta < privacy.delta_from_kl(kl, eps * (1 - 1e-6) - 1e-9)
    eps, route = privacy.bounded_range_epsilon(0.2, 1e-5)
    assert eps <= 0.2
    assert route
    with pytest.raises(ValueError, match="delta"):
        privacy.bounded_range_epsilon(0.2, 1.0)
