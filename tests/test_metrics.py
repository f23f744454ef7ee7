import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dpflows.metrics import gaussian_fit, gaussian_kl


def _kl_numpy(m0, c0, m1, c1):
    d = len(m0)
    inv1 = np.linalg.inv(c1)
    diff = m1 - m0
    return 0.5 * (np.trace(inv1 @ c0) + diff @ inv1 @ diff - d + np.log(np.linalg.det(c1) / np.linalg.det(c0)))


def test_gaussian_kl_matches_the_textbook_formula(x64):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    c0, c1 = a @ a.T + np.eye(3), b @ b.T + 0.5 * np.eye(3)
    m0, m1 = rng.normal(size=3), rng.normal(size=3)
    got = gaussian_kl(*(jnp.asarray(v) for v in (m0, c0, m1, c1)))
    np.testing.assert_allclose(got, _kl_numpy(m0, c0, m1, c1), rtol=1e-10)
    np.testing.assert_allclose(
        gaussian_kl(jnp.asarray(m0), jnp.asarray(c0), jnp.asarray(m0), jnp.asarray(c0)), 0.0, atol=1e-12
    )


def test_gaussian_kl_against_monte_carlo(key, x64):
    # KL(p‖q) = E_p[log p − log q]; MC estimate within 5 standard errors.
    m0, c0 = jnp.array([0.0, 1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]])
    m1, c1 = jnp.array([0.5, 0.0]), jnp.array([[2.0, 0.0], [0.0, 1.0]])
    x = jr.multivariate_normal(key, m0, c0, (200_000,), dtype=jnp.float64)
    # vmap over points: jax's logpdf broadcasts (n, d) against (d,), which strict rank rules refuse.
    logpdf = jax.vmap(jax.scipy.stats.multivariate_normal.logpdf, in_axes=(0, None, None))
    logp, logq = logpdf(x, m0, c0), logpdf(x, m1, c1)
    r = np.asarray(logp - logq)
    assert abs(r.mean() - float(gaussian_kl(m0, c0, m1, c1))) < 5 * r.std() / np.sqrt(r.size)


def test_gaussian_fit_weighted():
    x = jnp.array([[0.0, 0.0], [2.0, 2.0]])
    mean, cov = gaussian_fit(x, jnp.array([0.75, 0.25]))
    np.testing.assert_allclose(mean, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(cov, 0.75 * 0.25 * 4 * np.ones((2, 2)), rtol=1e-6)


def test_sample_metrics_on_known_answers():
    import numpy as np

    from dpflows import data, metrics

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    shift = np.array([0.3, -0.4])
    assert metrics.wasserstein2(x, x + shift) == pytest.approx(0.5, rel=1e-7)  # a translation is optimal
    assert metrics.wasserstein2(x, x[::-1]) == pytest.approx(0.0, abs=1e-6)
    y = rng.normal(size=(200, 2))
    assert abs(metrics.mmd(x, y)) < 0.05 < metrics.mmd(x, y + 1.0)
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert metrics.energy_distance(x, y + 1.0) > 0.3
    centers = np.asarray(data.eight_gaussians_centers())
    cov = metrics.mode_coverage(np.repeat(centers, 10, axis=0), centers, radius=0.1)
    assert cov == {"coverage": 1.0, "off_mode": 0.0, "share_error": 0.0}
    half = metrics.mode_coverage(
        np.concatenate([np.repeat(centers[:4], 10, 0), np.zeros((40, 2))]), centers, radius=0.1
    )
    assert half["coverage"] == 0.5
    assert half["off_mode"] == 0.5
    with pytest.raises(ValueError, match="equal size"):
        metrics.wasserstein2(x, y[:10])
    with pytest.raises(ValueError, match="finite"):
        metrics.mmd(np.full((3, 2), np.nan), y)
