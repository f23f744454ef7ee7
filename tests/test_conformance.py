"""Every public flow, at tiny size, against the interface contract (STYLE.md §8).

A new flow earns all of these by adding one line to ``helpers.FLOWS``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import AbstractFlow, Particles
from helpers import FLOWS, max_abs_diff

NUM_STEPS = 5
cases = pytest.mark.parametrize("case", FLOWS, ids=[c.name for c in FLOWS])


@cases
def test_init_and_step_types_and_shapes(case, key):
    flow = case.make()
    assert isinstance(flow, AbstractFlow)
    state = flow.init(case.positions(key))
    assert isinstance(state, Particles)
    assert state.x.shape == (case.num_particles, *case.event_shape)
    new, info = flow.step(state, jr.fold_in(key, 1))
    assert isinstance(new, Particles)
    assert isinstance(info, dict)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state) or new.aux is not None
    assert new.x.shape == state.x.shape
    assert new.logw.shape == state.logw.shape
    assert new.t.shape == ()
    assert all(isinstance(v, jax.Array) for v in info.values())
    _, info2 = flow.step(new, jr.fold_in(key, 2))
    assert set(info2) == set(info)  # same keys at every step
    assert float(new.t) > float(state.t)


@cases
def test_unused_fields_pass_through(case, key):
    flow = case.make()
    state = flow.init(case.positions(key))
    marker = {"tag": jnp.arange(3.0)}
    if not case.owns_aux:
        state = eqx.tree_at(lambda s: s.aux, state, marker, is_leaf=lambda x: x is None)
    new, _ = flow.step(state, key)
    # First-order flows keep momenta; weight-free flows keep weights; aux is untouched by flows
    # that do not own it.
    if not jnp.any(state.v):
        assert bool(jnp.all(new.v == state.v)) or case.name.startswith("muon")
    if case.owns_aux:  # its carry keeps its structure
        assert jax.tree_util.tree_structure(new.aux) == jax.tree_util.tree_structure(state.aux)
    else:
        assert new.aux is marker or eqx.tree_equal(new.aux, marker)
    if not case.name.startswith(("shk", "muon", "hopfield_sinkhorn")):  # flows without a weight update keep the weights
        assert bool(jnp.all(new.logw == state.logw))


@cases
def test_jit_matches_eager(case, key):
    flow = case.make()
    state = flow.init(case.positions(key))
    eager, _ = flow.step(state, key)
    jitted, _ = eqx.filter_jit(flow.step)(state, key)
    assert max_abs_diff(eager.x, jitted.x) < 1e-5


@cases
def test_vmap_over_keys_matches_loop(case, key):
    flow = case.make()
    state = flow.init(case.positions(key))
    keys = jr.split(key, 3)
    batched, _ = jax.vmap(lambda k: dpflows.run(flow, state, k, NUM_STEPS))(keys)
    for i, k in enumerate(keys):
        single, _ = dpflows.run(flow, state, k, NUM_STEPS)
        assert max_abs_diff(batched.x[i], single.x) < 1e-5


@cases
def test_stacked_sweep_matches_separate_runs(case, key):
    # ``case.hyper`` is the flow's privacy or accuracy knob: a sweep over it is one compiled program,
    # and a second grid of values reuses it.
    from dpflows.flow import _sweep_chunk

    flows = [case.make(), case.make(**case.hyper)]
    state = flows[0].init(case.positions(key))
    swept, trace = dpflows.sweep(flows, state, key, NUM_STEPS)
    compiled = _sweep_chunk._cached._cache_size()
    dpflows.sweep(flows[::-1], state, jr.fold_in(key, 3), NUM_STEPS)
    assert _sweep_chunk._cached._cache_size() == compiled
    assert bool(jnp.all(trace.ok))
    for i, flow in enumerate(flows):
        single, single_trace = dpflows.run(flow, state, key, NUM_STEPS)
        assert max_abs_diff(swept.x[i], single.x) < 1e-5
        for name in single_trace.info:
            np.testing.assert_allclose(trace.info[name][i], single_trace.info[name], rtol=1e-5, atol=1e-6)


@cases
def test_float32_agrees_with_float64_and_dtypes_are_kept(case, key):
    # jax.random draws different bits for float32 and float64 noise, so a stochastic flow can only
    # agree across precisions in law: with n = 4096 particles the two clouds' means must agree
    # within 5 standard errors (SE from the samples); dtypes must be preserved exactly.
    n = case.num_particles if case.fixed_size else 4096
    x = jr.normal(key, (n, *case.event_shape))
    flow32 = case.make()
    out32, _ = dpflows.run(flow32, flow32.init(x), key, NUM_STEPS)
    assert out32.x.dtype == jnp.float32
    assert out32.logw.dtype == jnp.float32
    assert out32.t.dtype == jnp.float32
    with jax.enable_x64(True):
        flow64 = case.make(dtype=jnp.float64)
        out64, _ = dpflows.run(flow64, flow64.init(jnp.asarray(x, jnp.float64)), jr.fold_in(key, 1), NUM_STEPS)
        assert out64.x.dtype == jnp.float64
        assert out64.logw.dtype == jnp.float64
        assert out64.t.dtype == jnp.float64
        m32 = np.asarray(out32.weights, np.float64) @ np.asarray(out32.x, np.float64).reshape(n, -1)
        m64 = np.asarray(out64.weights) @ np.asarray(out64.x).reshape(n, -1)
        se = np.sqrt(
            np.asarray(out32.x, np.float64).reshape(n, -1).var(0) / n + np.asarray(out64.x).reshape(n, -1).var(0) / n
        )
        assert np.all(np.abs(m32 - m64) < 5 * se), (m32, m64, se)
        np.testing.assert_allclose(float(out32.t), float(out64.t), rtol=1e-6)


@cases
def test_no_nan_over_a_run(case, key):
    flow = case.make()
    out, trace = dpflows.run(flow, flow.init(case.positions(key)), key, 50)
    assert bool(trace.ok)
    for leaf in jax.tree_util.tree_leaves((out, trace.info)):
        assert bool(jnp.all(jnp.isfinite(leaf)))


class _CountTraces(AbstractFlow):
    """Wrapper counting how often the inner step is traced (once per compilation)."""

    inner: AbstractFlow
    counter: list = eqx.field(static=True)

    def init(self, x, logw=None):
        return self.inner.init(x, logw)

    def step(self, state, key):
        self.counter.append(1)
        return self.inner.step(state, key)


@cases
def test_run_compiles_once_and_new_hyperparameters_do_not_recompile(case, key):
    counter: list = []
    flow_a = _CountTraces(case.make(), counter)
    state = flow_a.init(case.positions(key))
    dpflows.run(flow_a, state, key, NUM_STEPS)
    traced_once = len(counter)
    assert traced_once >= 1
    flow_b = _CountTraces(case.make(**case.hyper), counter)
    dpflows.run(flow_b, state, jr.fold_in(key, 7), NUM_STEPS)  # new values, new key
    assert len(counter) == traced_once
