"""METHODS.md §5e: the noise-matched entropic cost is minimised by the clean law (closed forms, grids, rates)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from dpflows import ot


def _ot1(a, b, eps):
    """Closed-form OT_ε between centred 1-D Gaussians of variances a, b (cost ½(x−y)²)."""
    return float(ot.gaussian_entropic_ot(jnp.zeros(1), jnp.eye(1) * a, jnp.zeros(1), jnp.eye(1) * b, epsilon=eps))


def _divergence1(a, b, eps):
    return _ot1(a, b, eps) - 0.5 * _ot1(a, a, eps) - 0.5 * _ot1(b, b, eps)


def _argmin(fn):
    return minimize_scalar(fn, bounds=(1e-4, 10.0), method="bounded", options={"xatol": 1e-10}).x


def test_closed_form_matches_the_scalar_minimisation_over_the_correlation(x64):
    # cost (x−y)², regulariser λ·KL: min_r a + b − 2r√(ab) − (λ/2) log(1 − r²); ours halves it with ε = λ/2.
    for a, b, lam in [(1.3, 0.7, 0.8), (0.2, 2.0, 0.05), (1.0, 1.0, 4.0)]:
        r = minimize_scalar(
            lambda r, a=a, b=b, lam=lam: a + b - 2 * r * np.sqrt(a * b) - lam / 2 * np.log(1 - r * r),
            bounds=(0.0, 1 - 1e-13),
            method="bounded",
            options={"xatol": 1e-13},
        )
        assert _ot1(a, b, lam / 2) == pytest.approx(r.fun / 2, rel=1e-9, abs=1e-12)


def test_closed_form_matches_sinkhorn_on_a_grid(x64):
    # An independent check: discretise two 1-D Gaussians on a fine grid and run Sinkhorn.
    g = jnp.linspace(-8.0, 8.0, 1601)[:, None]
    a_var, b_var, m_b, eps = 0.7, 1.6, 0.4, 0.3

    def hist(m, v):
        w = jnp.exp(-((g[:, 0] - m) ** 2) / (2 * v))
        return w / jnp.sum(w)

    res = ot.entropic_ot(g, g, hist(0.0, a_var), hist(m_b, b_var), epsilon=eps, threshold=1e-9, max_iterations=5000)
    closed = ot.gaussian_entropic_ot(
        jnp.zeros(1), jnp.eye(1) * a_var, jnp.full(1, m_b), jnp.eye(1) * b_var, epsilon=eps
    )
    assert float(res.cost) == pytest.approx(float(closed), rel=1e-4)


@pytest.mark.parametrize(("clean", "noise"), [(1.0, 0.5), (2.0, 1.0), (0.3, 0.7)])
def test_1d_variance_table(x64, clean, noise):
    """METHODS §5e(1), exact: the matched cost recovers the clean variance, the divergence the noisy one."""
    noisy = clean + noise
    matched = _argmin(lambda a: _ot1(a, noisy, noise))  # ε = σ² for c = ½(x−y)²  (λ = 2σ² for (x−y)²)
    divergence = _argmin(lambda a: _divergence1(a, noisy, noise))
    assert matched == pytest.approx(clean, abs=1e-6)
    assert divergence == pytest.approx(noisy, abs=1e-5)


def test_1d_mismatched_epsilon_is_monotone(x64):
    """METHODS §5e(3): ε < σ² leaves residual noise, ε > σ² over-shrinks; the argmin falls with ε."""
    clean, noise = 1.0, 0.5
    eps = np.array([0.1, 0.25, 0.5, 1.0, 2.0]) * noise * 2
    argmins = np.array([_argmin(lambda a, e=e: _ot1(a, clean + noise, e)) for e in eps])
    assert np.all(np.diff(argmins) < 0)
    assert argmins[2] == pytest.approx(clean, abs=1e-6)  # ε = σ²
    assert argmins[0] > clean + 0.3 * noise
    assert argmins[-1] < clean - 0.2


def _chol_params(m, cov):
    lower = np.linalg.cholesky(cov)
    return np.concatenate([m, lower[np.tril_indices(len(m))]])


def _unpack(p, d):
    m = p[:d]
    lower = jnp.zeros((d, d)).at[jnp.tril_indices(d)].set(p[d:])
    return m, lower @ lower.T


@pytest.mark.parametrize("loss", ["matched", "divergence"])
def test_d_dimensional_gaussian_model_recovers_the_clean_moments(x64, loss):
    """METHODS §5e(2): optimising N(m, Σ) against N(m*, Σ* + σ²I) with ε = σ² returns (m*, Σ*)."""
    d, sigma2 = 3, 0.4
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    cov_clean = q @ np.diag([1.5, 0.6, 0.2]) @ q.T
    m_clean = np.array([0.5, -1.0, 0.25])
    cov_noisy = jnp.asarray(cov_clean + sigma2 * np.eye(d))

    def objective(p):
        m, cov = _unpack(p, d)
        value = ot.gaussian_entropic_ot(m, cov, jnp.asarray(m_clean), cov_noisy, epsilon=sigma2)
        if loss == "divergence":
            value = (
                value
                - 0.5 * ot.gaussian_entropic_ot(m, cov, m, cov, epsilon=sigma2)
                - 0.5
                * ot.gaussian_entropic_ot(
                    jnp.asarray(m_clean), cov_noisy, jnp.asarray(m_clean), cov_noisy, epsilon=sigma2
                )
            )
        return value

    fun = jax.jit(jax.value_and_grad(objective))
    p0 = _chol_params(np.zeros(d), np.eye(d))
    res = minimize(
        lambda p: tuple(np.asarray(v) for v in fun(jnp.asarray(p))),
        p0,
        jac=True,
        method="BFGS",
        options={"gtol": 1e-11},
    )
    m, cov = (np.asarray(v) for v in _unpack(jnp.asarray(res.x), d))
    np.testing.assert_allclose(m, m_clean, atol=1e-5)
    target = cov_clean if loss == "matched" else np.asarray(cov_noisy)
    np.testing.assert_allclose(cov, target, atol=1e-5)


def test_laplace_l1_on_a_grid_recovers_a_bimodal_clean_law(x64):
    """METHODS §5e(4): cost |x−y|, ε = b; a histogram model trained on X + Laplace(b) finds the clean law.

    The model is a free histogram on the grid, trained by mirror descent with ∂OT/∂aᵢ = fᵢ (the
    potential; exact Sinkhorn, no LP).
    """
    h, b = 0.05, 0.5
    g = np.arange(-7.0, 7.0 + 1e-9, h)
    clean = np.exp(-((g - 1.5) ** 2) / (2 * 0.3**2)) + 0.6 * np.exp(-((g + 1.5) ** 2) / (2 * 0.3**2))
    clean /= clean.sum()
    kernel = np.exp(-np.abs(np.arange(-len(g) + 1, len(g)) * h) / b)
    noisy = np.convolve(clean, kernel)[len(g) - 1 : 2 * len(g) - 1]
    noisy /= noisy.sum()
    x = jnp.asarray(g)[:, None]

    def solve(a, init=None):
        return ot.entropic_ot(
            x,
            x,
            jnp.asarray(a),
            jnp.asarray(noisy),
            epsilon=b,
            cost="l1",
            threshold=1e-9,
            init=init,
            max_iterations=5000,
        )

    log_a, init = np.log(noisy), None
    for _ in range(300):
        a = np.exp(log_a - np.logaddexp.reduce(log_a))
        res = solve(a, init)
        init = (res.f, res.g)
        log_a = log_a - (b / 2) * np.asarray(res.f)
    a = np.exp(log_a - np.logaddexp.reduce(log_a))
    tv_noisy = 0.5 * np.abs(noisy - clean).sum()
    tv_model = 0.5 * np.abs(a - clean).sum()
    assert tv_noisy > 0.3
    assert tv_model < 0.04  # the remainder is the grid's truncated, discretised kernel
    assert float(solve(clean).cost) < float(solve(noisy).cost)
    # both modes are back, with their clean masses 1/1.6 and 0.6/1.6
    assert a[g > 0].sum() == pytest.approx(1 / 1.6, abs=0.01)


def _rate(ns, seeds, d=8, eps=1.0):
    """Log-log slope of the RMSE of OT_ε(P̂ₙ, Q̂ₙ) against the closed form, one compiled solve.

    Every sample size is the same (max n)-point problem with zero weights on the unused points
    (zero weights delete points exactly), so one compilation covers all n.
    """
    cov = jnp.eye(d) * 0.5 + 0.1
    chol = jnp.linalg.cholesky(cov)
    closed = float(ot.gaussian_entropic_ot(jnp.zeros(d), cov, jnp.zeros(d), cov, epsilon=eps))
    size = max(ns)

    def one(k, n):
        k1, k2 = jr.split(k)
        x, y = jr.normal(k1, (size, d)) @ chol.T, jr.normal(k2, (size, d)) @ chol.T
        w = jnp.where(jnp.arange(size) < n, 1.0, 0.0) / n.astype(x.dtype)
        return ot.entropic_ot(x, y, w, w, epsilon=eps, threshold=1e-4, warn=False).cost

    solve = jax.jit(jax.vmap(one))
    rmse = []
    for n in ns:
        values = np.asarray(solve(jr.split(jr.key(n), seeds), jnp.full((seeds,), n)))
        rmse.append(np.sqrt(np.mean((values - closed) ** 2)))
    return np.polyfit(np.log(ns), np.log(rmse), 1)[0]


def test_parametric_rate_in_dimension_8():
    """METHODS §5e(5): |OT_ε(P̂ₙ, Q̂ₙ) − OT_ε(P, Q)| ~ n^{−1/2} even in d = 8 (W₂ would give n^{−1/8})."""
    slope = _rate([100, 200, 400, 800], seeds=24)
    assert -0.8 < slope < -0.3


@pytest.mark.slow
def test_parametric_rate_full_range(x64):
    slope = _rate([100, 200, 400, 800, 1600, 3200], seeds=16)
    assert -0.65 < slope < -0.35
