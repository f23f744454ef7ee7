import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import optimize, special

from dpflows import ot


def _quantile_gaussian(n, var, mean=0.0, dtype=jnp.float64):
    """Deterministic N(mean, var) sample: quantiles at (i + ½)/n (no Monte-Carlo noise)."""
    return jnp.asarray(mean + math.sqrt(var) * special.ndtri((np.arange(n) + 0.5) / n), dtype)[:, None]


def _closed_form_1d(var_a, var_b, mean_gap, eps):
    """OT_ε between 1-D Gaussians for c = ½(x−y)² and KL(π‖a⊗b) (METHODS.md §5e, halved; λ = 2ε).

    With c' = (x−y)², λ = 2ε: min_r a + b − 2r√(ab) − (λ/2) log(1 − r²) + gap²; ours is half of it.
    """
    lam = 2 * eps

    def obj(r):
        return var_a + var_b - 2 * r * math.sqrt(var_a * var_b) - lam / 2 * math.log(1 - r * r)

    res = optimize.minimize_scalar(obj, bounds=(0, 1 - 1e-15), method="bounded", options={"xatol": 1e-14})
    return 0.5 * (res.fun + mean_gap**2)


def test_closed_form_1d_gaussians(x64):
    # Quantile-spaced samples: the discretisation error shrinks ~1/n; check the n → 2n halving and
    # the value at n = 2000 to 1e-3 relative.
    exact = _closed_form_1d(1.0, 2.0, 0.5, 0.5)
    errors = []
    for n in (500, 1000, 2000):
        x, y = _quantile_gaussian(n, 1.0), _quantile_gaussian(n, 2.0, 0.5)
        res = ot.entropic_ot(x, y, epsilon=0.5, threshold=1e-9, max_iterations=20_000)
        assert bool(res.converged)
        errors.append(abs(float(res.cost) - exact))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] / exact < 1e-3


def test_product_grids_decompose_exactly(x64):
    # For product measures and the separable cost ½‖·‖², OT_ε in 2-D is the sum of the 1-D values
    # (the KL(π‖a⊗b) term splits over independent couplings): an exact identity.
    u, v = _quantile_gaussian(24, 1.0), _quantile_gaussian(20, 0.5)
    p, q = _quantile_gaussian(24, 2.0, 1.0), _quantile_gaussian(20, 1.5, -0.5)
    grid = lambda s, t: jnp.stack(jnp.meshgrid(s[:, 0], t[:, 0], indexing="ij"), -1).reshape(-1, 2)  # noqa: E731
    kw = dict(epsilon=0.3, threshold=1e-10, max_iterations=20_000)
    two_d = ot.entropic_ot(grid(u, v), grid(p, q), **kw).cost
    one_d = ot.entropic_ot(u, p, **kw).cost + ot.entropic_ot(v, q, **kw).cost
    np.testing.assert_allclose(two_d, one_d, rtol=1e-9)


def test_agrees_with_ott_after_the_cost_conversion(key):
    from ott.geometry import pointcloud
    from ott.solvers import linear

    x = jr.normal(key, (128, 3))
    y = jr.normal(jr.fold_in(key, 1), (96, 3)) + 0.5
    b = jax.nn.softmax(jr.normal(jr.fold_in(key, 2), (96,)))
    ours = ot.entropic_ot(x, y, b=b, epsilon=0.05, threshold=1e-5, max_iterations=5000)
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        geom = pointcloud.PointCloud(x, y, epsilon=0.1)  # ott's cost ‖x−y‖² = 2c: ε_ott = 2ε
        theirs = linear.solve(geom, b=b, threshold=1e-5, max_iterations=5000)
        plan = theirs.matrix
    np.testing.assert_allclose(float(theirs.reg_ot_cost), 2 * float(ours.cost), rtol=1e-4)
    np.testing.assert_allclose(ours.plan(), plan, atol=1e-6)


def test_l1_cost_plan_matches_pot(key):
    import ot as pot

    x = np.asarray(jr.uniform(key, (40, 2)), np.float64)
    y = np.asarray(jr.uniform(jr.fold_in(key, 1), (30, 2)), np.float64)
    with jax.enable_x64(True):
        ours = ot.entropic_ot(
            jnp.asarray(x), jnp.asarray(y), epsilon=0.1, cost="l1", threshold=1e-10, max_iterations=20_000
        )
        # POT's entropy term −H(π) differs from KL(π‖a⊗b) by a constant on Π(a, b): same plan.
        plan = pot.sinkhorn(
            np.full(40, 1 / 40),
            np.full(30, 1 / 30),
            pot.dist(x, y, "cityblock"),
            0.1,
            method="sinkhorn_log",
            stopThr=1e-12,
            numItermax=20_000,
        )
        np.testing.assert_allclose(ours.plan(), plan, atol=1e-8)


def test_divergence_properties(key):
    x = jr.normal(key, (64, 2))
    y = jr.normal(jr.fold_in(key, 1), (80, 2)) * 1.5
    kw = dict(epsilon=0.1, threshold=1e-5)
    s_xy = ot.sinkhorn_divergence(x, y, **kw).value
    s_yx = ot.sinkhorn_divergence(y, x, **kw).value
    assert float(s_xy) > 0
    np.testing.assert_allclose(s_xy, s_yx, rtol=1e-4)
    assert float(ot.sinkhorn_divergence(x, x, **kw).value) == 0.0  # clamped at 0, documented
    perm = jr.permutation(jr.fold_in(key, 2), 80)
    np.testing.assert_allclose(ot.sinkhorn_divergence(x, y[perm], **kw).value, s_xy, rtol=1e-5)


def test_gradient_identity_of_methods_2e1(key, x64):
    # ∇_{x_i} S / a_i = T_self(x_i) − T_{μ→ν}(x_i) and ∇_a S = f_xy − s_μ (METHODS.md §2e.1).
    x = jr.normal(key, (40, 2), dtype=jnp.float64)
    y = jr.normal(jr.fold_in(key, 1), (50, 2), dtype=jnp.float64) + 1.0
    a = jax.nn.softmax(jr.normal(jr.fold_in(key, 2), (40,), dtype=jnp.float64))
    kw = dict(epsilon=0.2, threshold=1e-12, max_iterations=50_000)
    gx, ga = jax.grad(lambda z, w: ot.sinkhorn_divergence(z, y, w, **kw).value, argnums=(0, 1))(x, a)
    d = ot.sinkhorn_divergence(x, y, a, **kw)
    expected = ot.barycentric_map(d.xx) - ot.barycentric_map(d.xy)
    np.testing.assert_allclose(gx / a[:, None], expected, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ga, d.f_xy - d.f_xx, rtol=1e-7, atol=1e-9)


def test_gradient_matches_central_differences(key, x64):
    x = jr.normal(key, (30, 2), dtype=jnp.float64)
    y = jr.normal(jr.fold_in(key, 1), (25, 2), dtype=jnp.float64)
    fn = lambda z: ot.entropic_ot(z, y, epsilon=0.3, threshold=1e-12, max_iterations=50_000).cost  # noqa: E731
    direction = jr.normal(jr.fold_in(key, 2), x.shape, dtype=jnp.float64)
    h = 1e-5
    fd = (fn(x + h * direction) - fn(x - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.sum(jax.grad(fn)(x) * direction), fd, rtol=1e-6)


def test_zero_weight_equals_deleting_the_point(key):
    x = jr.normal(key, (20, 2))
    y = jr.normal(jr.fold_in(key, 1), (15, 2))
    a = jnp.full((20,), 1 / 19).at[7].set(0.0)
    kw = dict(epsilon=0.1, threshold=1e-6)
    padded = ot.sinkhorn_divergence(x, y, a, **kw).value
    deleted = ot.sinkhorn_divergence(jnp.delete(x, 7, axis=0), y, **kw).value
    np.testing.assert_allclose(padded, deleted, rtol=1e-5, atol=1e-7)
    grad = jax.grad(lambda z: ot.sinkhorn_divergence(z, y, a, **kw).value)(x)
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grad[7]).max()) == 0.0  # policy: zero-weight points get zero gradient


def test_duplicates_and_identical_clouds_have_finite_gradients(key):
    x = jr.normal(key, (10, 2))
    xx = jnp.concatenate([x, x])
    grad = jax.grad(lambda z: ot.sinkhorn_divergence(z, xx, epsilon=0.1).value)(xx)
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(grad[:10], grad[10:], atol=1e-6)


def test_vmapped_batch_equals_loop_and_lanes_keep_their_own_counts(key):
    x = jr.normal(key, (64, 3))
    ys = jr.normal(jr.fold_in(key, 1), (6, 64, 3)) * jnp.linspace(0.3, 3.0, 6)[:, None, None]
    batched = jax.jit(jax.vmap(lambda y: ot.entropic_ot(x, y, epsilon=0.05, warn=False)))(ys)
    for i in range(6):
        single = ot.entropic_ot(x, ys[i], epsilon=0.05)
        np.testing.assert_allclose(batched.cost[i], single.cost, rtol=1e-5)
        assert int(batched.num_iters[i]) == int(single.num_iters)
    assert len(set(np.asarray(batched.num_iters).tolist())) > 1  # lanes stopped at different points
    assert bool(jnp.all(batched.converged))


def test_ragged_clouds_by_zero_weight_padding(key):
    x = jr.normal(key, (16, 2))
    sizes = (5, 9, 12)
    ys = jr.normal(jr.fold_in(key, 1), (3, 12, 2))
    bs = jnp.stack([jnp.where(jnp.arange(12) < k, 1.0 / k, 0.0) for k in sizes])
    batched = jax.vmap(lambda y, b: ot.sinkhorn_divergence(x, y, b=b, epsilon=0.1, warn=False).value)(ys, bs)
    for i, k in enumerate(sizes):
        np.testing.assert_allclose(batched[i], ot.sinkhorn_divergence(x, ys[i, :k], epsilon=0.1).value, rtol=1e-4)


@pytest.mark.parametrize("method", ["stabilized", "log"])
def test_both_methods_reach_the_same_fixed_point(key, method, x64):
    x = jr.normal(key, (50, 2), dtype=jnp.float64)
    y = jr.normal(jr.fold_in(key, 1), (40, 2), dtype=jnp.float64) + 0.5
    a = jnp.full((50,), 1 / 49).at[3].set(0.0)  # zero weight in the stabilized path too
    ref = ot.entropic_ot(x, y, a, epsilon=0.05, threshold=1e-11, max_iterations=50_000, method="log")
    res = ot.entropic_ot(x, y, a, epsilon=0.05, threshold=1e-11, max_iterations=50_000, method=method)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-10)
    np.testing.assert_allclose(res.plan(), ref.plan(), atol=1e-10)
    assert bool(jnp.all(jnp.isfinite(res.f)))  # finite potential even at the zero-weight point


def test_method_reaches_the_solver(key):
    # Regression: a reformatted call once dropped `method`, so "log" silently ran "stabilized".
    x = jr.normal(key, (20, 2))
    y = jr.normal(jr.fold_in(key, 1), (30, 2))
    programs = {
        m: str(jax.make_jaxpr(lambda z, m=m: ot.entropic_ot(z, y, epsilon=0.1, method=m, warn=False).cost)(x))
        for m in ("stabilized", "log", "online")
    }
    assert len(set(programs.values())) == 3


def test_warm_start_needs_fewer_iterations(key):
    x = jr.normal(key, (128, 2))
    y = jr.normal(jr.fold_in(key, 1), (128, 2)) + 1.0
    cold = ot.entropic_ot(x, y, epsilon=0.02, threshold=1e-4)
    y2 = y + 0.01 * jr.normal(jr.fold_in(key, 2), y.shape)  # the next step of a flow
    warm = ot.entropic_ot(x, y2, epsilon=0.02, threshold=1e-4, init=(cold.f, cold.g))
    fresh = ot.entropic_ot(x, y2, epsilon=0.02, threshold=1e-4)
    assert int(warm.num_iters) < int(fresh.num_iters) / 2
    np.testing.assert_allclose(warm.cost, fresh.cost, rtol=1e-4)


@pytest.mark.parametrize("eps", [1e-1, 1e-2, 1e-3])
def test_small_epsilon_float32_converges_and_matches_float64(key, eps):
    # NUM-1: with ε-scaling, float32 converges down to ε = 1e-3 and agrees with float64 to 1e-3.
    x = jr.normal(key, (256, 2))
    y = jr.normal(jr.fold_in(key, 1), (256, 2)) + 1.0
    kw = dict(epsilon=eps, epsilon_scaling=0.9, max_iterations=5000)
    d32 = ot.sinkhorn_divergence(x, y, **kw)
    g = jax.grad(lambda z: ot.sinkhorn_divergence(z, y, **kw).value)(x)
    assert bool(d32.converged)
    assert bool(jnp.all(jnp.isfinite(g)))
    with jax.enable_x64(True):
        d64 = ot.sinkhorn_divergence(jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64), **kw)
    np.testing.assert_allclose(float(d32.value), float(d64.value), rtol=1e-3)


def test_non_convergence_is_reported_and_warned(key):
    x = jr.normal(key, (64, 2))
    y = jr.normal(jr.fold_in(key, 1), (64, 2)) * 3
    with pytest.warns(ot.ConvergenceWarning, match="epsilon=0.001"):
        res = ot.entropic_ot(x, y, epsilon=1e-3, max_iterations=20)
    assert not bool(res.converged)
    assert float(res.error) > 1e-3


def test_barycentric_map_at_support_points(key):
    x = jr.normal(key, (12, 2))
    y = jr.normal(jr.fold_in(key, 1), (9, 2))
    res = ot.entropic_ot(x, y, epsilon=0.1, threshold=1e-6)
    plan = res.plan()
    np.testing.assert_allclose(ot.barycentric_map(res), (plan @ y) / res.a[:, None], rtol=1e-4, atol=1e-5)
    assert ot.barycentric_map(res, jnp.zeros((3, 2))).shape == (3, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": jnp.zeros((0, 2))}, "x must hold at least one point"),
        ({"y": jnp.zeros((4, 3))}, "same dimension"),
        ({"a": jnp.array([0.5, 0.6, -0.1, 0.0])}, "a must be finite and >= 0"),
        ({"a": jnp.full((4,), 0.5)}, "a must sum to 1"),
        ({"a": jnp.full((3,), 1 / 3)}, r"a must have shape \(4,\)"),
        ({"x": jnp.full((4, 2), jnp.nan)}, "x must be finite"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": float("inf")}, "epsilon"),
        ({"cost": "cosine"}, "cost must be one of"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"x": jnp.zeros((4, 2)), "y": jnp.ones((5, 2)), "epsilon": 0.1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        ot.entropic_ot(args.pop("x"), args.pop("y"), **args)


def test_online_method_matches_dense_and_never_forms_the_cost_matrix(key):
    x = jr.normal(key, (300, 3))
    y = jr.normal(jr.fold_in(key, 1), (500, 3)) + 0.5
    kw = dict(epsilon=0.05, threshold=1e-5)
    dense = ot.sinkhorn_divergence(x, y, **kw)
    online = ot.sinkhorn_divergence(x, y, method="online", block=64, **kw)
    np.testing.assert_allclose(online.value, dense.value, rtol=1e-5)

    def value(z, method):
        block = {"block": 64} if method == "online" else {}  # the default would fit all 300 rows in one block
        return ot.sinkhorn_divergence(z, y, method=method, **block, **kw).value

    np.testing.assert_allclose(jax.grad(value)(x, "online"), jax.grad(value)(x, "stabilized"), rtol=1e-4, atol=1e-7)
    # Memory bound, checked on the program itself: no (300, 500) array, forward or backward.
    text = str(jax.make_jaxpr(jax.grad(lambda z: value(z, "online")))(x))
    assert "[300,500]" not in text
    assert "[500,300]" not in text
    dense_text = str(jax.make_jaxpr(jax.grad(lambda z: value(z, "stabilized")))(x))
    assert "[300,500]" in dense_text  # the check can see a dense matrix when there is one


def test_scale_invariance_num2(key, x64):
    # Coordinates ×100 with ε ×100²: the same plan. With relative_epsilon the ε need not change.
    x = jr.normal(key, (40, 2), dtype=jnp.float64)
    y = jr.normal(jr.fold_in(key, 1), (30, 2), dtype=jnp.float64) + 1.0
    kw = dict(threshold=1e-10, max_iterations=50_000)
    base = ot.entropic_ot(x, y, epsilon=0.05, **kw).plan()
    scaled = ot.entropic_ot(100 * x, 100 * y, epsilon=0.05 * 100**2, **kw).plan()
    np.testing.assert_allclose(scaled, base, rtol=1e-4, atol=1e-12)
    rel = ot.entropic_ot(x, y, epsilon=0.05, relative_epsilon=True, **kw)
    rel100 = ot.entropic_ot(100 * x, 100 * y, epsilon=0.05, relative_epsilon=True, **kw)
    np.testing.assert_allclose(rel100.plan(), rel.plan(), rtol=1e-4, atol=1e-12)
    mean_cost = float(jnp.mean(ot.cost_matrix(x, y)))
    np.testing.assert_allclose(float(rel.epsilon), 0.05 * mean_cost, rtol=1e-10)
