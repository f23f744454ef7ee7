import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import Particles, resample
from dpflows.particles import systematic_indices


def test_uniform_fields_and_helpers():
    x = jnp.arange(10.0).reshape(5, 2)
    p = Particles.uniform(x)
    assert p.num_particles == 5
    assert p.event_shape == (2,)
    np.testing.assert_allclose(p.weights, np.full(5, 0.2), rtol=1e-6)
    np.testing.assert_allclose(p.ess(), 5.0, rtol=1e-6)
    assert p.v.shape == x.shape
    assert float(jnp.abs(p.v).max()) == 0.0
    assert p.t.shape == ()
    assert p.aux is None
    np.testing.assert_allclose(p.mean(), x.mean(0), rtol=1e-6)


def test_ess_and_normalised():
    logw = jnp.log(jnp.array([0.5, 0.25, 0.25]))
    p = Particles.create(jnp.zeros((3, 1)), logw)
    np.testing.assert_allclose(p.ess(), 1 / (0.25 + 0.0625 + 0.0625), rtol=1e-6)
    shifted = Particles(x=p.x, logw=p.logw + 3.0, v=p.v, t=p.t)
    np.testing.assert_allclose(shifted.normalised().weights, p.weights, rtol=1e-6)
    np.testing.assert_allclose(shifted.ess(), p.ess(), rtol=1e-5)  # ESS is scale-free


def test_matrix_particles():
    p = Particles.uniform(jnp.ones((4, 3, 2)))
    assert p.event_shape == (3, 2)
    assert p.v.shape == (4, 3, 2)
    with pytest.raises(ValueError, match="covariance needs vector particles"):
        p.covariance()


def test_covariance_weighted():
    x = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    w = jnp.array([0.5, 0.25, 0.25])
    p = Particles.from_weights(x, w)
    xm = np.asarray(x)
    mean = (np.asarray(w)[:, None] * xm).sum(0)
    cov = ((xm - mean).T * np.asarray(w)) @ (xm - mean)
    np.testing.assert_allclose(p.covariance(), cov, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": jnp.zeros((0, 2))}, "at least one particle"),
        ({"x": jnp.zeros(())}, "at least 1 dimensions"),
        ({"x": jnp.array([[0.0], [jnp.nan]])}, "x must be finite"),
        ({"x": jnp.array([[0.0], [jnp.inf]])}, "x must be finite"),
        ({"x": jnp.zeros((3, 2)), "logw": jnp.zeros(3)}, "logw must be normalised"),
        ({"x": jnp.zeros((3, 2)), "logw": jnp.zeros(4)}, r"logw must have shape \(n,\)"),
        ({"x": jnp.zeros((2, 2)), "logw": jnp.array([0.0, jnp.nan])}, "logw must not contain NaN"),
        ({"x": jnp.zeros((3, 2)), "v": jnp.zeros((3, 1))}, "v must have the shape of x"),
        ({"x": jnp.zeros((3, 2)), "v": jnp.full((3, 2), jnp.nan)}, "v must be finite"),
    ],
)
def test_create_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Particles.create(**kwargs)


def test_create_rejects_non_numeric():
    with pytest.raises(TypeError, match="x must be a numeric array"):
        Particles.create(np.array([["a"], ["b"]]))


def test_weights_validation():
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        Particles.from_weights(jnp.zeros((2, 1)), jnp.array([1.5, -0.5]))
    with pytest.raises(ValueError, match="Σ = 2"):
        Particles.from_weights(jnp.zeros((2, 1)), jnp.array([1.0, 1.0]))
    p = Particles.create(jnp.zeros((2, 1)), jnp.zeros(2), normalise=True)
    np.testing.assert_allclose(p.weights, [0.5, 0.5], rtol=1e-6)
    # Zero weights are allowed (padding of ragged clouds).
    p = Particles.from_weights(jnp.zeros((3, 1)), jnp.array([0.5, 0.5, 0.0]))
    assert float(p.weights[2]) == 0.0


def test_direct_construction_checks_shapes():
    # Under the test suite's jaxtyping hook the annotation check fires first (a TypeError);
    # without it, __check_init__ raises ValueError. Both name the argument.
    with pytest.raises((ValueError, TypeError), match="logw"):
        Particles(x=jnp.zeros((3, 2)), logw=jnp.zeros(2), v=jnp.zeros((3, 2)), t=jnp.zeros(()))
    with pytest.raises((ValueError, TypeError), match=r"\bt\b"):
        Particles(x=jnp.zeros((3, 2)), logw=jnp.zeros(3), v=jnp.zeros((3, 2)), t=jnp.zeros(2))


def test_integer_positions_become_float():
    p = Particles.uniform(np.arange(4).reshape(2, 2))
    assert jnp.issubdtype(p.x.dtype, jnp.floating)


def test_resample_is_unbiased_for_weighted_means(key):
    # E[(1/n) Σⱼ f(x_{Aⱼ})] = Σᵢ wᵢ f(xᵢ): average over R independent resamplings and compare
    # with the exact weighted mean within 5 standard errors computed from the replicates.
    n, reps = 50, 4000
    k_x, k_w, k_r = jr.split(key, 3)
    x = jr.normal(k_x, (n, 2))
    w = jnp.exp(2.0 * jr.normal(k_w, (n,)))  # skewed weights (dirichlet sampling compiles slowly)
    p = Particles.from_weights(x, w / w.sum())
    f = lambda z: jnp.stack([z[:, 0], z[:, 1] ** 2, jnp.sin(3 * z[:, 0])], axis=-1)  # noqa: E731
    exact = p.weights @ f(p.x)
    means = jax.jit(jax.vmap(lambda k: f(resample(k, p).x).mean(0)))(jr.split(k_r, reps))
    se = means.std(0) / np.sqrt(reps)
    assert np.all(np.abs(means.mean(0) - exact) < 5 * se + 1e-7), (means.mean(0), exact, se)


def test_resample_copy_counts_are_floor_or_ceil(key):
    # Systematic resampling copies particle i either ⌊n wᵢ⌋ or ⌈n wᵢ⌉ times.
    n = 40
    w = jr.uniform(key, (n,))
    w = w / w.sum()
    all_idx = jax.jit(jax.vmap(systematic_indices, in_axes=(0, None)))(jr.split(jr.fold_in(key, 1), 20), w)
    for idx in np.asarray(all_idx):
        counts = np.bincount(idx, minlength=n)
        nw = n * np.asarray(w)
        # float32 cumulative sums may move a boundary by one ulp: allow |count − n wᵢ| < 1 + 1e-4.
        assert np.all(np.abs(counts - nw) < 1 + 1e-4), counts
        assert counts.sum() == n


def test_resample_output_and_passthrough(key):
    logw = jnp.log(jnp.array([0.0, 0.0, 1.0, 0.0]))
    p = Particles.create(jnp.arange(8.0).reshape(4, 2), logw, v=jnp.ones((4, 2)), t=2.5, aux={"a": jnp.ones(3)})
    r = resample(key, p)
    np.testing.assert_array_equal(r.x, jnp.tile(jnp.array([[4.0, 5.0]]), (4, 1)))
    np.testing.assert_allclose(r.weights, np.full(4, 0.25), rtol=1e-6)
    assert float(r.t) == 2.5
    assert r.aux is p.aux
    jitted = jax.jit(resample)(key, p)
    np.testing.assert_array_equal(jitted.x, r.x)


def test_particles_is_a_pytree_that_vmaps():
    x = jnp.arange(24.0).reshape(2, 6, 2)
    batched = jax.vmap(Particles.uniform)(x)
    assert batched.x.shape == (2, 6, 2)
    assert batched.logw.shape == (2, 6)
    ess = jax.vmap(lambda p: p.ess())(batched)
    np.testing.assert_allclose(ess, [6.0, 6.0], rtol=1e-6)


def test_public_names():
    for name in ("Particles", "resample", "AbstractFlow", "run", "sweep", "stack", "Trace"):
        assert hasattr(dpflows, name)
    assert set(dpflows.__all__) >= {"Particles", "run", "sweep", "stack", "Trace", "resample"}
