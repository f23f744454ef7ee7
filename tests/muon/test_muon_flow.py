"""MuonMeanFieldFlow: dissipation, convergence, propagation of chaos, blocks (METHODS.md §3e 4, 6–8)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import muon
from dpflows.muon import MixtureOfExperts, MuonMeanFieldFlow, TwoLayerNetwork

A_MAT = jnp.array([[1.0, 0.3, 0.0], [0.2, 1.5, -0.4], [0.0, 0.5, 0.8], [0.3, 0.0, 1.1]])
B_MAT = jnp.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0], [0.3, 0.7]])


def pl_quadratic(w, weights):
    """J(ρ) = ½‖A ∫W dρ − B‖_F² (PL in the mean; its minimum J* is the least-squares residual)."""
    mean = jnp.tensordot(weights.astype(w.dtype), w, axes=1)
    return 0.5 * jnp.sum((A_MAT.astype(w.dtype) @ mean - B_MAT.astype(w.dtype)) ** 2)


def interacting(w, weights):
    """A non-quadratic mean-field objective: squared mean plus a quartic confinement."""
    return pl_quadratic(w, weights) + 0.05 * jnp.sum(weights[:, None, None] * w**4)


def rk4(flow, x, v, weights, dt, num_steps):
    """Classical RK4 on the flow's vector field; returns the trajectory (num_steps + 1 states)."""

    def f(state):
        return flow.vector_field(state[0], state[1], weights)

    def body(state, _):
        k1 = f(state)
        k2 = f(jax.tree_util.tree_map(lambda s, k: s + 0.5 * dt * k, state, k1))
        k3 = f(jax.tree_util.tree_map(lambda s, k: s + 0.5 * dt * k, state, k2))
        k4 = f(jax.tree_util.tree_map(lambda s, k: s + dt * k, state, k3))
        new = jax.tree_util.tree_map(lambda s, a, b, c, d: s + dt / 6 * (a + 2 * b + 2 * c + d), state, k1, k2, k3, k4)
        return new, new

    _, traj = jax.lax.scan(body, (x, v), None, length=num_steps)
    return jax.tree_util.tree_map(lambda s0, t: jnp.concatenate([s0[None], t]), (x, v), traj)


def _energies(flow, traj, weights):
    xs, vs = traj

    def one(x, v):
        state = dpflows.Particles(x=x, logw=jnp.log(weights), v=v, t=jnp.zeros((), x.dtype))
        return flow.hamiltonian(state), flow.dissipation_rate(state), flow.objective_value(state)

    return jax.vmap(one)(xs, vs)


def _simpson(y, dt):
    return dt / 3 * (y[0] + y[-1] + 4 * jnp.sum(y[1:-1:2]) + 2 * jnp.sum(y[2:-1:2]))


@pytest.mark.parametrize("kind", ["sqrt", "huber"])
def test_exact_dissipation_identity_along_rk4(kind, key):
    with jax.enable_x64(True):
        flow = MuonMeanFieldFlow(interacting, eps=0.3, damping=0.7, step_size=0.01, kind=kind)
        n = 5
        x = jr.normal(key, (n, 3, 2), dtype=jnp.float64)
        v = 2.0 * jr.normal(jr.fold_in(key, 1), (n, 3, 2), dtype=jnp.float64)
        weights = jnp.full((n,), 1.0 / n, jnp.float64)
        errors = []
        for dt in (0.02, 0.01):
            num = int(round(2.0 / dt))
            traj = rk4(flow, x, v, weights, dt, num)
            h, d, _ = _energies(flow, traj, weights)
            # H(T) − H(0) = −∫ γΣw⟨∇φ(P), P⟩ dt along the exact flow
            errors.append(abs(float(h[-1] - h[0] + _simpson(d, dt))))
            assert bool(jnp.all(jnp.diff(h) <= 1e-12))  # non-increasing
            assert float(h[0] - h[-1]) > 0.1  # and it does dissipate
        # "sqrt" is smooth: RK4 + Simpson are 4th order; "huber" has a kink at σ = ε (lower order)
        assert errors[1] < (1e-7 if kind == "sqrt" else 1e-4)
        if kind == "sqrt":
            assert errors[0] / errors[1] > 6, errors  # ≈ 2⁴ up to round-off; a wrong identity would not converge


def test_objective_itself_is_not_monotone_with_small_damping(key):
    # One particle, J = ½‖W‖²: a damped relativistic oscillator overshoots, so J rises again while H falls.
    with jax.enable_x64(True):
        flow = MuonMeanFieldFlow(
            lambda w, wt: 0.5 * jnp.sum(wt[:, None, None] * w**2), eps=0.5, damping=0.1, step_size=0.01
        )
        x = jnp.ones((1, 2, 2), jnp.float64)
        traj = rk4(flow, x, jnp.zeros_like(x), jnp.ones(1, jnp.float64), 0.01, 1500)
        h, _, j = _energies(flow, traj, jnp.ones(1, jnp.float64))
        assert bool(jnp.all(jnp.diff(h) <= 1e-12))
        assert float(jnp.max(jnp.diff(j))) > 1e-3  # J goes back up at some point


def test_exponential_convergence_on_a_pl_quadratic_and_the_scheme_tracks_the_ode(key):
    with jax.enable_x64(True):
        n = 8
        x = jr.normal(key, (n, 3, 2), dtype=jnp.float64)
        flow = MuonMeanFieldFlow(pl_quadratic, eps=0.5, damping=2.0, step_size=0.01)
        state, trace = dpflows.run(flow, flow.init(x), key, 3000)
        a, b = np.asarray(A_MAT, np.float64), np.asarray(B_MAT, np.float64)
        jstar = 0.5 * np.sum((a @ np.linalg.lstsq(a, b, rcond=None)[0] - b) ** 2)
        j = np.asarray(trace["objective"]) - jstar
        assert j[-1] < 1e-10 * j[0]
        tail = np.log(j[300:1500])  # before float64 round-off floors J − J*
        slope = np.polyfit(np.arange(tail.size) * 0.01, tail, 1)[0]
        assert slope < -1.0  # exponential: log J falls linearly
        # the discrete scheme is first order: halving h halves the gap to the RK4 trajectory at t = 1
        weights = jnp.full((n,), 1.0 / n, jnp.float64)
        ref = rk4(flow, x, jnp.zeros_like(x), weights, 1e-3, 1000)[0][-1]
        gaps = []
        for h in (0.02, 0.01):
            f = MuonMeanFieldFlow(pl_quadratic, eps=0.5, damping=2.0, step_size=h)
            out, _ = dpflows.run(f, f.init(x), key, int(round(1.0 / h)))
            gaps.append(float(jnp.max(jnp.abs(out.x - ref))))
        assert 1.6 < gaps[0] / gaps[1] < 2.5, gaps


def _teacher_student(key, num_inputs=64, d=3, width=2):
    kx, kt = jr.split(key)
    inputs = jr.normal(kx, (num_inputs, d))
    teacher = jr.normal(kt, (4, width, d))
    y = jnp.mean(jnp.tanh(jnp.einsum("sd,nkd->snk", inputs, teacher)), axis=(1, 2))
    return TwoLayerNetwork(inputs, y)


# slow (27 s): a Monte Carlo scaling study over particle counts; `make test-slow` runs it.
@pytest.mark.slow
def test_propagation_of_chaos_variance_scales_like_one_over_n(key):
    objective = _teacher_student(key)
    flow = MuonMeanFieldFlow(objective, eps=0.2, damping=1.0, step_size=0.05)
    seeds = 32

    def final_risk(k, n):
        state, _ = dpflows.run(flow, flow.init(jr.normal(k, (n, 2, 3))), k, 40)
        return flow.objective_value(state)

    ns = (8, 32, 128)
    variances, gaps = [], []
    ref = float(jnp.mean(jax.vmap(lambda k: final_risk(k, 1024))(jr.split(jr.key(99), 4))))
    for n in ns:
        vals = np.asarray(jax.vmap(lambda k, n=n: final_risk(k, n))(jr.split(jr.fold_in(key, n), seeds)))
        variances.append(vals.var())
        gaps.append(np.sqrt(np.mean((vals - ref) ** 2)))
    slope = np.polyfit(np.log(ns), np.log(variances), 1)[0]
    assert -1.4 < slope < -0.6, (slope, variances)
    gap_slope = np.polyfit(np.log(ns), np.log(gaps), 1)[0]
    assert -0.75 < gap_slope < -0.3, (gap_slope, gaps)


def _moe(key, num_inputs=48, d=2):
    kx, _ = jr.split(key)
    inputs = jnp.concatenate([jr.normal(kx, (num_inputs, d)), jnp.ones((num_inputs, 1))], axis=1)
    y = jnp.where(inputs[:, 0] > 0, jnp.sin(2 * inputs[:, 1]), 0.5 * inputs[:, 1])
    return MixtureOfExperts(inputs, y)


BLOCKS = {"gate": (1, 3), "hidden": (4, 3), "readout": (1, 4)}


def test_blockwise_dissipation_identity_and_per_block_eps(key):
    with jax.enable_x64(True):
        objective = _moe(key)
        eps = {"gate": 0.05, "hidden": 0.3, "readout": 1.0}
        flow = MuonMeanFieldFlow(objective, eps=eps, damping=0.8, step_size=0.01, blocks=BLOCKS)
        n = 6
        x = 0.5 * jr.normal(key, (n, flow.event_size), dtype=jnp.float64)
        v = jr.normal(jr.fold_in(key, 1), (n, flow.event_size), dtype=jnp.float64)
        weights = jnp.full((n,), 1.0 / n, jnp.float64)
        # each block moves by its own map with its own ε
        d, _ = flow.vector_field(x, v, weights)
        blocks_v, blocks_d = flow.unflatten(v), flow.unflatten(d)
        for name in BLOCKS:
            np.testing.assert_allclose(blocks_d[name], muon.regularized_polar(blocks_v[name], eps[name]), atol=1e-12)
        dt = 0.01
        traj = rk4(flow, x, v, weights, dt, 60)
        h, diss, _ = _energies(flow, traj, weights)
        assert bool(jnp.all(jnp.diff(h) <= 1e-12))
        assert abs(float(h[-1] - h[0] + _simpson(diss, dt))) < 1e-8
        # the dissipation is the sum of the per-block terms
        blocks_p = flow.unflatten(traj[1][50])
        per_block = sum(
            jnp.sum(weights * jnp.sum(muon.regularized_polar(blocks_p[b], eps[b]) * blocks_p[b], axis=(-2, -1)))
            for b in BLOCKS
        )
        assert float(0.8 * per_block) == pytest.approx(float(diss[50]), rel=1e-12)


@pytest.mark.slow  # the muon_moe demo (in the default run) exercises the same path at smaller size
def test_blockwise_flow_trains_a_mixture_of_experts(key):
    objective = _moe(key, num_inputs=96)
    flow = MuonMeanFieldFlow(objective, eps=0.1, damping=1.0, step_size=0.02, blocks=BLOCKS)
    x0 = {
        "gate": jr.normal(jr.fold_in(key, 0), (16, 1, 3)),
        "hidden": jr.normal(jr.fold_in(key, 1), (16, 4, 3)),
        "readout": jr.normal(jr.fold_in(key, 2), (16, 1, 4)),
    }
    state = flow.init(x0)
    final, trace = dpflows.run(flow, state, key, 400)
    assert float(trace["objective"][-1]) < 0.2 * float(flow.objective_value(state))
    assert float(jnp.max(trace["energy_flag"])) == 0.0
    np.testing.assert_allclose(flow.flatten(flow.unflatten(final.x)), final.x)


def test_one_step_is_the_stated_update(key):
    with jax.enable_x64(True):
        flow = MuonMeanFieldFlow(interacting, eps=0.3, damping=0.5, step_size=0.1)
        x = jr.normal(key, (4, 3, 2), dtype=jnp.float64)
        v = jr.normal(jr.fold_in(key, 1), (4, 3, 2), dtype=jnp.float64)
        state = flow.init(x, v=v)
        new, info = flow.step(state, key)
        g = 4 * jax.grad(lambda a: interacting(a, jnp.full(4, 0.25, jnp.float64)))(x)
        p1 = (1 - 0.05) * v - 0.1 * g
        np.testing.assert_allclose(new.v, p1, atol=1e-12)
        np.testing.assert_allclose(new.x, x + 0.1 * muon.regularized_polar(p1, 0.3), atol=1e-12)
        assert float(info["hamiltonian"]) == pytest.approx(float(flow.hamiltonian(new)), rel=1e-12)
        assert float(info["energy_change"]) == pytest.approx(float(flow.hamiltonian(new) - flow.hamiltonian(state)))


def test_a_weighted_particle_is_two_copies(key):
    # Mean-field consistency: weight 2/3 on one particle equals two uniform copies of it.
    x = jr.normal(key, (2, 3, 2))
    v = jr.normal(jr.fold_in(key, 1), (2, 3, 2))
    flow = MuonMeanFieldFlow(interacting, eps=0.3, damping=1.0, step_size=0.05)
    weighted, _ = dpflows.run(flow, flow.init(x, jnp.log(jnp.array([2 / 3, 1 / 3])), v=v), key, 20)
    copies, _ = dpflows.run(flow, flow.init(x[jnp.array([0, 0, 1])], v=v[jnp.array([0, 0, 1])]), key, 20)
    np.testing.assert_allclose(weighted.x[0], copies.x[0], atol=1e-5)
    np.testing.assert_allclose(weighted.x[1], copies.x[2], atol=1e-5)
    np.testing.assert_allclose(copies.x[0], copies.x[1], atol=1e-6)


def test_energy_flag_is_quiet_on_smooth_runs_and_fires_on_an_unexplained_rise(key):
    flow = MuonMeanFieldFlow(interacting, eps=0.3, damping=0.5, step_size=0.05)
    _, trace = dpflows.run(flow, flow.init(jr.normal(key, (8, 3, 2))), key, 200)
    assert float(jnp.max(trace["energy_flag"])) == 0.0
    assert bool(jnp.all(trace["energy_change"] <= trace["discretisation_error"]))

    def jump(w, weights):  # a step in J that the force cannot see: H jumps when W₁₁ crosses 0.3
        return 0.5 * jnp.sum(weights[:, None, None] * w**2) + 0.5 * jnp.sum(
            weights * (w[:, 0, 0] > 0.3).astype(w.dtype)
        )

    flow = MuonMeanFieldFlow(jump, eps=0.3, damping=0.1, step_size=0.05)
    v = jnp.zeros((1, 2, 2)).at[0, 0, 0].set(3.0)
    _, trace = dpflows.run(flow, flow.init(jnp.zeros((1, 2, 2)), v=v), key, 20)
    assert float(jnp.sum(trace["energy_flag"])) >= 1.0


def test_huber_newton_and_quadratic_variants_run(key):
    x = jr.normal(key, (8, 3, 2))
    for kind, method in [("huber", "svd"), ("sqrt", "newton"), ("quadratic", "eigh")]:
        flow = MuonMeanFieldFlow(pl_quadratic, eps=0.5, damping=2.0, step_size=0.02, kind=kind, method=method)
        _, trace = dpflows.run(flow, flow.init(x), key, 400)
        assert float(trace["objective"][-1]) < 1.064 + 1e-3  # J* = 1.0639 (least-squares residual)


def test_sweep_over_eps_and_damping(key):
    x = jr.normal(key, (8, 3, 2))
    flows = [MuonMeanFieldFlow(pl_quadratic, eps=e, damping=g, step_size=0.05) for e, g in [(0.1, 1.0), (1.0, 2.0)]]
    swept, trace = dpflows.sweep(flows, flows[0].init(x), key, 30)
    for i, f in enumerate(flows):
        single, _ = dpflows.run(f, f.init(x), key, 30)
        np.testing.assert_allclose(swept.x[i], single.x, atol=1e-5)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="eps"):
        MuonMeanFieldFlow(pl_quadratic, eps=0.0, damping=1.0, step_size=0.1)
    with pytest.raises(ValueError, match="damping"):
        MuonMeanFieldFlow(pl_quadratic, eps=0.1, damping=-1.0, step_size=0.1)
    with pytest.raises(ValueError, match="step_size"):
        MuonMeanFieldFlow(pl_quadratic, eps=0.1, damping=1.0, step_size=float("nan"))
    with pytest.raises(ValueError, match="step_size × damping"):
        MuonMeanFieldFlow(pl_quadratic, eps=0.1, damping=20.0, step_size=0.1)
    with pytest.raises(TypeError, match="objective"):
        MuonMeanFieldFlow(3.0, eps=0.1, damping=1.0, step_size=0.1)
    with pytest.raises(ValueError, match="blocks"):
        MuonMeanFieldFlow(pl_quadratic, eps=0.1, damping=1.0, step_size=0.1, blocks={"a": (0, 2)})
    with pytest.raises(ValueError, match="one ε per block"):
        MuonMeanFieldFlow(pl_quadratic, eps={"a": 0.1}, damping=1.0, step_size=0.1, blocks={"a": (1, 2), "b": (2, 2)})
    with pytest.raises(ValueError, match="eps\\['b'\\]"):
        MuonMeanFieldFlow(
            pl_quadratic, eps={"a": 0.1, "b": -1.0}, damping=1.0, step_size=0.1, blocks={"a": (1, 2), "b": (2, 2)}
        )
    flow = MuonMeanFieldFlow(pl_quadratic, eps=0.1, damping=1.0, step_size=0.1)
    with pytest.raises(ValueError, match="x must be matrices"):
        flow.init(jnp.ones((4, 6)))
    with pytest.raises(ValueError, match="x must be finite"):
        flow.init(jnp.full((4, 3, 2), jnp.nan))
    with pytest.raises(ValueError, match="inputs"):
        TwoLayerNetwork(jnp.ones((0, 2)), jnp.ones(0))
    with pytest.raises(ValueError, match="targets"):
        TwoLayerNetwork(jnp.ones((5, 2)), jnp.ones(4))


def test_flow_is_a_pytree_with_sweepable_fields():
    flow = MuonMeanFieldFlow(pl_quadratic, eps=0.1, damping=1.0, step_size=0.1)
    leaves = jax.tree_util.tree_leaves(eqx.filter(flow, eqx.is_array))
    assert len(leaves) == 3  # eps, damping, step_size
