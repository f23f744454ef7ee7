"""SHK at scale: the O(n·m) subsample KDE against the exact KDE and, inside the sampler, against the
grid PDE; the exact pure-reaction mode untouched; keys, jit, sweeps and bad arguments."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import kde, shk
from dpflows.potentials import GaussianPotential
from grid_pde import Grid, gaussian_density, solve

M0, S0 = 1.3, 0.7  # start N(m0, s0) in every coordinate


def bumpy(x):
    """V = Σₖ xₖ²/2 + sin(2xₖ): a non-Gaussian product target (one 1-D grid PDE per coordinate)."""
    return 0.5 * jnp.sum(x**2) + jnp.sum(jnp.sin(2 * x))


def bumpy_1d(x):
    return 0.5 * x**2 + np.sin(2 * x)


def _kernel_moments(x, logw, bandwidth, leave_one_out):
    """Σⱼ wⱼKᵢⱼ and Σⱼ wⱼKᵢⱼ² (float64 NumPy, K unnormalised), the own term dropped with LOO."""
    xs = np.asarray(x, np.float64)
    w = np.exp(np.asarray(logw, np.float64))
    kern = np.exp(-((xs[:, None, :] - xs[None, :, :]) ** 2).sum(-1) / (2 * bandwidth**2))
    if leave_one_out:
        np.fill_diagonal(kern, 0.0)
    return kern @ w, kern**2 @ w


# ----------------------------------------------------------------------------- the estimator
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_subsample_is_unbiased_for_the_exact_kde(leave_one_out, key):
    # E ρ̃ = ρ̂ given the cloud (Horvitz–Thompson: Σₖ P(Jₖ = j) = m wⱼ). Monte Carlo over 4000 keys;
    # each particle's mean must lie within 5 standard errors, computed from the sample.
    n, m, num_keys, bandwidth = 40, 8, 4000, 0.4
    x = jr.normal(key, (n, 2))
    logw = jnp.log(jr.dirichlet(jr.fold_in(key, 1), jnp.ones(n)))  # unequal weights
    exact = np.exp(np.asarray(kde.kde_log_density(x, logw, bandwidth=bandwidth, leave_one_out=leave_one_out)))

    keys = jr.split(jr.fold_in(key, 2), num_keys)

    @jax.jit
    def log_draws(weights, loo_keys, own_keys):
        one = lambda k, loo: kde.subsample_kde_log_density(  # noqa: E731
            k, x, weights, bandwidth=bandwidth, num_reference=m, leave_one_out=loo
        )
        return jax.vmap(lambda k: one(k, leave_one_out))(loo_keys), jax.vmap(lambda k: one(k, False))(own_keys)

    uniform = jnp.full((n,), -np.log(n), jnp.float32)
    (good, own_kept), (unweighted, _) = (log_draws(w, keys, keys) for w in (logw, uniform))
    as_density = lambda a: np.exp(np.asarray(a, np.float64))  # noqa: E731

    def z_scores(samples):
        se = samples.std(axis=0, ddof=1) / np.sqrt(num_keys)
        return np.abs(samples.mean(axis=0) - exact) / se

    assert np.max(z_scores(as_density(good))) < 5.0
    # Negative controls: references drawn uniformly (weights ignored), and, for LOO, the own kernel
    # kept, are biased by many standard errors, so the check above has the power to catch them.
    assert np.max(z_scores(as_density(unweighted))) > 10.0
    if leave_one_out:
        assert np.max(z_scores(as_density(own_kept))) > 10.0


def test_subsample_log_error_on_the_bulk_is_its_predicted_noise(key):
    # Stated tolerance: mean |log ρ̃ − log ρ̂| ≤ 0.15 on the bulk (|x| < 1) of a 2-D Gaussian cloud at
    # m = 256 (n = 2000, Silverman's rule for m centres, leave-one-out). Computed: for iid references
    # log ρ̃ − log ρ̂ ≈ N(0, v) with v = (Σ wK²/(Σ wK)² − 1)/m, so E|error| = √(2v/π) (≈ 0.10 here);
    # stratified draws are no noisier, and 25 % covers the spread of an average over 8 keys that
    # share their references across particles.
    n, m, num_keys = 2000, 256, 8
    x = jr.normal(key, (n, 2))
    logw = jnp.full((n,), -np.log(n), jnp.float32)
    bandwidth = float(kde.silverman_bandwidth(x, max_sample_size=m))
    exact = np.asarray(kde.kde_log_density(x, bandwidth=bandwidth, leave_one_out=True))
    s1, s2 = _kernel_moments(x, logw, bandwidth, leave_one_out=True)
    v = (s2 / s1**2 - 1.0) / m
    bulk = np.asarray(jnp.sum(x**2, axis=1) < 1.0)
    predicted = float(np.mean(np.sqrt(2 * v[bulk] / np.pi)))

    def estimate(k, m=m, bw=bandwidth):
        return kde.subsample_kde_log_density(k, x, bandwidth=bw, num_reference=m, leave_one_out=True)

    err = np.asarray(jax.jit(jax.vmap(estimate))(jr.split(jr.fold_in(key, 3), num_keys))) - exact[None, :]
    mae = float(np.mean(np.abs(err[:, bulk])))
    assert mae <= 1.25 * predicted <= 0.15, (mae, predicted)
    assert mae >= 0.5 * predicted  # the noise is real: a copy of the exact KDE would not pass
    # Jensen: E log ρ̃ − log ρ̂ ≈ −v/2 (−0.006 here); the mean of 8 keys' errors carries noise of
    # ~√v/√8 ≈ 0.04 at worst (all particles sharing one reference draw).
    assert abs(float(np.mean(err[:, bulk]))) < 0.04
    # The noise falls as 1/√m: at a fixed bandwidth, m = 64 is about twice as noisy as m = 256.
    err64 = np.asarray(jax.jit(jax.vmap(lambda k: estimate(k, 64)))(jr.split(jr.fold_in(key, 4), num_keys)))
    ratio = float(np.mean(np.abs(err64 - exact[None, :])[:, bulk])) / mae
    assert 1.5 < ratio < 2.7, ratio


def test_silverman_rule_for_m_centres(key):
    x = jr.normal(key, (1000, 3))
    full = float(kde.silverman_bandwidth(x))
    # δ ∝ n_eff^{−1/(d+4)}: capping n_eff = 1000 at m = 100 widens δ by 10^{1/7}.
    np.testing.assert_allclose(float(kde.silverman_bandwidth(x, max_sample_size=100)), full * 10 ** (1 / 7), rtol=1e-5)
    np.testing.assert_allclose(float(kde.silverman_bandwidth(x, max_sample_size=5000)), full, rtol=1e-6)
    with pytest.raises(TypeError, match="max_sample_size"):
        kde.silverman_bandwidth(x, max_sample_size=10.0)


# ------------------------------------------------------------------------------ in the sampler
@pytest.mark.slow  # n = 3000 flows against the grid PDE; the estimator itself is checked by the default tests
@pytest.mark.parametrize("d", [1, 2])
def test_subsample_flow_follows_the_grid_pde(d, key):
    # SHK with the subsample KDE (n = 3000, m = 256, h = 0.02, t = 0.5) on a product target from a
    # product start: the law stays a product, and each marginal solves the 1-D PDE of tests/grid_pde.py.
    # Tolerance on the Kolmogorov distance of each weighted marginal to the grid CDF:
    # 1.63/√ESS (the 99 % quantile of the Kolmogorov statistic at the final ESS) plus 0.015 for the
    # KDE's smoothing bias (the exact KDE's own distance was ≤ 0.021 at n = 4000, MC included).
    alpha, beta, t, h, n = 0.8, 1.7, 0.5, 0.02, 3000
    grid = Grid.make(half_width=8.0, num=401)
    rho0 = gaussian_density(grid.x, M0, S0)
    cdfs = {
        b: np.cumsum(solve(grid, rho0, bumpy_1d, alpha=alpha, beta=b, times=[t])[0]) * grid.dx
        for b in (beta, beta / 2, 2 * beta)
    }
    x0 = M0 + np.sqrt(S0) * jr.normal(key, (n, d))
    flow = shk.SHKSampler(bumpy, step_size=h, transport=alpha, reaction=beta, density="subsample", num_reference=256)
    out, trace = dpflows.run(flow, flow.init(x0), jr.fold_in(key, 1), round(t / h))
    assert bool(trace.ok)
    tol = 1.63 / np.sqrt(float(out.ess())) + 0.015
    w = np.asarray(out.weights, np.float64)
    for j in range(d):
        xs = np.asarray(out.x[:, j], np.float64)
        order = np.argsort(xs)
        distance = np.max(np.abs(np.cumsum(w[order]) - np.interp(xs[order], grid.x, cdfs[beta])))
        assert distance < tol, (j, distance, tol)
    # A wrong reaction rate (β/2 or 2β) moves the law by more than twice the tolerance: the check can fail.
    for wrong in (beta / 2, 2 * beta):
        assert np.max(np.abs(cdfs[wrong] - cdfs[beta])) > 2 * tol


def test_exact_pure_reaction_mode_is_untouched(key):
    V = GaussianPotential(jnp.zeros(1), jnp.eye(1))
    x0 = 2.0 + jr.normal(key, (500, 1))

    def log_rho0(x):
        return -0.5 * jnp.sum((x - 2.0) ** 2)

    outs = []
    for density in ("exact", "subsample"):
        flow = shk.SHKSampler(V, step_size=0.1, transport=0.0, density=density, num_reference=16)
        state = flow.init(x0, log_density0=log_rho0)
        for i in range(3):
            state, info = flow.step(state, jr.fold_in(key, i))
        outs.append((state, info))
    assert bool(eqx.tree_equal(outs[0], outs[1]))  # bit for bit: no density estimate is involved
    assert float(outs[1][1]["bandwidth"]) == 0.0
    assert float(jnp.max(jnp.abs(outs[1][0].logw + np.log(500)))) > 0.1  # the weights did move


def test_subsample_with_n_at_most_m_is_the_exact_kde(key):
    V = GaussianPotential(jnp.zeros(2), jnp.eye(2))
    state = shk.SHKSampler(V, step_size=0.1).init(jr.normal(key, (64, 2)) + 1.0)
    exact = shk.SHKSampler(V, step_size=0.1).step(state, key)
    small = shk.SHKSampler(V, step_size=0.1, density="subsample", num_reference=64).step(state, key)
    assert bool(eqx.tree_equal(exact, small))


def test_subsample_jit_matches_eager_and_the_step_key_drives_the_draw(key):
    x = jr.normal(key, (300, 2)) + 1.0
    logw = jnp.log(jr.dirichlet(jr.fold_in(key, 1), jnp.ones(300)))
    options = {"bandwidth": 0.4, "num_reference": 32, "leave_one_out": True}
    eager = kde.subsample_kde_log_density(key, x, logw, **options)
    jitted = jax.jit(lambda k, x, lw: kde.subsample_kde_log_density(k, x, lw, **options))(key, x, logw)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-5)

    V = GaussianPotential(jnp.zeros(2), jnp.eye(2))
    step = eqx.filter_jit(lambda flow, state, k: flow.step(state, k))
    sub = shk.SHKSampler(V, step_size=0.1, density="subsample", num_reference=32, ess_threshold=0.0)
    state = sub.init(x)
    first, _ = step(sub, state, key)
    # Same key, same step; another key, another reference draw and other weights.
    assert bool(eqx.tree_equal(step(sub, state, key)[0], first))
    other, _ = step(sub, state, jr.fold_in(key, 1))
    assert float(jnp.max(jnp.abs(other.logw - first.logw))) > 1e-3
    # The draw has its own stream (fold_in): the transport noise is the exact mode's, bit for bit.
    exact, _ = step(shk.SHKSampler(V, step_size=0.1, ess_threshold=0.0), state, key)
    np.testing.assert_array_equal(np.asarray(exact.x), np.asarray(first.x))
    assert float(jnp.max(jnp.abs(exact.logw - first.logw))) > 1e-3
    # The jump scheme runs on it too.
    jump = shk.SHKSampler(V, step_size=0.3, scheme="jump", density="subsample", num_reference=32)
    _, info = step(jump, state, key)
    assert int(info["kills"]) + int(info["births"]) > 0


def test_subsample_sweep_over_a_leaf_compiles_once(key):
    traces = []

    def counting(x):  # a Python side effect runs once per trace, never per call
        traces.append(1)
        return 0.5 * jnp.sum(x**2)

    def flows(sizes):
        return [
            shk.SHKSampler(counting, step_size=h, density="subsample", num_reference=16, bandwidth=0.5) for h in sizes
        ]

    x0 = jr.normal(key, (64, 2)) + 2.0
    state = flows([0.1])[0].init(x0)
    swept, trace = dpflows.sweep(flows([0.05, 0.1, 0.2]), state, key, 3)
    assert bool(jnp.all(trace.ok))
    first = len(traces)
    dpflows.sweep(flows([0.02, 0.07, 0.3]), state, key, 3)  # new step sizes, same shapes: no new trace
    assert len(traces) == first
    for i, flow in enumerate(flows([0.05, 0.1, 0.2])):
        single, _ = dpflows.run(flow, state, key, 3)  # compiled once for the three flows
        np.testing.assert_allclose(np.asarray(swept.x[i]), np.asarray(single.x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(swept.logw[i]), np.asarray(single.logw), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad arguments
def test_bad_arguments_name_themselves(key):
    V = GaussianPotential(jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match="density"):
        shk.SHKSampler(V, step_size=0.1, density="fft")
    with pytest.raises(ValueError, match="num_reference"):
        shk.SHKSampler(V, step_size=0.1, density="subsample", num_reference=0)
    with pytest.raises(TypeError, match="num_reference"):
        shk.SHKSampler(V, step_size=0.1, density="subsample", num_reference=64.0)
    x = jr.normal(key, (10, 2))
    good = {"bandwidth": 0.5, "num_reference": 4}
    for name, bad, err in [
        ("num_reference", 0, ValueError),
        ("num_reference", True, TypeError),
        ("chunk_size", 0, ValueError),
        ("bandwidth", -1.0, ValueError),
        ("bandwidth", float("nan"), ValueError),
    ]:
        with pytest.raises(err, match=name):
            kde.subsample_kde_log_density(key, x, **{**good, name: bad})
    with pytest.raises((ValueError, TypeError), match="logw"):  # TypeError: the jaxtyping check in tests
        kde.subsample_kde_log_density(key, x, jnp.zeros(9), **good)
