"""The one loop: stopping rules (run, sweep, iterate), the training driver ``fit``, and ``stack``'s errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from jax.tree_util import Partial

import dpflows
from dpflows import AbstractFlow, Particles


class Contraction(AbstractFlow):
    """x ← rate·x with a tolerance: stops once max|x| < tol (a closed form to check against)."""

    rate: jax.Array = eqx.field(converter=jnp.asarray)
    tol: jax.Array = eqx.field(converter=jnp.asarray)

    def init(self, x, logw=None):
        return Particles.create(x, logw)

    def step(self, state, key):
        x = self.rate.astype(state.x.dtype) * state.x + 0.0 * jr.normal(key, state.x.shape, state.x.dtype)
        size = jnp.max(jnp.abs(x))
        return eqx.tree_at(lambda s: s.x, state, x), {"energy": size, "size": size}

    def terminate(self, state, info):
        return info["size"] < self.tol


def _stop_step(rate: float, tol: float) -> int:
    """First step n ≥ 1 with rateⁿ < tol (start at max|x| = 1)."""
    n = 1
    while rate**n >= tol:
        n += 1
    return n


@pytest.fixture
def state():
    return Particles.uniform(jnp.array([[1.0, -0.5], [0.25, 0.0]]))


def test_terminate_stops_a_run_at_the_first_step_and_freezes(state, key):
    flow = Contraction(rate=0.5, tol=1e-2)
    n = _stop_step(0.5, 1e-2)  # 7
    final, trace = dpflows.run(flow, state, key, 50)
    assert int(trace["active"].sum()) == n
    assert bool(jnp.all(trace["active"][:n]))
    assert not bool(jnp.any(trace["active"][n:]))
    np.testing.assert_allclose(final.x, state.x * 0.5**n, rtol=1e-6)
    # Skipped steps repeat the last step's diagnostics.
    np.testing.assert_allclose(trace["size"][n:], trace["size"][n - 1])
    assert trace["size"].shape == (50,)
    assert bool(trace.ok)


def test_terminate_is_chunking_and_resume_invariant(state, key, tmp_path):
    flow = Contraction(rate=0.8, tol=1e-3)
    whole, t_whole = dpflows.run(flow, state, key, 60, record_every=5)
    chunked, t_chunked = dpflows.run(flow, state, key, 60, record_every=5, chunk_size=10, progress=True)
    assert bool(jnp.all(whole.x == chunked.x))
    for name in ("size", "active"):
        assert bool(jnp.all(t_whole[name] == t_chunked[name]))
    assert bool(jnp.all(t_whole.states.x == t_chunked.states.x))
    n = _stop_step(0.8, 1e-3)  # 31: records after that all show the frozen state
    np.testing.assert_allclose(t_whole.states.x[-1], whole.x)
    np.testing.assert_allclose(t_whole.states.x[n // 5 - 1], state.x * 0.8 ** (5 * (n // 5)), rtol=1e-5)
    folder = tmp_path / "ck"
    resumed, t_res = dpflows.run(flow, state, key, 60, record_every=5, checkpoint=folder, checkpoint_every=10)
    assert bool(jnp.all(resumed.x == whole.x))
    for f in sorted(folder.glob("step-*.npz"))[-1:]:
        f.unlink()  # a run killed before its last checkpoint: resume from the one before
    again, t_again = dpflows.run(flow, state, key, 60, record_every=5, checkpoint=folder, checkpoint_every=10)
    assert bool(jnp.all(again.x == whole.x))
    assert bool(jnp.all(t_again["active"] == t_whole["active"]))


def test_sweep_freezes_each_member_on_its_own(state, key):
    rates = [0.3, 0.6, 0.9]
    flows = [Contraction(rate=r, tol=1e-2) for r in rates]
    finals, trace = dpflows.sweep(flows, state, key, 80)
    for i, r in enumerate(rates):
        n = _stop_step(r, 1e-2)
        assert int(trace["active"][i].sum()) == n
        np.testing.assert_allclose(finals.x[i], state.x * r**n, rtol=1e-5)
        alone, t_alone = dpflows.run(flows[i], state, key, 80)
        np.testing.assert_allclose(finals.x[i], alone.x, rtol=1e-6)
        assert bool(jnp.all(trace["active"][i] == t_alone["active"]))


def test_a_flow_without_terminate_has_no_active_entry(key):
    from dpflows.langevin import ULA
    from helpers import gaussian_target

    _, trace = dpflows.run(ULA(gaussian_target(), step_size=0.1), Particles.uniform(jnp.zeros((4, 2))), key, 3)
    assert "active" not in trace.info


def test_non_finite_energy_is_not_ok_and_warns(key):
    class InfEnergy(AbstractFlow):
        def init(self, x, logw=None):
            return Particles.create(x, logw)

        def step(self, state, key):
            return state, {"energy": jnp.asarray(jnp.inf, state.x.dtype)}

    s = Particles.uniform(jnp.zeros((3, 1)))
    with pytest.warns(dpflows.FlowWarning, match="energy is non-finite"):
        _, trace = dpflows.run(InfEnergy(), s, key, 2, throw=False)
    assert not bool(trace.ok)
    with pytest.raises(dpflows.FlowError, match="energy is non-finite"):
        dpflows.run(InfEnergy(), s, key, 2)


def test_unconverged_inner_solve_names_the_cause_not_the_step_size(key):
    class Unconverged(AbstractFlow):
        def init(self, x, logw=None):
            return Particles.create(x, logw)

        def step(self, state, key):
            return state, {"converged": jnp.zeros((), bool)}

    with pytest.raises(dpflows.FlowError, match="did not converge.*epsilon"):
        dpflows.run(Unconverged(), Particles.uniform(jnp.zeros((3, 1))), key, 2)


# ----------------------------------------------------------------------------------------- iterate
def _halve(x, key, rate):
    del key
    return x * rate, {"size": jnp.abs(x)}


def _small(x, info):
    del info
    return jnp.abs(x) < 1e-3


def test_iterate_with_and_without_terminate(key):
    step = Partial(_halve, rate=jnp.asarray(0.5))
    x, info, rec = dpflows.iterate(step, jnp.asarray(1.0), key, 12, record_every=4)
    assert float(x) == 0.5**12
    assert info["size"].shape == (12,)
    assert "active" not in info
    np.testing.assert_allclose(rec, [0.5**4, 0.5**8, 0.5**12])
    x, info, _ = dpflows.iterate(step, jnp.asarray(1.0), key, 40, terminate=_small)
    assert int(info["active"].sum()) == 10
    assert float(x) == 0.5**10
    # Under vmap (a batch of rates) each lane stops on its own.
    many = jax.vmap(
        lambda r: dpflows.iterate(Partial(_halve, rate=r), jnp.asarray(1.0), key, 40, terminate=_small)[1]["active"]
    )(jnp.array([0.5, 0.2]))
    np.testing.assert_array_equal(many.sum(1), [10, 5])


def test_iterate_rejects_bad_arguments(key):
    with pytest.raises(TypeError, match="step"):
        dpflows.iterate(3, jnp.zeros(()), key, 2)
    with pytest.raises(ValueError, match="num_steps"):
        dpflows.iterate(Partial(_halve, rate=0.5), jnp.zeros(()), key, -1)


# --------------------------------------------------------------------------------------------- fit
class Quadratic(eqx.Module):
    """A noisy least-squares loss with its data as fields (a stable loss object)."""

    target: jax.Array

    def __call__(self, w, key):
        noise = 0.01 * jr.normal(key, self.target.shape, self.target.dtype)
        return jnp.sum((w - self.target - noise) ** 2), {"gap": jnp.sum(jnp.abs(w - self.target))}


def test_fit_converges_and_is_chunking_and_resume_invariant(key, tmp_path):
    loss = Quadratic(jnp.arange(3.0))
    opt = optax.adam(0.1)
    res = dpflows.fit(loss, jnp.zeros(3), opt, key, 300, has_aux=True)
    np.testing.assert_allclose(res.model, loss.target, atol=0.05)
    assert res.trace["loss"].shape == (300,)
    assert res.trace["gap"].shape == (300,)
    assert bool(res.trace.ok)
    chunked = dpflows.fit(loss, jnp.zeros(3), opt, key, 300, has_aux=True, chunk_size=70, progress=True)
    assert bool(jnp.all(chunked.model == res.model))
    folder = tmp_path / "fit"
    dpflows.fit(loss, jnp.zeros(3), opt, key, 300, has_aux=True, checkpoint=folder, checkpoint_every=100)
    sorted(folder.glob("step-*.npz"))[-1].unlink()
    resumed = dpflows.fit(loss, jnp.zeros(3), opt, key, 300, has_aux=True, checkpoint=folder, checkpoint_every=100)
    assert bool(jnp.all(resumed.model == res.model))
    assert bool(jnp.all(resumed.trace["loss"] == res.trace["loss"]))
    # Continuing from the returned optimizer state equals one longer run.
    first = dpflows.fit(loss, jnp.zeros(3), opt, key, 300, has_aux=True)
    assert jax.tree_util.tree_structure(first.opt_state) == jax.tree_util.tree_structure(opt.init(jnp.zeros(3)))


def test_fit_trains_only_inexact_leaves_of_a_module(key):
    class Affine(eqx.Module):
        w: jax.Array
        b: jax.Array
        idx: jax.Array  # an integer leaf stays fixed
        act: object = eqx.field(static=True, default=jnp.tanh)

    class Fit(eqx.Module):
        x: jax.Array
        y: jax.Array

        def __call__(self, m, key):
            return jnp.mean((m.w * self.x + m.b - self.y) ** 2)

    x = jnp.linspace(-1, 1, 20)
    model = Affine(jnp.asarray(0.0), jnp.asarray(0.0), jnp.arange(2))
    res = dpflows.fit(Fit(x, 2 * x + 1), model, optax.adam(0.05), key, 400)
    assert abs(float(res.model.w) - 2) < 0.05
    assert abs(float(res.model.b) - 1) < 0.05
    assert bool(jnp.all(res.model.idx == jnp.arange(2)))


def test_fit_learning_rate_sweep_is_one_vmap_that_compiles_once(key):
    loss = Quadratic(jnp.arange(3.0))
    traces = []

    def train(lr):
        traces.append(1)  # counts traces of this Python function (one per compilation)
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
        return dpflows.fit(loss, jnp.zeros(3), opt, key, 50, has_aux=True).trace["loss"][-1]

    fn = jax.jit(jax.vmap(train))
    small = fn(jnp.array([1e-3, 1e-2, 1e-1]))
    fn(jnp.array([2e-3, 2e-2, 2e-1]))
    assert len(traces) == 1
    assert float(small[2]) < float(small[0])  # a larger rate gets further in 50 steps
    alone = dpflows.fit(
        loss, jnp.zeros(3), optax.inject_hyperparams(optax.adam)(learning_rate=1e-1), key, 50, has_aux=True
    )
    np.testing.assert_allclose(small[2], alone.trace["loss"][-1], rtol=1e-5)


def test_fit_terminate_and_non_finite_loss(key):
    loss = Quadratic(jnp.arange(3.0))

    def close(w, info):
        return info["gap"] < 0.1

    res = dpflows.fit(loss, jnp.zeros(3), optax.adam(0.1), key, 500, has_aux=True, terminate=close)
    taken = int(res.trace["active"].sum())
    assert 0 < taken < 500
    assert float(res.trace["gap"][taken - 1]) < 0.1

    class Bad(eqx.Module):
        def __call__(self, w, key):
            return jnp.sum(jnp.log(w - 1.0))

    with pytest.raises(dpflows.FlowError, match="non-finite loss"):
        dpflows.fit(Bad(), jnp.zeros(2), optax.sgd(0.1), key, 3)
    with pytest.warns(dpflows.FlowWarning, match="non-finite loss"):
        out = dpflows.fit(Bad(), jnp.zeros(2), optax.sgd(0.1), key, 3, throw=False)
    assert not bool(out.trace.ok)
    with pytest.raises(TypeError, match="optimizer"):
        dpflows.fit(Bad(), jnp.zeros(2), "adam", key, 3)


# ------------------------------------------------------------------------------------------ stack
def test_stack_names_the_field_whose_structure_differs():
    from dpflows.langevin import ULA
    from helpers import gaussian_target

    class Maybe(AbstractFlow):
        bandwidth: object
        step_size: jax.Array = eqx.field(converter=jnp.asarray)

        def init(self, x, logw=None):
            return Particles.create(x, logw)

        def step(self, state, key):
            return state, {}

    with pytest.raises(ValueError, match="bandwidth"):
        dpflows.stack([Maybe(None, 0.1), Maybe(jnp.asarray(0.2), 0.1)])
    with pytest.raises(ValueError, match="type"):
        dpflows.stack([ULA(gaussian_target(), step_size=0.1), Maybe(None, 0.1)])


def test_fit_with_step_hands_the_loss_the_global_step_index(key):
    class Cycle(eqx.Module):
        targets: jax.Array

        def __call__(self, w, key, step):
            t = self.targets[step % self.targets.shape[0]]
            return jnp.sum((w - t) ** 2), {"step": step}

    res = dpflows.fit(
        Cycle(jnp.eye(3)), jnp.zeros(3), optax.sgd(0.1), key, 7, has_aux=True, with_step=True, chunk_size=3
    )
    np.testing.assert_array_equal(res.trace["step"], np.arange(7))


def test_a_sweep_of_one_member_equals_a_run(state, key):
    flow = Contraction(rate=0.5, tol=1e-2)
    finals, trace = dpflows.sweep([flow], state, key, 20)
    alone, _ = dpflows.run(flow, state, key, 20)
    assert finals.x.shape == (1, *state.x.shape)
    np.testing.assert_allclose(finals.x[0], alone.x)


def test_terminate_under_x64(x64, key):
    flow = Contraction(rate=jnp.asarray(0.5, jnp.float64), tol=jnp.asarray(1e-2, jnp.float64))
    s = Particles.uniform(jnp.array([[1.0, -0.5], [0.25, 0.0]], jnp.float64))
    final, trace = dpflows.run(flow, s, key, 20, record_every=5)
    assert final.x.dtype == jnp.float64
    assert int(trace["active"].sum()) == _stop_step(0.5, 1e-2)
