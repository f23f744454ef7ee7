"""regularized_muon as an optax transform: the flow's scheme, the ε → 0 limit (optax.contrib.muon), Adam leaves."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import dpflows
from dpflows import muon


def test_matches_the_single_particle_flow(key):
    # One particle (N = 1) of the mean-field flow is exactly regularised Muon on 𝓛 = J.
    target = jr.normal(key, (3, 4))

    def loss(w):
        return 0.5 * jnp.sum((w - target) ** 2) + 0.1 * jnp.sum(w**4)

    w0 = jr.normal(jr.fold_in(key, 1), (3, 4))
    opt = muon.scale_by_regularized_muon(0.05, 0.2, 2.0)
    w, state = w0, opt.init(w0)
    for _ in range(30):
        updates, state = opt.update(jax.grad(loss)(w), state)
        w = optax.apply_updates(w, updates)
    flow = muon.MuonMeanFieldFlow(lambda x, wt: loss(x[0]), eps=0.2, damping=2.0, step_size=0.05)
    out, _ = dpflows.run(flow, flow.init(w0[None]), key, 30)
    np.testing.assert_allclose(w, out.x[0], atol=1e-5)
    np.testing.assert_allclose(state.momentum, -out.v[0], atol=1e-5)  # M = −P


def test_small_eps_gives_optax_contrib_muon_direction(key):
    # Same gradient stream into both: optax's EMA momentum and ours differ by a positive scale, so
    # polar() agrees exactly; our ε → 0 update is −h·polar(M), optax's NS5 approximates polar.
    h, gamma = 0.1, 0.5  # momentum factor 1 − γh = 0.95 = optax's beta
    ours = muon.regularized_muon(h, eps=1e-7, damping=gamma, method="svd")
    theirs = optax.contrib.muon(h, beta=0.95, nesterov=False)
    params = {"w": jnp.zeros((6, 6))}
    s_ours = ours.init(params)
    with jax.numpy_dtype_promotion("standard"):  # optax's own arithmetic is not strict-promotion clean
        s_theirs = theirs.init(params)
    for i in range(5):
        g = {"w": jr.normal(jr.fold_in(key, i), (6, 6))}
        u_ours, s_ours = ours.update(g, s_ours, params)
        with jax.numpy_dtype_promotion("standard"):
            u_theirs, s_theirs = theirs.update(g, s_theirs, params)
        mu = jax.tree_util.tree_leaves(s_theirs)[1]  # optax's EMA momentum (the muon partition's mu)
        mu = mu if mu.shape == (6, 6) else next(a for a in jax.tree_util.tree_leaves(s_theirs) if a.shape == (6, 6))
        u, _, vt = jnp.linalg.svd(mu)
        np.testing.assert_allclose(u_ours["w"], -h * (u @ vt), atol=1e-4)
        cos = jnp.sum(u_ours["w"] * u_theirs["w"]) / (jnp.linalg.norm(u_ours["w"]) * jnp.linalg.norm(u_theirs["w"]))
        assert float(cos) > 0.95


def test_non_matrix_leaves_follow_adam(key):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2), "s": jnp.array(1.0)}
    grads = {"w": jr.normal(key, (3, 2)), "b": jnp.array([0.5, -1.0]), "s": jnp.array(2.0)}
    opt = muon.regularized_muon(0.1, eps=0.3, damping=1.0, adam_learning_rate=0.01)
    adam = optax.adam(0.01)
    updates, _ = opt.update(grads, opt.init(params), params)
    with jax.numpy_dtype_promotion("standard"):
        ref, _ = adam.update({"b": grads["b"], "s": grads["s"]}, adam.init({"b": params["b"], "s": params["s"]}))
    np.testing.assert_allclose(updates["b"], ref["b"], atol=1e-7)
    np.testing.assert_allclose(updates["s"], ref["s"], atol=1e-7)
    m1 = 0.1 * grads["w"]  # M₁ = (1 − γh)·0 + h g
    np.testing.assert_allclose(updates["w"], -0.1 * muon.regularized_polar(m1, 0.3), atol=1e-6)


def test_speed_bound_and_schedule_and_jit(key):
    schedule = optax.linear_schedule(0.1, 0.01, 10)
    opt = muon.regularized_muon(schedule, eps=0.01, damping=1.0)
    params = {"w": jnp.zeros((4, 4))}
    state = opt.init(params)
    step = jax.jit(opt.update)
    for i in range(4):
        g = {"w": 100.0 * jr.normal(jr.fold_in(key, i), (4, 4))}
        updates, state = step(g, state, params)
        assert float(muon.operator_norm(updates["w"])) <= float(schedule(i)) + 1e-6  # ‖ΔW‖_op ≤ h


def test_trains_a_small_regression(key):
    kx, kw = jr.split(key)
    x = jr.normal(kx, (64, 5))
    w_true = jr.normal(kw, (5, 3))
    y = x @ w_true

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"][None, :] - y) ** 2)

    params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros(3)}
    opt = muon.regularized_muon(0.02, eps=0.05, damping=5.0)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < 1e-3 * float(jnp.mean(y**2))


def test_bad_hyperparameters_name_the_argument():
    with pytest.raises(ValueError, match="eps"):
        muon.regularized_muon(0.1, eps=0.0, damping=1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        muon.regularized_muon(-0.1, eps=0.1, damping=1.0)
    with pytest.raises(ValueError, match="damping"):
        muon.regularized_muon(0.1, eps=0.1, damping=-1.0)
    with pytest.raises(ValueError, match="learning_rate × damping"):
        muon.regularized_muon(0.5, eps=0.1, damping=3.0)
    with pytest.raises(ValueError, match="kind"):
        muon.regularized_muon(0.1, eps=0.1, damping=1.0, kind="abs")
