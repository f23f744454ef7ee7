import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import Particles
from dpflows.langevin import ULA
from dpflows.potentials import GaussianPotential
from helpers import NoiseFlow, gaussian_target

# RELIABILITY.md §5.2 measured: noise draws are bitwise identical across shardings, arithmetic is
# not (8.9e-7 after 300 f32 steps, 7.9e-15 in f64). Tolerances: f32 atol 1e-5, f64 atol 1e-12.
F32_ATOL, F64_ATOL = 1e-5, 1e-12


def _one_device_mesh():
    return jax.make_mesh((1,), ("sweep",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])


def _flows(steps, dtype=jnp.float32):
    target = gaussian_target(dtype=dtype)  # the same object in every member: stays unbatched
    return [ULA(target, step_size=jnp.asarray(h, dtype)) for h in steps]


@pytest.mark.parametrize("size", [3, 5])  # fewer members than devices, and a remainder
def test_sharded_sweep_equals_unsharded_and_single_runs(size, key):
    assert len(jax.devices()) == 4  # conftest: jax_num_cpu_devices=4
    flows = _flows(np.linspace(0.01, 0.08, size))
    state = Particles.uniform(jr.normal(key, (128, 2)))
    sharded, t_sharded = dpflows.sweep(flows, state, key, 300)
    single_dev, t_single = dpflows.sweep(flows, state, key, 300, mesh=_one_device_mesh())
    assert sharded.x.shape == (size, 128, 2)
    assert t_sharded["energy"].shape == (size, 300)
    np.testing.assert_allclose(sharded.x, single_dev.x, rtol=0, atol=F32_ATOL)
    np.testing.assert_allclose(t_sharded["energy"], t_single["energy"], rtol=1e-5)
    for i, flow in enumerate(flows):
        alone, _ = dpflows.run(flow, state, key, 300)
        np.testing.assert_allclose(sharded.x[i], alone.x, rtol=0, atol=F32_ATOL)
    assert bool(jnp.all(t_sharded.ok))


def test_sharded_noise_draws_are_bitwise_identical(key):
    flows = [NoiseFlow(a=a) for a in (0.5, 0.9, 0.99)]
    state = Particles.uniform(jr.normal(key, (16, 3)))
    _, sharded = dpflows.sweep(flows, state, key, 50)
    _, single = dpflows.sweep(flows, state, key, 50, mesh=_one_device_mesh())
    # Sweep outputs stay sharded over the mesh; compare on the host.
    np.testing.assert_array_equal(np.asarray(sharded["noise"]), np.asarray(single["noise"]))
    _, alone = dpflows.run(flows[1], state, key, 50)
    np.testing.assert_array_equal(np.asarray(sharded["noise"][1]), np.asarray(alone["noise"]))


def test_sharded_sweep_float64(key, x64):
    flows = _flows([0.02, 0.05, 0.07], dtype=jnp.float64)
    state = Particles.uniform(jr.normal(key, (64, 2), dtype=jnp.float64))
    sharded, _ = dpflows.sweep(flows, state, key, 300)
    single, _ = dpflows.sweep(flows, state, key, 300, mesh=_one_device_mesh())
    assert sharded.x.dtype == jnp.float64
    np.testing.assert_allclose(sharded.x, single.x, rtol=0, atol=F64_ATOL)


def test_independent_keys(key):
    flows = _flows([0.05, 0.05])
    state = Particles.uniform(jr.normal(key, (32, 2)))
    common, _ = dpflows.sweep(flows, state, key, 10)
    np.testing.assert_allclose(common.x[0], common.x[1], atol=1e-6)  # common random numbers
    indep, _ = dpflows.sweep(flows, state, key, 10, independent_keys=True)
    assert float(jnp.abs(indep.x[0] - indep.x[1]).max()) > 0.1
    member1, _ = dpflows.run(flows[1], state, jr.fold_in(key, 1), 10)
    np.testing.assert_allclose(indep.x[1], member1.x, atol=F32_ATOL)


def test_stack_keeps_shared_leaves_unbatched_and_names_static_differences():
    target = gaussian_target()
    flows = _flows([0.01, 0.02, 0.03])
    batched, axes = dpflows.stack(flows)
    assert batched.step_size.shape == (3,)
    assert axes.step_size == 0
    assert batched.potential is target or batched.potential.mean.shape == (2,)
    assert axes.potential.mean is None  # one shared object, not copied per member
    separate = [ULA(GaussianPotential(jnp.zeros(2), jnp.eye(2) * s), step_size=0.1) for s in (1.0, 2.0)]
    b2, ax2 = dpflows.stack(separate)
    assert b2.potential.precision.shape == (2, 2, 2)
    assert ax2.potential.precision == 0
    with pytest.raises(ValueError, match="differs across flows and is not an array"):
        dpflows.stack([ULA(_v1, step_size=0.1), ULA(_v2, step_size=0.1)])
    with pytest.raises(ValueError, match="different shapes"):
        dpflows.stack([ULA(GaussianPotential(jnp.zeros(d), jnp.eye(d)), step_size=0.1) for d in (2, 3)])
    with pytest.raises(ValueError, match="at least one flow"):
        dpflows.stack([])


class _Static(dpflows.AbstractFlow):
    scheme: str = eqx.field(static=True)
    step_size: jax.Array = eqx.field(converter=jnp.asarray, default=0.1)

    def init(self, x, logw=None):
        return Particles.create(x, logw)

    def step(self, state, key):
        return state, {}


def test_stack_names_the_static_field():
    with pytest.raises(ValueError, match="static field 'scheme' differs"):
        dpflows.stack([_Static("weighted"), _Static("jump")])


def _v1(x):
    return jnp.sum(x**2)


def _v2(x):
    return jnp.sum(x**4)


def test_sweep_of_a_prebatched_flow_and_batched_states(key):
    make = lambda h: ULA(gaussian_target(), step_size=h)  # noqa: E731
    batched = eqx.filter_vmap(make)(jnp.array([0.02, 0.04]))
    states = jax.vmap(Particles.uniform)(jr.normal(key, (2, 16, 2)))
    out, trace = dpflows.sweep(batched, states, key, 20, state_in_axes=0)
    for i, h in enumerate((0.02, 0.04)):
        alone, _ = dpflows.run(make(h), jax.tree_util.tree_map(lambda a, i=i: a[i], states), key, 20)
        np.testing.assert_allclose(out.x[i], alone.x, atol=F32_ATOL)
    assert trace.ok.shape == (2,)


def test_sweep_reports_failing_members_without_stopping(key):
    flows = _flows([0.05, 3.0, 0.05])  # the middle member diverges
    state = Particles.uniform(jr.normal(key, (16, 2)))
    with pytest.warns(dpflows.FlowWarning, match=r"non-finite.*members \[1\]"):
        out, trace = dpflows.sweep(flows, state, key, 200, record_every=50, progress=True)
    np.testing.assert_array_equal(trace.ok, [True, False, True])
    assert trace.states.x.shape == (3, 4, 16, 2)
    with pytest.raises(dpflows.FlowError, match=r"members \[1\]"):
        dpflows.sweep(flows, state, key, 200, throw=True)


def test_sweep_checkpoint_resume(key, tmp_path):
    flows = _flows([0.02, 0.05, 0.07])
    state = Particles.uniform(jr.normal(key, (16, 2)))
    reference, ref_trace = dpflows.sweep(flows, state, key, 60, record_every=10)
    folder = tmp_path / "sweep"
    out, trace = dpflows.sweep(flows, state, key, 60, record_every=10, checkpoint=folder, checkpoint_every=20)
    # Drop the last checkpoint and resume from step 40.
    sorted(folder.glob("step-*.npz"))[-1].unlink()
    resumed, r_trace = dpflows.sweep(flows, state, key, 60, record_every=10, checkpoint=folder, checkpoint_every=20)
    assert bool(jnp.all(resumed.x == out.x))
    assert bool(jnp.all(r_trace["energy"] == trace["energy"]))
    assert r_trace["energy"].shape == (3, 60)
    np.testing.assert_allclose(out.x, reference.x, atol=F32_ATOL)
    assert r_trace.states.x.shape == ref_trace.states.x.shape


def test_sweep_input_errors(key):
    state = Particles.uniform(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="state_in_axes"):
        dpflows.sweep(_flows([0.1, 0.2]), state, key, 5, state_in_axes=1)
    with pytest.raises(ValueError, match="no flow leaf is batched"):
        dpflows.sweep(ULA(gaussian_target(), step_size=0.1), state, key, 5, in_axes=_no_axes())


def _no_axes():
    return jax.tree_util.tree_map(lambda _: None, ULA(gaussian_target(), step_size=0.1))


def test_sharded_sweep_under_xla_flags_in_a_subprocess(tmp_path):
    # The setting verbatim: XLA_FLAGS forces 4 host devices in a fresh process.
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, jax.random as jr, numpy as np
        import dpflows
        from dpflows.langevin import ULA
        from dpflows.potentials import GaussianPotential
        assert len(jax.devices()) == 4, jax.devices()
        target = GaussianPotential(jnp.ones(2), jnp.array([[2.0, 0.3], [0.3, 1.0]]))
        flows = [ULA(target, step_size=h) for h in (0.01, 0.03, 0.05, 0.07, 0.09)]
        state = dpflows.Particles.uniform(jr.normal(jr.key(0), (64, 2)))
        out, _ = dpflows.sweep(flows, state, jr.key(1), 1000)
        assert len(out.x.sharding.device_set) == 4, out.x.sharding
        alone = [dpflows.run(f, state, jr.key(1), 1000)[0].x for f in flows]
        diffs = [float(np.abs(np.asarray(out.x[i]) - np.asarray(a)).max()) for i, a in enumerate(alone)]
        assert max(diffs) < 1e-5, diffs
        print("max diff", max(diffs))
        """
    )
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "max diff" in out.stdout
