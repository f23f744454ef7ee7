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


# ------------------------------------------------------------------------------ leaves, sweeps, reliability
class _CountSteps(dpflows.AbstractFlow):
    """Wrapper counting how often the inner step is traced (once per compilation)."""

    inner: ParticleDenoiser
    counter: list = eqx.field(static=True)

    def init(self, x, logw=None):
        return self.inner.init(x, logw)

    def step(self, state, key):
        self.counter.append(1)
        return self.inner.step(state, key)


def test_denoisers_at_different_noise_epsilon_and_step_size_sweep_in_one_compile(key):
    y, _, _, _ = _gaussian_problem(key, n_private=120)
    counter: list = []
    settings = [
        {"noise": GaussianNoise(0.4)},
        {"noise": GaussianNoise(0.6)},
        {"noise": GaussianNoise(0.6), "epsilon": 0.1},  # a mismatched member beside matched ones
        {"noise": GaussianNoise(0.5), "step_size": 0.5},
    ]
    flows = [_CountSteps(ParticleDenoiser(y, **{"step_size": 1.0, **kw}), counter) for kw in settings]
    np.testing.assert_allclose([float(f.inner.effective_epsilon) for f in flows], [0.16, 0.36, 0.1, 0.25], rtol=1e-6)
    state = flows[0].init(jr.normal(jr.key(3), (40, 2)))
    final, trace = dpflows.sweep(flows, state, jr.key(1), 8)
    traced = len(counter)
    assert traced >= 1
    again = [
        _CountSteps(ParticleDenoiser(y, noise=GaussianNoise(s), step_size=1.0, epsilon=e), counter)
        for s, e in ((0.45, None), (0.55, 0.2), (0.3, None), (0.7, 0.05))
    ]
    dpflows.sweep(again, state, jr.key(1), 8)
    assert len(counter) == traced  # new σ, ε and a matched/mismatched mix: no recompile
    assert bool(jnp.all(trace.ok))
    for j, flow in enumerate(flows):
        alone, _ = dpflows.run(flow.inner, state, jr.key(1), 8)
        np.testing.assert_allclose(np.asarray(final.x[j]), np.asarray(alone.x), rtol=1e-4, atol=1e-5)


def test_epsilon_none_is_the_matched_sentinel():
    y = jnp.ones((5, 2))
    matched = ParticleDenoiser(y, noise=GaussianNoise(0.5), step_size=1.0)
    assert float(matched.epsilon) == ldp.MATCHED
    assert float(matched.effective_epsilon) == pytest.approx(0.25)
    assert float(ParticleDenoiser(y, noise=LaplaceNoise(0.7), step_size=1.0).effective_epsilon) == pytest.approx(0.7)
    assert float(ParticleDenoiser(y, noise=GaussianNoise(0.5), step_size=1.0, loss="w2").effective_epsilon) == (
        pytest.approx(ldp.W2_RELATIVE_EPSILON)
    )
    flow, axes = dpflows.stack([matched, ParticleDenoiser(y, noise=GaussianNoise(0.5), step_size=1.0, epsilon=0.3)])
    assert axes.epsilon == 0
    np.testing.assert_allclose(np.asarray(flow.epsilon), [0.0, 0.3])


def test_data_too_large_for_the_dtype_is_refused_at_the_boundary():
    big = 1e30 * jnp.ones((5, 2))
    with pytest.raises(ValueError, match="y_private must have entries below") as err:
        ParticleDenoiser(big, noise=GaussianNoise(1.0), step_size=1.0)
    assert len(str(err.value)) < 300  # one sentence naming the argument, not a traceback from inside jit
    flow = ParticleDenoiser(jnp.zeros((5, 2)), noise=GaussianNoise(1.0), step_size=1.0)
    with pytest.raises(ValueError, match="x must have entries below"):
        flow.init(big)
    with pytest.raises(ValueError, match="y_private must have entries below"):
        ldp.noise_matched_loss(jnp.zeros((3, 2)), big, noise=GaussianNoise(1.0))
    with pytest.raises(ValueError, match="x_model must have entries below"):
        ldp.noise_matched_loss(big, jnp.zeros((3, 2)), noise=GaussianNoise(1.0))
    with pytest.raises(ValueError, match="y_private must have entries below"):
        ldp.GeneratorLoss(big, noise=GaussianNoise(1.0), batch_size=4, latent_dim=2)
    with pytest.raises(ValueError, match="sigma must be below"):
        GaussianNoise(jnp.float32(1e20))  # σ² overflows float32
    # a large but representable scale is fine
    ParticleDenoiser(1e6 * jnp.ones((5, 2)), noise=GaussianNoise(1.0), step_size=1.0)


def test_an_unconverged_inner_solve_is_named_not_the_step_size(key):
    y = jr.normal(key, (50, 2))
    flow = ParticleDenoiser(y, noise=GaussianNoise(1e-3), step_size=0.5)  # ε = 1e-6: Sinkhorn cannot converge
    state = flow.init(jr.normal(jr.key(1), (20, 2)))
    with pytest.raises(dpflows.FlowError) as err:
        dpflows.run(flow, state, jr.key(2), 5)
    msg = str(err.value)
    assert "converge" in msg
    assert "epsilon" in msg
    assert "max_iterations" in msg
    assert "smaller step" not in msg
    with pytest.warns(dpflows.FlowWarning, match="did not converge"):
        _, trace = dpflows.run(flow, state, jr.key(2), 5, throw=False)
    assert not bool(jnp.any(trace["converged"]))


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


def test_learning_rate_is_an_optimizer_state_leaf(key):
    y, _, _, sigma = _gaussian_problem(key, n_private=200)
    gen = AffineGenerator(jnp.zeros(2), jnp.eye(2))
    kw = dict(noise=GaussianNoise(sigma), num_steps=5, batch_size=32, key=jr.key(0))
    by_rate = ldp.train_generator(gen, y, learning_rate=0.01, **kw)
    injected = optax.inject_hyperparams(optax.adam)(learning_rate=0.01)
    by_opt = ldp.train_generator(gen, y, optimizer=injected, **kw)
    plain = ldp.train_generator(gen, y, optimizer=optax.adam(0.01), **kw)
    np.testing.assert_array_equal(np.asarray(by_rate.generator.lower), np.asarray(by_opt.generator.lower))
    np.testing.assert_allclose(np.asarray(by_rate.generator.lower), np.asarray(plain.generator.lower), rtol=1e-5)
    assert float(by_rate.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="exactly one of optimizer"):
        ldp.train_generator(gen, y, **kw)
    with pytest.raises(ValueError, match="exactly one of optimizer"):
        ldp.train_generator(gen, y, optimizer=optax.adam(0.1), learning_rate=0.1, **kw)
    with pytest.raises(ValueError, match="learning_rate"):
        ldp.train_generator(gen, y, learning_rate=-1.0, **kw)


def test_train_generator_checkpoints_and_resumes_bitwise(key, tmp_path):
    y, _, _, sigma = _gaussian_problem(key, n_private=200)
    gen = AffineGenerator(jnp.zeros(2), jnp.eye(2))
    kw = dict(noise=GaussianNoise(sigma), learning_rate=0.01, num_steps=6, batch_size=32, key=jr.key(0))
    plain = ldp.train_generator(gen, y, **kw)
    saved = ldp.train_generator(gen, y, checkpoint=tmp_path / "ck", checkpoint_every=3, **kw)
    resumed = ldp.train_generator(gen, y, checkpoint=tmp_path / "ck", checkpoint_every=3, **kw)
    for res in (saved, resumed):
        np.testing.assert_array_equal(np.asarray(res.loss), np.asarray(plain.loss))
        np.testing.assert_array_equal(np.asarray(res.generator.lower), np.asarray(plain.generator.lower))
    assert any((tmp_path / "ck").iterdir())


def test_generator_losses_at_different_noise_train_as_one_vmap_of_fit(key):
    y, _, _, _ = _gaussian_problem(key, n_private=200)
    gen = AffineGenerator(jnp.zeros(2), jnp.eye(2))
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=0.01)
    traces = []

    def train(loss, k):
        traces.append(1)
        res = dpflows.fit(loss, gen, opt, k, 4, has_aux=True, throw=False)
        return res.model.lower, res.trace["loss"]

    def losses(sigmas, eps):
        mods = [
            ldp.GeneratorLoss(y, noise=GaussianNoise(s), batch_size=32, latent_dim=2, epsilon=e)
            for s, e in zip(sigmas, eps, strict=True)
        ]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *mods)

    fn = eqx.filter_jit(eqx.filter_vmap(train, in_axes=(eqx.if_array(0), None)))
    lower, values = fn(losses((0.4, 0.6, 0.6), (None, None, 0.1)), jr.key(5))
    fn(losses((0.5, 0.3, 0.7), (0.2, None, None)), jr.key(5))
    assert len(traces) == 1
    for j, (s, e) in enumerate(((0.4, None), (0.6, None), (0.6, 0.1))):
        alone = ldp.train_generator(
            gen, y, noise=GaussianNoise(s), epsilon=e, optimizer=opt, num_steps=4, batch_size=32, key=jr.key(5)
        )
        np.testing.assert_allclose(np.asarray(values[j]), np.asarray(alone.loss), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(lower[j]), np.asarray(alone.generator.lower), rtol=1e-5, atol=1e-6)


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
