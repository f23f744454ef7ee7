"""The BlackJAX adapters, both directions: a BlackJAX kernel as a dpflows flow, a flow as a SamplingAlgorithm."""

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import BlackJAXFlow, Particles
from dpflows.potentials import GaussianPotential

TRACES = []


class CountingGaussian(eqx.Module):
    """½‖x − 1‖²; counts how often it is traced under jit (one per compilation of a step)."""

    def __call__(self, x):
        if isinstance(x, jax.core.Tracer):
            TRACES.append(1)
        return 0.5 * jnp.sum((x - 1.0) ** 2)


def test_mala_flow_equals_blackjax_chains_step_for_step(key):
    target = GaussianPotential(jnp.array([1.0, -1.0]), jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    flow = BlackJAXFlow(blackjax.mala, target, step_size=0.2)
    x0 = jr.normal(key, (4, 2))
    state, trace = dpflows.run(flow, flow.init(x0), key, 3)
    mala = blackjax.mala(lambda x: -target(x), 0.2)
    chains = jax.vmap(mala.init)(x0)
    for i in range(3):
        chains, _ = jax.vmap(mala.step)(jr.split(jr.fold_in(key, i), 4), chains)
    np.testing.assert_allclose(state.x, chains.position, rtol=1e-6, atol=1e-6)
    assert trace["acceptance_rate"].shape == (3,)
    np.testing.assert_allclose(state.t, 0.6, rtol=1e-6)


def test_mala_flow_samples_the_target(key):
    mean = jnp.array([1.0, -1.0])
    cov = jnp.array([[1.0, 0.5], [0.5, 2.0]])
    flow = BlackJAXFlow(blackjax.mala, GaussianPotential(mean, jnp.linalg.inv(cov)), step_size=0.3)
    state, trace = dpflows.run(flow, flow.init(jnp.zeros((2000, 2))), key, 300)
    np.testing.assert_allclose(state.mean(), mean, atol=0.1)
    np.testing.assert_allclose(state.covariance(), cov, atol=0.2)
    assert 0.3 < float(trace["acceptance_rate"][-1]) < 1.0


def test_step_size_sweep_of_a_blackjax_kernel_compiles_once(key):
    target = CountingGaussian()
    state = BlackJAXFlow(blackjax.mala, target, step_size=0.1).init(jnp.zeros((16, 2)))
    first, _ = dpflows.sweep([BlackJAXFlow(blackjax.mala, target, step_size=h) for h in (0.1, 0.2, 0.3)], state, key, 5)
    traced = len(TRACES)
    again, _ = dpflows.sweep([BlackJAXFlow(blackjax.mala, target, step_size=h) for h in (0.4, 0.5, 0.6)], state, key, 5)
    assert len(TRACES) == traced  # new step sizes, same compiled program
    alone, _ = dpflows.run(BlackJAXFlow(blackjax.mala, target, step_size=0.5), state, key, 5)
    np.testing.assert_allclose(again.x[1], alone.x, rtol=1e-5, atol=1e-6)


def test_a_dpflows_flow_runs_in_a_blackjax_style_loop(key):
    from dpflows.langevin import ULA

    flow = ULA(GaussianPotential(jnp.zeros(2), jnp.eye(2)), step_size=0.1)
    algo = dpflows.as_sampling_algorithm(flow)
    state = algo.init(jnp.ones((8, 2)))
    for i in range(3):
        state, _ = algo.step(jr.fold_in(key, i), state)
    ref, _ = dpflows.run(flow, flow.init(jnp.ones((8, 2))), key, 3)
    np.testing.assert_allclose(state.x, ref.x, rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="algorithm"):
        BlackJAXFlow("mala", CountingGaussian(), step_size=0.1)
    with pytest.raises(ValueError, match="step_size"):
        BlackJAXFlow(blackjax.mala, CountingGaussian(), step_size=-0.1)
    with pytest.raises(ValueError, match="init"):
        BlackJAXFlow(blackjax.mala, CountingGaussian(), step_size=0.1).step(
            Particles.uniform(jnp.zeros((2, 2))), jr.key(0)
        )
