import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import FlowError, Particles
from dpflows.langevin import ULA
from helpers import NoiseFlow, gaussian_target


@pytest.fixture
def ula():
    return ULA(gaussian_target(), step_size=0.05)


@pytest.fixture
def state(key):
    return Particles.uniform(jr.normal(key, (64, 2)))


def test_chunking_is_bitwise_invariant(ula, state, key):
    # RUN-1: one scan of 1000 steps == 4 chunks of 250 == chunks under a progress bar, bitwise.
    whole, t_whole = dpflows.run(ula, state, key, 1000)
    chunked, t_chunked = dpflows.run(ula, state, key, 1000, chunk_size=250)
    barred, _ = dpflows.run(ula, state, key, 1000, progress=True)
    uneven, _ = dpflows.run(ula, state, key, 1000, chunk_size=300)  # 300, 300, 300, 100
    for other in (chunked, barred, uneven):
        assert bool(jnp.all(other.x == whole.x))
    assert bool(jnp.all(t_chunked["energy"] == t_whole["energy"]))
    assert t_whole["energy"].shape == (1000,)


def test_step_keys_are_fold_in_of_the_global_index(state, key):
    flow = NoiseFlow(a=0.0)
    _, trace = dpflows.run(flow, state, key, 7, chunk_size=3)
    for i in range(7):
        expected = jr.normal(jr.fold_in(key, i), state.x.shape)
        assert bool(jnp.all(trace["noise"][i] == expected))


def test_record_every_and_record_fn(ula, state, key):
    final, trace = dpflows.run(ula, state, key, 40, record_every=10)
    assert trace.states.x.shape == (4, 64, 2)
    np.testing.assert_array_equal(trace.record_steps, [10, 20, 30, 40])
    assert bool(jnp.all(trace.states.x[-1] == final.x))
    step10, _ = dpflows.run(ula, state, key, 10)
    assert bool(jnp.all(trace.states.x[0] == step10.x))
    _, trace_fn = dpflows.run(ula, state, key, 40, record_every=10, record=_mean_x)
    np.testing.assert_allclose(trace_fn.states, trace.states.x.mean(1), rtol=1e-6)


def _mean_x(s):
    return s.x.mean(0)


def test_zero_steps_returns_the_state(ula, state, key):
    final, trace = dpflows.run(ula, state, key, 0)
    assert bool(jnp.all(final.x == state.x))
    assert trace.info == {}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_steps": -1}, ValueError, "num_steps must be >= 0"),
        ({"num_steps": 2.5}, TypeError, "num_steps"),
        ({"num_steps": 10, "record_every": 3}, ValueError, "record_every must divide num_steps"),
        ({"num_steps": 10, "chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"num_steps": 10, "checkpoint_every": -2}, ValueError, "checkpoint_every must be >= 1"),
    ],
)
def test_run_argument_errors(ula, state, key, kwargs, error, match):
    with pytest.raises(error, match=match):
        dpflows.run(ula, state, key, **kwargs)


def test_run_type_errors(ula, state, key):
    # In tests jaxtyping checks annotations first; both it and our own checks name the argument.
    # (test_errors_without_typecheck pins our own messages, which is what users see.)
    with pytest.raises(TypeError, match="key"):
        dpflows.run(ula, state, 0, 5)
    with pytest.raises(TypeError, match="state"):
        dpflows.run(ula, state.x, key, 5)
    with pytest.raises(TypeError, match="flow"):
        dpflows.run(lambda s, k: (s, {}), state, key, 5)
    legacy = jr.PRNGKey(0)  # raw uint32 keys are accepted too
    dpflows.run(ula, state, legacy, 2)


def test_nan_state_is_refused_at_entry(ula, state, key):
    bad = eqx.tree_at(lambda s: s.x, state, state.x.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="state.x must be finite"):
        dpflows.run(ula, bad, key, 5)


def test_divergence_raises_or_is_reported(state, key):
    # h·λ_max > 2 makes ULA explode (|1 − hλ| > 1): positions overflow to inf, then NaN.
    diverging = ULA(gaussian_target(), step_size=3.0)
    with pytest.raises(FlowError, match="smaller step_size"):
        dpflows.run(diverging, state, key, 200)
    with pytest.warns(dpflows.FlowWarning, match="non-finite"):
        _, trace = dpflows.run(diverging, state, key, 200, throw=False)
    assert not bool(trace.ok)


def test_run_under_jit_and_vmap_with_progress(ula, state, key):
    direct, _ = dpflows.run(ula, state, key, 20)
    jitted = jax.jit(lambda s, k: dpflows.run(ula, s, k, 20)[0])(state, key)
    np.testing.assert_allclose(jitted.x, direct.x, rtol=1e-6, atol=1e-6)
    # A progress bar under vmap must not break the run (it is switched off inside transformations).
    many = jax.vmap(lambda k: dpflows.run(ula, state, k, 20, progress=True)[0].x)(jr.split(key, 2))
    assert many.shape == (2, 64, 2)
    with pytest.raises(ValueError, match="checkpoint cannot be used under jit/vmap"):
        jax.jit(lambda s: dpflows.run(ula, s, key, 5, checkpoint="x")[0])(state)


def test_throw_under_jit_is_an_error_if(state, key):
    diverging = ULA(gaussian_target(), step_size=3.0)
    fn = jax.jit(lambda s: dpflows.run(diverging, s, key, 200)[0].x)
    with pytest.raises(Exception, match="smaller step_size"):  # noqa: PT011 - equinox's runtime error type
        jax.block_until_ready(fn(state))


def test_blackjax_adapter(ula, state, key):
    algo = dpflows.as_sampling_algorithm(ula)
    s = algo.init(state.x)
    s2, info = algo.step(key, s)
    ref, _ = ula.step(s, key)
    assert bool(jnp.all(s2.x == ref.x))
    assert "energy" in info
