"""Mechanisms: noise statistics, snapping premises, clipping, one source of truth (NOISE-1…5)."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

from dpflows import privacy
from dpflows.privacy import mechanisms as mech


def test_laplace_noise_statistics(key):
    # NOISE-4: mean within 5 SE, variance within 2% of 2b², KS p > 1e-3 (fixed key).
    n, b = 1_000_000, 2.0
    y = np.asarray(privacy.laplace_mechanism(key, jnp.zeros(n), sensitivity=1.0, epsilon=0.5, snap=False).value)
    assert abs(y.mean()) < 5 * y.std() / math.sqrt(n)
    assert abs(y.var() / (2 * b**2) - 1) < 0.02
    assert stats.kstest(y, stats.laplace(scale=b).cdf).pvalue > 1e-3


def test_gaussian_noise_statistics(key):
    n = 1_000_000
    rel = privacy.gaussian_mechanism(key, jnp.zeros(n), sensitivity=1.0, epsilon=1.0, delta=1e-5, snap=False)
    sigma = rel.certificate.parameters["scale"]
    assert sigma == pytest.approx(3.7306316348, rel=1e-9)
    y = np.asarray(rel.value)
    assert abs(y.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(y.var() / sigma**2 - 1) < 0.02
    assert stats.kstest(y, stats.norm(scale=sigma).cdf).pvalue > 1e-3


def test_snapped_laplace_outputs_lie_on_the_grid_with_equal_supports(key, x64):
    # NOISE-2: every output is a multiple of Λ = 2^⌈log₂ b⌉ inside [−B, B], under both inputs.
    n = 200_000
    outs = []
    for value in (0.0, 1.0):
        rel = privacy.laplace_mechanism(key, jnp.full(n, value), sensitivity=1.0, epsilon=1.0, bound=64.0)
        y = np.asarray(rel.value)
        grid = rel.certificate.parameters["grid"]
        assert grid == 1.0
        assert np.all(np.abs(y) <= 64.0)
        assert np.all(y / grid == np.round(y / grid))
        outs.append(set(np.unique(y).tolist()))
    assert outs[0] <= set(np.arange(-64.0, 65.0))
    assert outs[1] <= set(np.arange(-64.0, 65.0))
    assert rel.certificate.float_safe
    assert rel.certificate.covers == "mechanism"


def test_snapped_certificate_is_close_to_the_ideal_one(x64):
    rel = privacy.laplace_mechanism(None, 0.3, sensitivity=1.0, epsilon=1.0)
    cert = rel.certificate
    assert 1.0 < cert.epsilon < 1.0025
    assert 0 < cert.delta < 1e-10
    g = privacy.gaussian_mechanism(None, jnp.zeros(4), sensitivity=1.0, epsilon=1.0, delta=1e-5).certificate
    assert 1.0 < g.epsilon < 1.0025
    assert 1e-5 < g.delta < 1.1e-5
    assert g.parameters["grid"] <= g.parameters["scale"] / 4


def test_snapping_needs_float64():
    with pytest.raises(ValueError, match="enable_x64"):
        privacy.laplace_mechanism(jr.key(0), 0.0, sensitivity=1.0, epsilon=1.0)


def test_snapping_guarantee_shrinks_with_more_grid_resolution():
    # The bound's ingredients move the right way: a bigger clamp bound B costs more (ulp of B).
    small = privacy.snapping_guarantee("laplace", scale=1.0, grid=1.0, bound=2.0**10, sensitivity=1.0, epsilon=1.0)
    big = privacy.snapping_guarantee("laplace", scale=1.0, grid=1.0, bound=2.0**44, sensitivity=1.0, epsilon=1.0)
    assert big["epsilon"] > small["epsilon"]
    assert small["x_star"] < 36.7  # inside the reach of 52-bit noise


def test_naive_float32_noise_is_porous():
    # NOISE-1, a regression test of our own documented claim: enumerate all 2^23 float32 uniforms
    # with jax.random.laplace's own transform; the mass of outputs of f = 0 that are impossible
    # under f = 1 is the exact δ at any ε: it exceeds 0.5 (measured 0.89).
    bits = np.arange(2**23, dtype=np.uint32)
    u = (bits | np.uint32(0x3F800000)).view(np.float32) - np.float32(1.0)  # [0, 1) on the 23-bit grid
    u = np.float32(-1) + np.float32(np.nextafter(np.float32(-1), np.float32(0)) + 1) + u * np.float32(2)  # (-1, 1)
    noise = -np.sign(u) * np.log1p(-np.abs(u))
    y0, y1 = np.float32(0) + noise, np.float32(1) + noise
    porous = np.isin(y0, y1, invert=True).mean()
    assert porous > 0.5


def test_nan_records_are_refused():
    # NOISE-5
    x = jnp.array([[0.0, jnp.nan], [1.0, 0.0]])
    with pytest.raises(ValueError, match="x must be finite"):
        privacy.laplace_ldp(jr.key(0), x, epsilon=1.0, bound=1.0)
    with pytest.raises(ValueError, match="x must be finite"):
        privacy.gaussian_ldp(jr.key(0), x, epsilon=1.0, delta=1e-5, radius=1.0)
    with pytest.raises(ValueError, match="value must be finite"):
        privacy.laplace_mechanism(jr.key(0), jnp.nan, sensitivity=1.0, epsilon=1.0, snap=False)
    f = jax.jit(lambda z: privacy.laplace_ldp(jr.key(0), z, epsilon=1.0, bound=1.0).value)
    with pytest.raises(Exception, match="x must be finite"):  # noqa: PT011 - equinox runtime error
        jax.block_until_ready(f(x))


def test_ldp_randomisers_clip_and_report_their_scale(key):
    x = jnp.array([[5.0, -5.0], [0.2, 0.1]])
    rel = privacy.laplace_ldp(key, x, epsilon=1.0, bound=1.0)
    assert rel.certificate.parameters["scale"] == pytest.approx(4.0)  # 2·B·d/ε
    assert rel.certificate.epsilon == pytest.approx(1.0)
    np.testing.assert_allclose(mech.clip_box(x, 1.0), [[1.0, -1.0], [0.2, 0.1]])
    g = privacy.gaussian_ldp(key, x, epsilon=1.0, delta=1e-5, radius=1.0)
    assert g.certificate.parameters["scale"] == pytest.approx(2 * 3.7306316348, rel=1e-9)
    assert float(jnp.linalg.norm(mech.project_ball(x, 1.0)[0])) == pytest.approx(1.0, rel=1e-6)


def test_one_source_of_truth(monkeypatch, key):
    # If the noise scale changes, the certificate changes with it (they come from one number).
    honest = privacy.laplace_mechanism(key, 0.0, sensitivity=1.0, epsilon=1.0, snap=False).certificate
    monkeypatch.setattr(mech, "laplace_scale", lambda s, e: 0.5 * s / e)  # half the noise
    halved = privacy.laplace_mechanism(key, 0.0, sensitivity=1.0, epsilon=1.0, snap=False)
    assert halved.certificate.epsilon == pytest.approx(2 * honest.epsilon)
    assert halved.certificate.event.noise_multiplier == pytest.approx(0.5)
    ledger = privacy.PrivacyLedger().add_certificate(halved.certificate)
    assert ledger.epsilon(0.0) == pytest.approx(2.0)


def test_release_key_is_fresh_each_time():
    a, b = privacy.release_key(), privacy.release_key()
    assert not np.array_equal(np.asarray(jr.key_data(a)), np.asarray(jr.key_data(b)))


def test_exponential_mechanism_frequencies(key):
    u = jnp.array([0.0, 1.0, 2.0])
    picks = jax.jit(jax.vmap(lambda k: privacy.exponential_mechanism(k, u, sensitivity=1.0, epsilon=2.0).value))(
        jr.split(key, 200_000)
    )
    freq = np.bincount(np.asarray(picks), minlength=3) / 200_000
    p = np.exp(np.asarray(u)) / np.exp(np.asarray(u)).sum()  # ε u/(2Δ) = u
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 200_000))
    cert = privacy.exponential_mechanism(key, u, sensitivity=1.0, epsilon=2.0).certificate
    assert privacy.PrivacyLedger().add_certificate(cert, 100).entries[0].kind == "exponential"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: privacy.laplace_mechanism(jr.key(0), 0.0, sensitivity=1.0, epsilon=0.0), "epsilon"),
        (lambda: privacy.laplace_mechanism(jr.key(0), 0.0, sensitivity=-1.0, epsilon=1.0), "sensitivity"),
        (lambda: privacy.gaussian_mechanism(jr.key(0), 0.0, sensitivity=1.0, epsilon=1.0, delta=1.0), "delta"),
        (lambda: privacy.laplace_ldp(jr.key(0), jnp.zeros(3), epsilon=1.0, bound=1.0), "x must have"),
        (lambda: privacy.laplace_ldp(jr.key(0), jnp.zeros((0, 2)), epsilon=1.0, bound=1.0), "at least one record"),
        (lambda: privacy.gaussian_ldp(jr.key(0), jnp.zeros((2, 2)), epsilon=1.0, delta=1e-5, radius=0.0), "radius"),
        (lambda: privacy.exponential_mechanism(jr.key(0), jnp.zeros(0), sensitivity=1.0, epsilon=1.0), "utilities"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
