"""method="online": tiled log-sum-exp Sinkhorn with over-relaxation, against the dense solver.

Tolerances: in float64 both solvers run to an L1 marginal error of 1e-11, so plans, costs and
gauge-fixed potentials agree to ~1e-10 (the identity tolerance of STYLE.md §8). Potentials are
compared after removing the constant κ of (f + κ, g − κ), which leaves the plan unchanged and
which over-relaxation shifts (κ = ⟨a, f_online − f_dense⟩).
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dpflows import ot

TIGHT = dict(threshold=1e-11, max_iterations=50_000)


def _assert_same_solution(res, ref, rtol=1e-10, atol=1e-10):
    np.testing.assert_allclose(res.cost, ref.cost, rtol=rtol)
    np.testing.assert_allclose(res.plan(), ref.plan(), atol=atol)
    kappa = jnp.sum(ref.a * (res.f - ref.f))
    np.testing.assert_allclose(res.f - kappa, ref.f, atol=atol * 10)  # potentials are ~1, plan ~1/(nm)
    np.testing.assert_allclose(res.g + kappa, ref.g, atol=atol * 10)


@pytest.mark.parametrize(
    ("cost", "block"),
    [("sqeuclidean", None), ("sqeuclidean", 7), ("l1", 5)],  # 7, 5: ragged last blocks
)
def test_online_matches_dense_float64(key, x64, cost, block):
    x = jr.normal(key, (50, 2), dtype=jnp.float64)
    y = jr.normal(jr.fold_in(key, 1), (40, 2), dtype=jnp.float64) + 0.5
    a = jnp.full((50,), 1 / 49).at[3].set(0.0)  # a zero-weight point
    kw = dict(epsilon=0.05, cost=cost, **TIGHT)
    ref = ot.entropic_ot(x, y, a, method="log", **kw)
    res = ot.entropic_ot(x, y, a, method="online", block=block, **kw)
    assert bool(res.converged)
    assert bool(ref.converged)
    _assert_same_solution(res, ref)


@pytest.mark.slow
def test_online_across_column_tiles_and_far_from_origin(key, x64):
    # m = 4500 > one tile of 4096 columns: the streaming log-sum-exp joins two tiles (the second
    # one padded). The clouds sit at 1000·1: the online operator centres them, the dense C does not
    # need to (its ½‖x‖² + ½‖y‖² − ⟨x, y⟩ loses ~1e-16·10⁶ = 1e-10, still inside the tolerance).
    x = jr.normal(key, (12, 2), dtype=jnp.float64) + 1000.0
    y = jr.normal(jr.fold_in(key, 1), (4500, 2), dtype=jnp.float64) + 1000.5
    kw = dict(epsilon=0.2, **TIGHT)
    ref = ot.entropic_ot(x, y, method="log", **kw)
    res = ot.entropic_ot(x, y, method="online", **kw)
    assert bool(res.converged)
    _assert_same_solution(res, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_online_divergence_and_gradients_match_dense_float64(key, x64):
    x = jr.normal(key, (30, 3), dtype=jnp.float64)
    y = jr.normal(jr.fold_in(key, 1), (25, 3), dtype=jnp.float64) + 0.5
    kw = dict(epsilon=0.1, **TIGHT)

    def value(z, method, **extra):
        return ot.sinkhorn_divergence(z, y, method=method, **extra, **kw).value

    np.testing.assert_allclose(value(x, "online", block=8), value(x, "stabilized"), rtol=1e-10)
    # Envelope-theorem gradients: potentials held fixed, so they agree to the solve's accuracy.
    np.testing.assert_allclose(
        jax.grad(value)(x, "online", block=8), jax.grad(value)(x, "stabilized"), rtol=1e-8, atol=1e-10
    )


@pytest.mark.slow
def test_online_self_and_batched_divergences_match_dense(key):
    x = jr.normal(key, (40, 2))
    ys = jr.normal(jr.fold_in(key, 1), (3, 30, 2)) + jnp.arange(3.0)[:, None, None]
    kw = dict(epsilon=0.1, threshold=1e-5)
    b_on = ot.sinkhorn_divergences(x, ys, method="online", block=16, **kw)  # 3 vmapped lanes
    b_de = ot.sinkhorn_divergences(x, ys, **kw)
    np.testing.assert_allclose(b_on.xx.cost, b_de.xx.cost, rtol=1e-5)  # the self problem: float32 identity
    np.testing.assert_allclose(b_on.value, b_de.value, rtol=1e-4, atol=1e-6)  # values ~1, marginals to 1e-5


@pytest.mark.slow
def test_online_with_epsilon_scaling_matches_dense(key, x64):
    x = jr.normal(key, (40, 2), dtype=jnp.float64)
    y = jr.normal(jr.fold_in(key, 1), (30, 2), dtype=jnp.float64) + 1.0
    kw = dict(epsilon=0.05, epsilon_scaling=0.7, **TIGHT)
    ref = ot.entropic_ot(x, y, method="log", **kw)
    res = ot.entropic_ot(x, y, method="online", **kw)
    assert bool(res.converged)
    _assert_same_solution(res, ref, rtol=1e-9, atol=1e-9)


def test_over_relaxation_cuts_iterations_at_small_epsilon(key):
    # ε = 0.01 on unit-scale clouds: plain Sinkhorn (method="log") needs hundreds of iterations;
    # the online path's ω = 2/(1 + √(1 − ρ)) needs a fraction of them and stops at the same plan.
    x = jr.normal(key, (200, 2))
    y = jr.normal(jr.fold_in(key, 1), (200, 2)) + 0.5
    kw = dict(epsilon=0.01, threshold=1e-3, max_iterations=5000)
    plain = ot.entropic_ot(x, y, method="log", **kw)
    relaxed = ot.entropic_ot(x, y, method="online", **kw)
    assert bool(plain.converged)
    assert bool(relaxed.converged)
    assert int(relaxed.num_iters) <= int(plain.num_iters) // 2
    np.testing.assert_allclose(relaxed.cost, plain.cost, rtol=1e-4)  # both within the 1e-3 marginal error


@pytest.mark.slow
def test_over_relaxation_is_safe_where_a_fixed_omega_diverges(key):
    # The benchmark's d = 64 clouds at ε = 0.01: a fixed ω = 1.8 never converged there (3000
    # iterations); the measured ρ gives ω ≈ 1.5 and the solve converges like the dense one.
    x = jr.normal(key, (300, 64)) / 8.0
    y = jr.normal(jr.fold_in(key, 1), (300, 64)) / 8.0 + 0.5
    kw = dict(epsilon=0.01, threshold=1e-3, max_iterations=2000)
    dense = ot.entropic_ot(x, y, **kw)
    online = ot.entropic_ot(x, y, method="online", **kw)
    assert bool(online.converged)
    assert int(online.num_iters) <= int(dense.num_iters)
    np.testing.assert_allclose(online.cost, dense.cost, rtol=1e-5)


def test_online_memory_is_bounded_by_the_tile_forward_and_backward(key):
    # Traced only (make_jaxpr): the program of the gradient holds no (n, m) or (m, n) array.
    y = jr.normal(jr.fold_in(key, 1), (20_000, 2))
    x = jr.normal(key, (100, 2))

    def value(z):
        return ot.entropic_ot(z, y, epsilon=0.1, method="online", warn=False).cost

    text = str(jax.make_jaxpr(jax.grad(value))(x))
    assert "[100,20000]" not in text
    assert "[20000,100]" not in text
    assert ",4096]" in text  # the check can see the column tiles it bounds the blocks by


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "online", "block": 0}, ValueError, "block must be >= 1"),
        ({"method": "online", "block": 2.5}, TypeError, "block"),  # beartype or _validate, both name it
        ({"block": 64}, ValueError, "block sets the rows per block of method='online'"),
    ],
)
def test_bad_block(kwargs, error, match):
    with pytest.raises(error, match=match):
        ot.entropic_ot(jnp.zeros((4, 2)), jnp.ones((5, 2)), epsilon=0.1, **kwargs)
