import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows.langevin import ULA, check_potential, ornstein_uhlenbeck_law, ula_gaussian_law, ula_move
from dpflows.potentials import GaussianPotential
from helpers import gaussian_target, quadratic_bowl


def _moment_z_scores(x, mean, cov):
    """z-scores of the sample mean and covariance entries of x against exact Gaussian moments.

    SE(mean_i) = √(Σ_ii/n); SE(cov_ij) = √((Σ_ii Σ_jj + Σ_ij²)/n) for Gaussian samples.
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    z_mean = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    var = np.diag(cov)
    se_cov = np.sqrt((np.outer(var, var) + cov**2) / n)
    z_cov = (np.cov(x.T, bias=True) - cov) / se_cov
    return z_mean, z_cov


def test_ula_particles_follow_the_exact_discrete_law(key):
    # ULA on a Gaussian target has a Gaussian law with closed-form moments at every step, so the
    # particles must match it up to Monte-Carlo error alone (5 standard errors).
    target = gaussian_target()
    flow = ULA(target, step_size=0.05)
    n, k = 20000, 40
    x0 = 0.5 * jr.normal(jr.fold_in(key, 1), (n, 2))
    final, trace = dpflows.run(flow, flow.init(x0), key, k)
    mean, cov = ula_gaussian_law(jnp.zeros(2), 0.25 * jnp.eye(2), target.mean, target.precision, 0.05, k)
    z_mean, z_cov = _moment_z_scores(final.x, mean, cov)
    assert np.all(np.abs(z_mean) < 5), z_mean
    assert np.all(np.abs(z_cov) < 5), z_cov
    np.testing.assert_allclose(final.t, k * 0.05, rtol=1e-5)


def test_ula_law_closed_form_equals_recursion(x64):
    target = gaussian_target(dtype=jnp.float64)
    p, m = np.asarray(target.precision), np.asarray(target.mean)
    h, k = 0.07, 37
    mean, cov = np.array([2.0, -1.0]), np.array([[0.5, 0.1], [0.1, 0.3]])
    b = np.eye(2) - h * p
    mean_k, cov_k = mean.copy(), cov.copy()
    for _ in range(k):  # x' = Bx + hPm + √(2h)ξ
        mean_k = b @ mean_k + h * p @ m
        cov_k = b @ cov_k @ b.T + 2 * h * np.eye(2)
    got_mean, got_cov = ula_gaussian_law(jnp.asarray(mean), jnp.asarray(cov), target.mean, target.precision, h, k)
    np.testing.assert_allclose(got_mean, mean_k, rtol=1e-10)
    np.testing.assert_allclose(got_cov, cov_k, rtol=1e-10)


def test_ou_law_solves_its_moment_odes(x64):
    # d mean/dt = −P(mean − m),  dΣ/dt = −PΣ − ΣP + 2I; checked by central differences.
    target = gaussian_target(dtype=jnp.float64)
    p, m = target.precision, target.mean
    m0, s0 = jnp.array([2.0, -1.0]), jnp.array([[0.5, 0.1], [0.1, 0.3]])
    law = lambda t: ornstein_uhlenbeck_law(m0, s0, m, p, t)  # noqa: E731
    t, dt = 0.7, 1e-5
    (mp, cp), (mm, cm), (mt, ct) = law(t + dt), law(t - dt), law(t)
    np.testing.assert_allclose((mp - mm) / (2 * dt), -p @ (mt - m), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose((cp - cm) / (2 * dt), -p @ ct - ct @ p + 2 * jnp.eye(2), rtol=1e-6, atol=1e-8)
    m_0, c_0 = law(0.0)
    np.testing.assert_allclose(m_0, m0, rtol=1e-12)
    np.testing.assert_allclose(c_0, s0, rtol=1e-12)
    m_inf, c_inf = law(200.0)
    np.testing.assert_allclose(m_inf, m, rtol=1e-10)
    np.testing.assert_allclose(c_inf, jnp.linalg.inv(p), rtol=1e-10)


def test_ula_bias_is_first_order_in_the_step_size(x64):
    # ‖law_ULA(T/h) − law_OU(T)‖ = O(h): halving h halves the error (ratio → 2).
    target = gaussian_target(dtype=jnp.float64)
    m0, s0, big_t = jnp.array([2.0, -1.0]), 0.2 * jnp.eye(2), 1.0
    ou_m, ou_c = ornstein_uhlenbeck_law(m0, s0, target.mean, target.precision, big_t)
    errors = []
    for h in (0.02, 0.01, 0.005):
        um, uc = ula_gaussian_law(m0, s0, target.mean, target.precision, h, round(big_t / h))
        errors.append(float(jnp.linalg.norm(um - ou_m) + jnp.linalg.norm(uc - ou_c)))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.05)


def test_ula_particles_track_the_ou_law_within_mc_and_bias(key):
    # Against the continuous law the particles may deviate by Monte-Carlo error plus the exact
    # O(h) bias (computed from the closed forms), and no more.
    target = gaussian_target()
    h, k, n = 0.01, 100, 20000
    flow = ULA(target, step_size=h)
    x0 = 1.0 + 0.3 * jr.normal(jr.fold_in(key, 2), (n, 2))
    final, _ = dpflows.run(flow, flow.init(x0), key, k)
    m0, s0 = jnp.ones(2), 0.09 * jnp.eye(2)
    ou_m, ou_c = ornstein_uhlenbeck_law(m0, s0, target.mean, target.precision, h * k)
    ula_m, _ = ula_gaussian_law(m0, s0, target.mean, target.precision, h, k)
    bias = np.abs(np.asarray(ula_m - ou_m))
    se = np.sqrt(np.diag(np.asarray(ou_c)) / n)
    assert np.all(np.abs(np.asarray(final.x.mean(0) - ou_m)) < 5 * se + bias)


def _gauss_autodiff(x):
    # Same V as helpers.gaussian_target, but without the closed-form grad method.
    return gaussian_target()(x)


def test_gradient_paths_agree(key):
    target = gaussian_target()
    x0 = jr.normal(key, (64, 2))
    runs = [
        ULA(target, step_size=0.05),  # the potential's closed-form grad
        ULA(_gauss_autodiff, step_size=0.05),  # autodiff
        ULA(_gauss_autodiff, step_size=0.05, grad_potential=target.grad),  # user-supplied gradient
    ]
    outs = [dpflows.run(f, f.init(x0), key, 30)[0].x for f in runs]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)


def test_energy_info_is_the_weighted_potential_at_step_start(key):
    flow = ULA(quadratic_bowl, step_size=0.01)
    state = flow.init(jr.normal(key, (10, 3)))
    _, info = flow.step(state, key)
    expected = jnp.sum(state.weights * jax.vmap(quadratic_bowl)(state.x))
    np.testing.assert_allclose(info["energy"], expected, rtol=1e-6)


def test_record_energy_off_gives_the_same_path(key):
    x0 = jr.normal(key, (16, 2))
    on = ULA(gaussian_target(), step_size=0.05)
    off = ULA(gaussian_target(), step_size=0.05, record_energy=False)
    a, ta = dpflows.run(on, on.init(x0), key, 10)
    b, tb = dpflows.run(off, off.init(x0), key, 10)
    # Same noise and maths; XLA fuses differently without the reduction, so round-off only.
    np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-6)
    assert "energy" in ta.info
    assert tb.info == {}


def test_ula_is_differentiable_in_step_size(key, x64):
    # d/dh of the final mean along a fixed noise path, against central differences (float64).
    target = gaussian_target(dtype=jnp.float64)
    x0 = jr.normal(key, (32, 2), dtype=jnp.float64)

    def final_mean(h):
        flow = ULA(target, step_size=h)
        return dpflows.run(flow, flow.init(x0), key, 20)[0].x.mean()

    h, eps = 0.03, 1e-6
    grad = jax.grad(final_mean)(jnp.float64(h))
    fd = (final_mean(jnp.float64(h + eps)) - final_mean(jnp.float64(h - eps))) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_step_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        ULA(quadratic_bowl, step_size=bad)


def test_stacked_step_sizes_checked_elementwise():
    with pytest.raises(ValueError, match="step_size"):
        ULA(quadratic_bowl, step_size=jnp.array([0.1, -0.1]))


def test_potential_must_be_callable():
    with pytest.raises(TypeError, match="potential"):  # named by jaxtyping in tests, by us otherwise
        ULA(3.0, step_size=0.1)


def test_gaussian_potential_validation():
    with pytest.raises(ValueError, match="precision must be positive definite"):
        GaussianPotential(jnp.zeros(2), jnp.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="precision must be symmetric"):
        GaussianPotential(jnp.zeros(2), jnp.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"precision must have shape \(2, 2\)"):
        GaussianPotential(jnp.zeros(2), jnp.eye(3))
    g = GaussianPotential.from_covariance(jnp.zeros(2), 4 * jnp.eye(2))
    np.testing.assert_allclose(g.precision, 0.25 * np.eye(2), rtol=1e-6)
    x = jnp.array([0.3, -1.2])
    np.testing.assert_allclose(g.grad(x), jax.grad(g)(x), rtol=1e-6)


# ----------------------------------------------------------------------- the shared move, shapes
def test_ula_step_is_ula_move(key):
    flow = ULA(gaussian_target(), step_size=0.05)
    state = flow.init(jr.normal(key, (16, 2)))
    new, _ = flow.step(state, key)
    _, grad = jax.vmap(gaussian_target().value_and_grad)(state.x)
    np.testing.assert_array_equal(new.x, ula_move(state.x, grad, 0.05, key))


def test_ula_move_temperature_scales_the_noise(key):
    x = jnp.zeros((20000, 1))
    for temperature in (0.0, 0.25, 4.0):
        out = ula_move(x, x, 0.5, key, temperature=temperature)
        # Var = 2hT = T; 5 standard errors of a variance estimate: 5·√(2/n)·T.
        assert abs(float(jnp.var(out)) - temperature) <= 5 * np.sqrt(2 / x.shape[0]) * temperature + 1e-12
    with pytest.raises(ValueError, match="grad must have the shape of x"):
        ula_move(x, x[:, :0], 0.5, key)


def test_dimension_mismatch_is_an_error_naming_the_shapes(key):
    flow = ULA(GaussianPotential(jnp.zeros(3), jnp.eye(3)), step_size=0.1)
    state = flow.init(jnp.zeros((8, 2)))
    with pytest.raises(ValueError, match=r"the particles x have shape \(8, 2\).*\(2,\)"):
        dpflows.run(flow, state, key, 2)
    bad_grad = ULA(quadratic_bowl, step_size=0.1, grad_potential=lambda p: jnp.zeros(3))
    with pytest.raises(ValueError, match=r"grad_potential must return shape \(2,\)"):
        bad_grad.step(bad_grad.init(jnp.zeros((8, 2))), key)
    with pytest.raises(ValueError, match="must return shape"):
        check_potential(lambda p: p, jnp.zeros((8, 2)))  # not a scalar
