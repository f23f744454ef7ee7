import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dpflows import ot


def test_random_directions_are_unit_vectors(key):
    theta = ot.random_directions(key, 5, 300)
    assert theta.shape == (300, 5)
    np.testing.assert_allclose(jnp.linalg.norm(theta, axis=1), 1.0, rtol=1e-6)
    # Uniform on the sphere: E[θθᵀ] = I/d, within 5 SE (SE of an entry ≈ √(2/(d(d+2)k)) for diagonals).
    second = np.asarray(theta.T @ theta / 300)
    assert np.all(np.abs(np.diag(second) - 0.2) < 5 * np.sqrt(2 / (5 * 7 * 300)))


def test_sliced_equals_pot_squared_on_the_same_projections(key):
    import ot as pot

    x = np.asarray(jr.normal(key, (200, 3)), np.float64)
    y = np.asarray(jr.normal(jr.fold_in(key, 1), (150, 3)) + 0.7, np.float64)
    a = np.asarray(jnp.exp(jr.normal(jr.fold_in(key, 2), (200,))), np.float64)  # dirichlet compiles slowly
    theta = np.asarray(ot.random_directions(jr.fold_in(key, 3), 3, 50), np.float64)
    import jax

    with jax.enable_x64(True):
        ours = float(
            ot.sliced_wasserstein(
                jnp.asarray(x), jnp.asarray(y), directions=jnp.asarray(theta), a=jnp.asarray(a / a.sum())
            )
        )
    theirs = pot.sliced_wasserstein_distance(x, y, a / a.sum(), np.full(150, 1 / 150), projections=theta.T)
    np.testing.assert_allclose(ours, theirs**2, rtol=1e-10)


def test_quantile_map_is_exact_for_equal_sizes(key):
    u = jr.normal(key, (4, 100))
    v = jr.normal(jr.fold_in(key, 1), (4, 100)) * 2 + 1
    t = ot.quantile_map(u, v)
    # The i-th smallest u goes to the i-th smallest v: the 1-D optimal map between empirical laws.
    order = jnp.argsort(u, axis=-1)
    np.testing.assert_allclose(jnp.take_along_axis(t, order, -1), jnp.sort(v, axis=-1), rtol=1e-6)


def test_quantile_map_on_a_percentile_grid_approximates_the_exact_map(key):
    u = jr.normal(key, (2, 2000))
    v = jr.normal(jr.fold_in(key, 1), (2, 2000)) * 0.5 + 3
    exact = ot.quantile_map(u, v)
    grid = ot.quantile_map(u, v, num_quantiles=200)
    # Away from the extreme tails the interpolated tables agree with the exact map.
    inner = jnp.abs(u) < 2.0
    assert float(jnp.max(jnp.where(inner, jnp.abs(grid - exact), 0.0))) < 0.05


def test_sliced_input_errors(key):
    with pytest.raises(ValueError, match="directions must have shape"):
        ot.sliced_wasserstein(jnp.zeros((3, 2)), jnp.zeros((3, 2)), directions=jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="k must be >= 1"):
        ot.random_directions(key, 3, 0)
