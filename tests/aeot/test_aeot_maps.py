"""Smoothed Brenier potential and map (METHODS.md §6e items 3–6), the generator and the autoencoder helper."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import aeot


@pytest.fixture
def problem(key):
    k1, k2, k3 = jr.split(key, 3)
    return jr.normal(k1, (15, 3)), 0.5 * jr.normal(k2, (15,)), jr.uniform(k3, (200, 3))


@pytest.mark.parametrize("tau", [1e-3, 0.05, 1.0])
def test_potential_bound(problem, tau):
    codes, h, x = problem
    gap = aeot.smoothed_brenier_potential(x, codes, h, tau) - aeot.brenier_potential(x, codes, h)
    assert float(jnp.min(gap)) >= -1e-6  # float32 round-off of the log-sum-exp
    assert float(jnp.max(gap)) <= tau * np.log(15) * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("tau", [0.02, 0.2])
def test_map_bound_and_gradient_identity(problem, tau, x64):
    codes, h, x = problem
    codes, h, x = codes.astype(jnp.float64), h.astype(jnp.float64), x.astype(jnp.float64)
    smooth = aeot.smoothed_brenier_map(x, codes, h, tau)
    grads = jax.vmap(jax.grad(lambda p: aeot.smoothed_brenier_potential(p, codes, h, tau)))(x)
    np.testing.assert_allclose(grads, smooth, atol=1e-12)
    diam = float(jnp.max(jnp.linalg.norm(codes[:, None, :] - codes[None, :, :], axis=-1)))
    bound = diam * 14 * jnp.exp(-aeot.score_gap(x, codes, h) / tau)
    err = jnp.linalg.norm(smooth - aeot.brenier_map(x, codes, h), axis=-1)
    assert bool(jnp.all(err <= bound + 1e-12))
    if tau < 0.1:  # the bound is not vacuous: at small τ many points sit (to 1e-3) on their cell's code
        assert float(jnp.mean(err < 1e-3)) > 0.1


def test_convexity_and_monotonicity(problem, x64):
    codes, h, x = problem
    codes, h, x = codes.astype(jnp.float64), h.astype(jnp.float64), x.astype(jnp.float64)
    tau = 0.1
    hess = jax.vmap(jax.hessian(lambda p: aeot.smoothed_brenier_potential(p, codes, h, tau)))(x[:20])
    np.testing.assert_allclose(hess, jnp.swapaxes(hess, 1, 2), atol=1e-10)
    assert float(jnp.min(jnp.linalg.eigvalsh(hess))) >= -1e-10
    # ∇²u = Cov_s(y)/τ, the closed form.
    s = jax.nn.softmax((x[:20] @ codes.T + h[None, :]) / tau, axis=-1)
    mean = s @ codes
    cov = jnp.einsum("mn,nd,ne->mde", s, codes, codes) - jnp.einsum("md,me->mde", mean, mean)
    np.testing.assert_allclose(hess, cov / tau, atol=1e-9)
    m = aeot.smoothed_brenier_map(x, codes, h, tau)
    inner = jnp.sum((m[:100] - m[100:]) * (x[:100] - x[100:]), axis=-1)
    assert float(jnp.min(inner)) >= -1e-12


def test_smoothed_pushforward_converges_to_the_codes(key, x64):
    import ot as pot

    # 1-D with the closed-form heights (METHODS §6e.1): (∇u_h)#μ = ν exactly, and on 1024 grid
    # midpoints each of the 8 cells holds 128 of them, so W₂((∇u_{h,τ})#μ̂, ν) → 0 as τ → 0.
    y = np.sort(np.asarray(jr.normal(key, (8,)), np.float64))
    i = np.arange(1, 8)
    h = np.concatenate([[0.0], np.cumsum(-(i / 8) * np.diff(y))])
    x = (jnp.arange(1024.0)[:, None] + 0.5) / 1024
    w2 = []
    for tau in [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]:
        pushed = np.asarray(aeot.smoothed_brenier_map(x, y[:, None], h, tau), np.float64)
        cost = pot.dist(pushed, y[:, None].astype(np.float64))
        w2.append(np.sqrt(pot.emd2(np.full(1024, 1 / 1024), np.full(8, 1 / 8), cost)))
    assert all(b < a for a, b in zip(w2, w2[1:], strict=False))
    # Only points within ~τ/Δy of a boundary mix, so W₂ ~ √τ: a factor ~√10 per decade.
    assert w2[-1] < 3e-3 * np.ptp(y)
    assert w2[0] > 0.1 * np.ptp(y)
    assert np.all(np.diff(np.log10(w2)) < -0.3)


def test_score_gap_and_pair_angles():
    codes = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    h = jnp.zeros(3)
    np.testing.assert_allclose(aeot.score_gap(jnp.array([2.0, 0.0]), codes, h), 2.0)
    theta = aeot.pair_angles(codes, jnp.array([0, 0]), jnp.array([1, 2]))
    np.testing.assert_allclose(theta, [np.pi / 4, np.arccos(1 / np.sqrt(10))], rtol=1e-6)


def test_bad_inputs_name_the_argument(problem):
    codes, h, x = problem
    with pytest.raises(ValueError, match="tau"):
        aeot.smoothed_brenier_map(x, codes, h, 0.0)
    with pytest.raises(ValueError, match="heights"):
        aeot.brenier_potential(x, codes, h[:3])
    with pytest.raises(ValueError, match="x must have shape"):
        aeot.brenier_map(x[:, :2], codes, h)
    with pytest.raises(ValueError, match="angle_threshold"):
        aeot.AEOTGenerator(None, codes, h, mode="pairs")
    with pytest.raises(ValueError, match="mode"):
        aeot.AEOTGenerator(None, codes, h, tau=0.1, mode="triangles")
    with pytest.raises(ValueError, match="tau"):
        aeot.AEOTGenerator(None, codes, h, tau=-0.1)
    with pytest.raises(ValueError, match="max_mixing"):
        aeot.AEOTGenerator(None, codes, h, tau=0.1, max_mixing=2.0)


# ----------------------------------------------------------------------------------------- generator
@pytest.fixture(scope="module")
def two_clusters():
    """Two tight clusters far apart: the pair test must never bridge them."""
    key = jr.key(21)
    left = jnp.array([[-3.0, 0.0]]) + 0.1 * jr.normal(key, (20, 2))
    right = jnp.array([[3.0, 0.0]]) + 0.1 * jr.normal(jr.fold_in(key, 1), (20, 2))
    codes = jnp.concatenate([left, right])
    return codes, aeot.SemiDiscreteOT(codes, tol=0.2).solve(jr.key(22)).heights


def test_pairs_mode_rejects_cross_mode_pairs(two_clusters):
    codes, h = two_clusters
    gen = aeot.AEOTGenerator(None, codes, h, mode="pairs", angle_threshold=0.3)
    out = gen.sample(jr.key(0), 500)
    assert out.shape == (500, 2)
    assert float(jnp.min(jnp.abs(out[:, 0]))) > 2.0  # nothing between the clusters
    assert 0.3 < float(jnp.mean(out[:, 0] > 0)) < 0.7  # both clusters get their share
    assert gen.acceptance_rate(jr.key(1)) < 1.0  # the boundary between the clusters was hit and rejected
    # Without a threshold the same proposals bridge the gap.
    loose = aeot.AEOTGenerator(None, codes, h, mode="pairs", angle_threshold=np.pi)
    assert float(jnp.min(jnp.abs(loose.sample(jr.key(0), 2000)[:, 0]))) < 2.0


def test_smoothed_mode_stays_in_the_hull_and_is_new(two_clusters):
    codes, h = two_clusters
    # τ in the natural unit, the median gap g(x) over the source: most x mix a few neighbouring codes.
    tau = float(jnp.median(aeot.score_gap(aeot.sample_source(jr.key(5), 4096, 2), codes, h)))
    gen = aeot.AEOTGenerator(None, codes, h, tau=tau, max_mixing=0.9)
    out = gen.sample(jr.key(0), 300)
    assert float(jnp.max(jnp.abs(out[:, 0]))) <= float(jnp.max(jnp.abs(codes[:, 0]))) + 1e-5
    nearest = jnp.min(jnp.linalg.norm(out[:, None, :] - codes[None, :, :], axis=-1), axis=1)
    assert float(jnp.median(nearest)) > 1e-3  # new codes, not copies
    # propose is pure: jit and vmap over keys agree with the eager call.
    cand, ok = gen.propose(jr.key(3), 64)
    cand_j, ok_j = eqx.filter_jit(gen.propose)(jr.key(3), 64)
    np.testing.assert_allclose(cand, cand_j, atol=1e-5)
    keys = jr.split(jr.key(4), 3)
    batched = jax.vmap(lambda k: gen.propose(k, 16)[0])(keys)
    np.testing.assert_allclose(batched[1], gen.propose(keys[1], 16)[0], atol=1e-5)


def test_too_strict_rejection_raises(two_clusters):
    codes, h = two_clusters
    gen = aeot.AEOTGenerator(None, codes, h, mode="pairs", angle_threshold=1e-9)
    with pytest.raises(RuntimeError, match="angle_threshold"):
        gen.sample_codes(jr.key(0), 10, max_rounds=2)


def test_autoencoder_helper(key):
    data = jr.uniform(key, (64, 10))
    ae = aeot.MLPAutoencoder(key, data_dim=10, latent_dim=3, width=32, normalize=True)
    codes = jax.vmap(ae.encode)(data)
    np.testing.assert_allclose(jnp.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
    trained, losses = aeot.train_autoencoder(ae, data, key=key, num_steps=200, batch_size=32, learning_rate=3e-3)
    assert losses.shape == (200,)
    assert float(losses[-20:].mean()) < 0.8 * float(losses[:5].mean())
    gen = aeot.AEOTGenerator(trained, jnp.eye(3), jnp.zeros(3), tau=0.1)
    assert gen.sample(key, 5).shape == (5, 10)
    with pytest.raises(ValueError, match="data"):
        aeot.train_autoencoder(ae, jnp.zeros((3,)), key=key, num_steps=1)


def test_autoencoder_learning_rate_is_a_leaf(key):
    # train_autoencoder runs on dpflows.fit with the rate in the optimizer state: a grid of rates is one vmap.
    data = jr.uniform(key, (32, 6))
    ae = aeot.MLPAutoencoder(key, data_dim=6, latent_dim=2, width=8, depth=1)
    rates = jnp.array([1e-3, 1e-2])

    def train(lr):
        return aeot.train_autoencoder(ae, data, key=key, num_steps=30, batch_size=8, learning_rate=lr)[1]

    losses = jax.vmap(train)(rates)
    assert losses.shape == (2, 30)
    for lr, row in zip(rates, losses, strict=True):
        alone = train(lr)
        np.testing.assert_allclose(row, alone, rtol=1e-5)
    assert float(losses[1, -1]) != float(losses[0, -1])  # the rate is really used
    assert aeot.MLPAutoencoder is dpflows.nn.MLPAutoencoder  # one small-networks module
