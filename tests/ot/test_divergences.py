"""One cloud against K clouds: ``ot.sinkhorn_divergences`` and the shared ``ot.self_transport``."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dpflows import ot

TIGHT = dict(epsilon=0.3, threshold=1e-11, max_iterations=50_000)


def _problem(key, k=3, n=9, m=7, dtype=jnp.float64):
    x = jr.normal(key, (n, 2), dtype)
    a = jax.nn.softmax(jr.normal(jr.fold_in(key, 1), (n,), dtype))
    ys = jr.normal(jr.fold_in(key, 2), (k, m, 2), dtype) + jnp.arange(k, dtype=dtype)[:, None, None]
    sizes = jnp.array([m, m - 2, 3])[:k]  # ragged: zero-weight padding
    bs = jnp.where(jnp.arange(m)[None, :] < sizes[:, None], 1.0, 0.0).astype(dtype)
    return x, a, ys, bs / jnp.sum(bs, axis=1, keepdims=True)


def test_equals_k_single_divergences_and_their_potentials(x64, key):
    x, a, ys, bs = _problem(key)
    res = ot.sinkhorn_divergences(x, ys, a, bs, **TIGHT)
    for k in range(ys.shape[0]):
        one = ot.sinkhorn_divergence(x, ys[k], a, bs[k], **TIGHT)
        np.testing.assert_allclose(res.value[k], one.value, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.raw[k], one.xy.cost - 0.5 * one.xx.cost - 0.5 * one.yy.cost, rtol=1e-10)
        # Potentials are defined up to a constant shift (f + c, g − c); the plan is not.
        np.testing.assert_allclose(_lane(res.xy, k).plan(), one.xy.plan(), atol=1e-10)
        np.testing.assert_allclose(res.f_xx, one.f_xx, atol=1e-9)
        np.testing.assert_allclose(res.g_yy[k], one.g_yy, atol=1e-9)
        np.testing.assert_allclose(res.maps()[k], ot.barycentric_map(one.xy), atol=1e-9)
    np.testing.assert_allclose(res.self_map(), ot.barycentric_map(one.xx), atol=1e-9)
    assert bool(jnp.all(res.converged))


def _lane(result, k):
    return jax.tree_util.tree_map(lambda v: v[k], result)  # every leaf of a vmapped solve has the K axis


def test_shared_self_terms_give_the_same_values_without_resolving(x64, key):
    x, a, ys, bs = _problem(key)
    full = ot.sinkhorn_divergences(x, ys, a, bs, **TIGHT)
    own = jax.vmap(lambda y, b: ot.self_transport(y, b, **TIGHT))(ys, bs)
    mine = ot.self_transport(x, a, **TIGHT)
    # OT_ε(μ, μ) by the plain (non-symmetric) solver, which is slower here: 1e-9 is what it reaches.
    plain = ot.entropic_ot(x, x, a, a, epsilon=0.3, threshold=1e-9, max_iterations=50_000)
    np.testing.assert_allclose(mine.cost, plain.cost, rtol=1e-8)
    shared = ot.sinkhorn_divergences(x, ys, a, bs, self_x=mine, self_ys=own, **TIGHT)
    np.testing.assert_allclose(shared.value, full.value, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(shared.yy.cost, own.cost)  # taken, not re-solved
    np.testing.assert_array_equal(shared.f_xx, mine.f)
    # No self problem is in the program when both are shared: only the K cross solves remain.
    jaxpr = str(jax.make_jaxpr(lambda z: ot.sinkhorn_divergences(z, ys, a, bs, self_x=mine, self_ys=own, **TIGHT))(x))
    assert jaxpr.count("while[") == 1


def test_warm_start_from_the_previous_potentials(key):
    x, a, ys, bs = _problem(key, dtype=jnp.float32)
    kw = dict(epsilon=0.1, threshold=1e-4, max_iterations=5000, check_every=10)
    cold = ot.sinkhorn_divergences(x, ys, a, bs, **kw)
    moved = x + 1e-3 * jr.normal(jr.fold_in(key, 9), x.shape)  # the next step of a flow
    warm = ot.sinkhorn_divergences(moved, ys, a, bs, init=cold.potentials, **kw)
    fresh = ot.sinkhorn_divergences(moved, ys, a, bs, **kw)
    assert int(jnp.sum(warm.xy.num_iters)) < int(jnp.sum(fresh.xy.num_iters)) / 2  # measured 70 vs 300
    assert int(warm.num_iters) < int(fresh.num_iters)
    np.testing.assert_allclose(warm.value, fresh.value, rtol=1e-3, atol=1e-5)
    partial = ot.sinkhorn_divergences(moved, ys, a, bs, init=(cold.f_xy, cold.g_xy, None, None), **kw)
    np.testing.assert_allclose(partial.value, fresh.value, rtol=1e-3, atol=1e-5)


def test_vmap_over_queries_matches_the_loop_and_lanes_stop_on_their_own(key):
    _, _, ys, bs = _problem(key, dtype=jnp.float32)
    xs = jr.normal(jr.fold_in(key, 3), (4, 9, 2)) * jnp.linspace(0.3, 2.0, 4)[:, None, None]
    threshold = jnp.asarray(1e-4)  # an array: a flow's leaf, traced without a recompile

    @jax.jit
    def batch(xs, threshold):
        return jax.vmap(lambda q: ot.sinkhorn_divergences(q, ys, None, bs, epsilon=0.1, threshold=threshold))(xs)

    res = batch(xs, threshold)
    for i in range(4):
        one = ot.sinkhorn_divergences(xs[i], ys, None, bs, epsilon=0.1, threshold=1e-4)
        np.testing.assert_allclose(res.value[i], one.value, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(res.xy.num_iters[i], one.xy.num_iters)
    assert len(set(np.asarray(res.xy.num_iters).ravel().tolist())) > 1  # lanes stopped at different points


def test_gradients_are_those_of_the_single_divergences(x64, key):
    x, a, ys, bs = _problem(key)
    w = jnp.array([1.0, -0.5, 2.0])

    def total(z, v):
        return w @ ot.sinkhorn_divergences(z, ys, v, bs, **TIGHT).value

    def singles(z, v):
        return sum(w[k] * ot.sinkhorn_divergence(z, ys[k], v, bs[k], **TIGHT).value for k in range(3))

    gx, ga = jax.grad(total, argnums=(0, 1))(x, a)
    rx, ra = jax.grad(singles, argnums=(0, 1))(x, a)
    np.testing.assert_allclose(gx, rx, atol=1e-9)
    np.testing.assert_allclose(ga - ga.mean(), ra - ra.mean(), atol=1e-9)  # weights: up to a constant


def test_non_convergence_is_reported_and_warned(key):
    x, a, ys, bs = _problem(key, dtype=jnp.float32)
    with pytest.warns(ot.ConvergenceWarning, match="sinkhorn_divergences did not converge"):
        res = ot.sinkhorn_divergences(x, 3 * ys, a, bs, epsilon=1e-3, max_iterations=20)
    assert not bool(jnp.all(res.converged))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ys": jnp.zeros((4, 2))}, r"ys must have shape \(K, m, 2\)"),
        ({"ys": jnp.zeros((2, 4, 3))}, r"ys must have shape \(K, m, 2\)"),
        ({"ys": jnp.full((2, 4, 2), jnp.nan)}, "ys must be finite"),
        ({"bs": jnp.ones((2, 4))}, r"bs\[0\] must sum to 1"),
        ({"bs": jnp.ones((3, 4)) / 4}, r"bs must have shape \(2, 4\)"),
        ({"init": (jnp.zeros((2, 5)), None, None, None)}, r"init's f_xy must have shape \(2, 6\)"),
        ({"init": (None, None)}, r"init must be \(f_xy, g_xy, f_xx, g_yy\)"),
        ({"self_x": jnp.zeros(6)}, "self_x"),  # an OTResult from ot.self_transport
        ({"epsilon": 0.0}, "epsilon must be finite and > 0"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = {"x": jnp.zeros((6, 2)), "ys": jnp.ones((2, 4, 2)), "epsilon": 0.1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        ot.sinkhorn_divergences(**args)


def test_check_weights_defaults_and_names():
    np.testing.assert_allclose(ot.check_weights(None, 4), jnp.full(4, 0.25))
    with pytest.raises(ValueError, match="w must sum to 1"):
        ot.check_weights(jnp.ones(3), 3, name="w")
    with pytest.raises(ValueError, match="init must have shape"):
        ot.self_transport(jnp.zeros((3, 2)), epsilon=0.1, init=jnp.zeros(4))
