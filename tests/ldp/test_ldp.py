"""dpflows.ldp: noise descriptions, the matched loss, the particle denoiser and the generator trainers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import dpflows
from dpflows import ldp, ot, privacy
from dpflows.ldp import GaussianNoise, LaplaceNoise, ParticleDenoiser


# ------------------------------------------------------------------------------ noise descriptions
def test_noise_of_reads_the_randomisers(key):
    x = jnp.zeros((4, 3))
    g = privacy.gaussian_ldp(key, x, epsilon=2.0, delta=1e-5, radius=1.5)
    noise = ldp.noise_of(g)
    assert isinstance(noise, GaussianNoise)
    assert float(noise.sigma) == pytest.approx(privacy.calibrate_gaussian(2.0, 1e-5, 3.0), rel=1e-6)
    assert float(noise.matched_epsilon) == pytest.approx(float(noise.sigma) ** 2)
    lap = privacy.laplace_ldp(key, x, epsilon=2.0, bound=0.5)
    noise = ldp.noise_of(lap.certificate)
    assert isinstance(noise, LaplaceNoise)
    assert float(noise.scale) == pytest.approx(2 * 0.5 * 3 / 2.0)  # L1 diameter 2Bd over ε
    assert noise.cost == "l1"
    assert float(noise.matched_epsilon) == pytest.approx(float(noise.scale))


def test_noise_of_refuses_other_releases(key):
    rel = privacy.exponential_mechanism(key, jnp.arange(3.0), sensitivity=1.0, epsilon=1.0)
    with pytest.raises(ValueError, match="does not describe additive"):
        ldp.noise_of(rel)
    with pytest.raises(TypeError, match="release must be"):
        ldp.noise_of("gaussian")


@pytest.mark.parametrize(("cls", "field"), [(GaussianNoise, "sigma"), (LaplaceNoise, "scale")])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_noise_scales_must_be_positive(cls, field, bad):
    with pytest.raises(ValueError, match=field):
        cls(bad)


def test_noise_samples_have_the_stated_scale(key):
    g = GaussianNoise(0.7).sample(key, (200_000,))
    lap = LaplaceNoise(0.4).sample(key, (200_000,))
    assert float(jnp.var(g)) == pytest.approx(0.49, rel=0.02)
    assert float(jnp.var(lap)) == pytest.approx(2 * 0.16, rel=0.03)


# ------------------------------------------------------------------------------ the loss
@pytest.fixture
def clouds(key):
    k1, k2 = jr.split(key)
    return jr.normal(k1, (60, 2)), 1.5 * jr.normal(k2, (80, 2)) + 0.3


def test_matched_loss_is_the_biased_entropic_cost_with_matched_cost_and_epsilon(clouds):
    x, y = clouds
    g = ldp.noise_matched_loss(x, y, noise=GaussianNoise(0.8))
    assert float(g) == pytest.approx(float(ot.entropic_ot(x, y, epsilon=0.64).cost), rel=1e-6)
    lap = ldp.noise_matched_loss(x, y, noise=LaplaceNoise(0.5))
    assert float(lap) == pytest.approx(float(ot.entropic_ot(x, y, epsilon=0.5, cost="l1").cost), rel=1e-6)
    div = ldp.noise_matched_loss(x, y, noise=GaussianNoise(0.8), loss="divergence")
    assert float(div) == pytest.approx(float(ot.sinkhorn_divergence(x, y, epsilon=0.64).value), rel=1e-6)
    mismatched = ldp.noise_matched_loss(x, y, noise=GaussianNoise(0.8), epsilon=0.1)
    assert float(mismatched) == pytest.approx(float(ot.entropic_ot(x, y, epsilon=0.1).cost), rel=1e-6)


def test_w2_loss_approximates_half_w2_squared(x64):
    # Two Gaussian samples of equal size: exact W₂ by assignment, the loss ≈ ½W₂².
    k1, k2 = jr.split(jr.key(3))
    x, y = jr.normal(k1, (300, 2)), 0.5 * jr.normal(k2, (300, 2)) + 1.0
    exact = dpflows.metrics.wasserstein2(x, y) ** 2 / 2
    approx = float(ldp.noise_matched_loss(x, y, noise=GaussianNoise(1.0), loss="w2", max_iterations=5000))
    assert approx == pytest.approx(exact, rel=0.02)


def test_loss_gradient_is_the_barycentric_displacement(clouds):
    x, y = clouds
    noise = GaussianNoise(0.8)
    grad = jax.grad(lambda z: ldp.noise_matched_loss(z, y, noise=noise, threshold=1e-6))(x)
    res = ot.entropic_ot(x, y, epsilon=0.64, threshold=1e-6)
    np.testing.assert_allclose(grad * x.shape[0], x - ot.barycentric_map(res), atol=2e-4)


def test_loss_jit_matches_eager(clouds):
    x, y = clouds
    noise = LaplaceNoise(0.5)
    eager = ldp.noise_matched_loss(x, y, noise=noise)
    jitted = jax.jit(lambda a, b, n: ldp.noise_matched_loss(a, b, noise=n))(x, y, noise)
    assert float(jitted) == pytest.approx(float(eager), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"noise": 0.5}, TypeError, "noise"),
        ({"loss": "kl"}, ValueError, "loss must be one of"),
        ({"epsilon": 0.0}, ValueError, "epsilon"),
        ({"epsilon": -1.0}, ValueError, "epsilon"),
    ],
)
def test_loss_input_errors(clouds, kwargs, error, match):
    x, y = clouds
    args = {"noise": GaussianNoise(1.0), **kwargs}
    with pytest.raises(error, match=match):
        ldp.noise_matched_loss(x, y, **args)


def test_loss_shape_and_value_errors(clouds):
    x, y = clouds
    with pytest.raises(ValueError, match="same dimension"):
        ldp.noise_matched_loss(x, y[:, :1], noise=GaussianNoise(1.0))
    with pytest.raises(ValueError, match="finite"):
        ldp.noise_matched_loss(x.at[0, 0].set(jnp.nan), y, noise=GaussianNoise(1.0))
    with pytest.raises(ValueError, match="at least one point"):
        ldp.noise_matched_loss(x[:0], y, noise=GaussianNoise(1.0))
    with pytest.raises(ValueError, match="sum to 1"):
        ldp.noise_matched_loss(x, y, a=jnp.ones(x.shape[0]), noise=GaussianNoise(1.0))


# ------------------------------------------------------------------------------ particle denoiser
def _gaussian_problem(key, n_private=3000, sigma=0.6):
    """Clean N(m, Σ) in 2-D, privatised by N(0, σ²I) noise."""
    cov = jnp.array([[0.5, 0.2], [0.2, 0.3]])
    m = jnp.array([0.3, -0.2])
    k1, k2 = jr.split(key)
    clean = m[None, :] + jr.normal(k1, (n_private, 2)) @ jnp.linalg.cholesky(cov).T
    return clean + sigma * jr.normal(k2, (n_private, 2)), m, cov, sigma


@pytest.mark.parametrize(("loss", "target"), [("entropic", "clean"), ("divergence", "noisy"), ("w2", "noisy")])
def test_particle_denoiser_recovers_the_clean_law_only_when_matched(key, loss, target):
    y, m, cov, sigma = _gaussian_problem(key, n_private=1200)
    flow = ParticleDenoiser(y, noise=GaussianNoise(sigma), step_size=1.0, loss=loss)
    state, trace = dpflows.run(flow, flow.init(jr.normal(jr.key(7), (300, 2))), jr.key(1), 60, record_every=1)
    noisy = cov + sigma**2 * jnp.eye(2)
    err_clean = float(jnp.max(jnp.abs(state.covariance() - cov)))
    err_noisy = float(jnp.max(jnp.abs(state.covariance() - noisy)))
    # σ² = 0.36 separates the two; 1200 records leave a sampling error of ~0.05
    if target == "clean":
        assert err_clean < 0.1 < 0.25 < err_noisy
    else:
        assert err_noisy < 0.1 < 0.25 < err_clean
    assert float(jnp.max(jnp.abs(state.mean() - m))) < 0.06
    assert bool(jnp.all(trace["converged"][-10:]))
    losses = np.asarray(trace["loss"])
    assert np.all(np.diff(losses[5:]) <= 1e-5)  # descent once the cloud has settled


def test_particle_denoiser_laplace_l1_recovers_the_clean_variance(key):
    k1, k2, k3 = jr.split(key, 3)
    clean = jr.normal(k1, (2000, 1))
    y = clean + LaplaceNoise(0.7).sample(k2, (2000, 1))  # noisy variance 1 + 2·0.49 = 1.98
    flow = ParticleDenoiser(y, noise=LaplaceNoise(0.7), step_size=1.0)
    state, _ = dpflows.run(flow, flow.init(jr.normal(k3, (400, 1))), jr.key(1), 60)
    var = float(jnp.var(state.x))
    assert abs(var - 1.0) < 0.2
    assert abs(var - 1.0) < abs(var - 1.98) / 4


def test_particle_denoiser_minibatches_and_warm_starts(key):
    y, _, _, sigma = _gaussian_problem(key, n_private=600)
    flow = ParticleDenoiser(y, noise=GaussianNoise(sigma), step_size=1.0, data_batch_size=200)
    state = flow.init(jr.normal(key, (50, 2)))
    assert [p.shape for p in state.aux] == [(50,), (200,)]
    s1, info = flow.step(state, jr.key(0))
    s2, info2 = flow.step(s1, jr.key(0))
    assert int(info2["num_iters"]) <= int(info["num_iters"])  # warm start does not cost more
    again, _ = flow.step(state, jr.key(0))
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(s1.x))  # same key, same batch


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"step_size": 0.0}, ValueError, "step_size"),
        ({"step_size": -1.0}, ValueError, "step_size"),
        ({"loss": "l2"}, ValueError, "loss"),
        ({"noise": None}, TypeError, "noise"),
        ({"data_batch_size": 0}, ValueError, "data_batch_size"),
        ({"data_batch_size": 11}, ValueError, "data_batch_size"),
        ({"epsilon": 0.0}, ValueError, "epsilon"),
    ],
)
def test_particle_denoiser_input_errors(kwargs, error, match):
    args = {"noise": GaussianNoise(1.0), "step_size": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        ParticleDenoiser(jnp.zeros((10, 2)), **args)


def test_particle_denoiser_data_errors():
    with pytest.raises(ValueError, match="y_private must be finite"):
        ParticleDenoiser(jnp.full((3, 2), jnp.nan), noise=GaussianNoise(1.0), step_size=1.0)
    with pytest.raises(ValueError, match="y_private"):
        ParticleDenoiser(jnp.zeros((0, 2)), noise=GaussianNoise(1.0), step_size=1.0)
    flow = ParticleDenoiser(jnp.zeros((3, 2)), noise=GaussianNoise(1.0), step_size=1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        flow.init(jnp.zeros((5, 3)))


# ------------------------------------------------------------------------------ generators
class AffineGenerator(eqx.Module):
    """G(z) = m + L z: a Gaussian model, so the recovered law has closed-form moments."""

    m: jax.Array
    lower: jax.Array
    latent_dim: int = eqx.field(static=True, default=2)

    def __call__(self, z):
        return self.m + self.lower @ z

    def covariance(self):
        return self.lower @ self.lower.T


def test_train_generator_recovers_the_clean_gaussian(key):
    # (The divergence's pull to the noisy law is shown on the particle denoiser above.)
    y, m, cov, sigma = _gaussian_problem(key)
    gen = AffineGenerator(jnp.zeros(2), jnp.eye(2))
    res = ldp.train_generator(
        gen,
        y,
        noise=GaussianNoise(sigma),
        optimizer=optax.adam(0.02),
        num_steps=300,
        batch_size=256,
        data_batch_size=1500,
        key=jr.key(2),
    )
    got = res.generator.covariance()
    assert float(jnp.max(jnp.abs(got - cov))) < 0.06
    assert float(jnp.max(jnp.abs(got - cov - sigma**2 * jnp.eye(2)))) > 0.25
    assert float(jnp.max(jnp.abs(res.generator.m - m))) < 0.06
    assert res.loss.shape == (300,)
    assert bool(jnp.all(res.converged))


def test_train_generator_chunking_does_not_change_the_result(key):
    y, _, _, sigma = _gaussian_problem(key, n_private=300)
    kw = dict(noise=GaussianNoise(sigma), optimizer=optax.adam(0.01), num_steps=7, batch_size=32, key=jr.key(0))
    gen = AffineGenerator(jnp.zeros(2), jnp.eye(2))
    one = ldp.train_generator(gen, y, chunk_size=100, **kw)
    three = ldp.train_generator(gen, y, chunk_size=3, progress=True, **kw)
    np.testing.assert_allclose(np.asarray(one.loss), np.asarray(three.loss), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(one.generator.lower), np.asarray(three.generator.lower), rtol=1e-6)
    none = ldp.train_generator(gen, y, **{**kw, "num_steps": 0})
    assert none.loss.shape == (0,)
    np.testing.assert_array_equal(np.asarray(none.generator.lower), np.eye(2))


def test_mlp_generator_trains_on_the_matched_loss(key):
    y, _, _, sigma = _gaussian_problem(key, n_private=1000)
    gen = ldp.MLPGenerator(jr.key(0), latent_dim=2, data_dim=2, width=32, depth=2)
    res = ldp.train_generator(
        gen, y, noise=GaussianNoise(sigma), optimizer=optax.adam(3e-3), num_steps=60, batch_size=128, key=jr.key(1)
    )
    assert float(jnp.mean(res.loss[-20:])) < float(jnp.mean(res.loss[:5]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_steps": -1}, ValueError, "num_steps"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"data_batch_size": 1000}, ValueError, "data_batch_size"),
        ({"loss": "mse"}, ValueError, "loss"),
        ({"latent_dim": 3}, ValueError, "generator must map"),
    ],
)
def test_train_generator_input_errors(kwargs, error, match):
    args = {
        "noise": GaussianNoise(1.0),
        "optimizer": optax.adam(0.01),
        "num_steps": 1,
        "batch_size": 4,
        "key": jr.key(0),
        **kwargs,
    }
    with pytest.raises(error, match=match):
        ldp.train_generator(AffineGenerator(jnp.zeros(2), jnp.eye(2)), jnp.zeros((10, 2)), **args)


def test_train_generator_needs_a_latent_dim():
    with pytest.raises(ValueError, match="latent_dim must be given"):
        ldp.train_generator(
            lambda z: z,
            jnp.zeros((10, 2)),
            noise=GaussianNoise(1.0),
            optimizer=optax.adam(0.01),
            num_steps=1,
            batch_size=4,
            key=jr.key(0),
        )


def test_train_ldp_generator_privatises_and_carries_the_certificate(key):
    x = jr.uniform(key, (500, 2), minval=-2.0, maxval=2.0)
    gen = AffineGenerator(jnp.zeros(2), jnp.eye(2))
    kw = dict(optimizer=optax.adam(0.01), num_steps=3, batch_size=16)
    res = ldp.train_ldp_generator(
        jr.key(0), gen, x, mechanism="gaussian", epsilon=2.0, delta=1e-5, radius=1.0, noise_key=jr.key(5), **kw
    )
    direct = privacy.gaussian_ldp(jr.key(5), x, epsilon=2.0, delta=1e-5, radius=1.0)
    assert res.privatized is None
    assert res.certificate.epsilon == direct.certificate.epsilon
    assert res.certificate.covers == "mechanism"
    assert float(res.noise.sigma) == pytest.approx(direct.certificate.parameters["scale"])
    res = ldp.train_ldp_generator(
        jr.key(0), gen, x, mechanism="laplace", epsilon=2.0, bound=1.0, return_privatized=True, **kw
    )
    assert isinstance(res.noise, LaplaceNoise)
    assert res.privatized.shape == x.shape
    # the raw records are never returned: out-of-box inputs were clipped before the noise
    assert not np.allclose(np.asarray(res.privatized), np.asarray(x))
    with pytest.raises(ValueError, match="needs delta and radius"):
        ldp.train_ldp_generator(jr.key(0), gen, x, mechanism="gaussian", epsilon=1.0, **kw)
    with pytest.raises(ValueError, match="needs bound"):
        ldp.train_ldp_generator(jr.key(0), gen, x, mechanism="laplace", epsilon=1.0, **kw)
    with pytest.raises(ValueError, match="mechanism"):
        ldp.train_ldp_generator(jr.key(0), gen, x, mechanism="rr", epsilon=1.0, **kw)
