"""AUD-7 (RELIABILITY.md §3.3): one-run canary audits of the LDP pipeline's own privatisation step.

LDP randomisers act per record, so one call of the pipeline on m canary records — each set to x₀ or
x₁ by a public random bit — is m independent trials of the randomiser. The audits go through
``train_ldp_generator(..., return_privatized=True)``: the audited code is the released code.
"""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from dpflows import ldp, privacy
from dpflows.privacy import PrivacyAuditError, audit_epsilon_scores, audit_mu_scores
from dpflows.privacy import mechanisms as mech

M = 200_000
MU_CLAIM = 2 / privacy.calibrate_gaussian(1.0, 1e-5, 2.0)  # Δ₂ = 2R, R = 1 → μ ≈ 0.2681


def _canaries(x0, x1, seed=0):
    bits = np.random.default_rng(seed).integers(0, 2, M).astype(bool)  # public
    return jnp.where(jnp.asarray(bits)[:, None], jnp.asarray(x1)[None, :], jnp.asarray(x0)[None, :]), bits


def _privatised(records, **kw):
    gen = ldp.MLPGenerator(jr.key(0), latent_dim=2, data_dim=2, width=8, depth=1)
    res = ldp.train_ldp_generator(
        jr.key(1),
        gen,
        records,
        noise_key=jr.key(2),
        return_privatized=True,
        optimizer=optax.adam(1e-3),
        num_steps=1,
        batch_size=8,
        data_batch_size=512,
        **kw,
    )
    return np.asarray(res.privatized), res.certificate


def _gauss_audit():
    records, bits = _canaries([-1.0, 0.0], [1.0, 0.0])
    y, cert = _privatised(records, mechanism="gaussian", epsilon=1.0, delta=1e-5, radius=1.0)
    return audit_mu_scores(y[~bits, 0], y[bits, 0], threshold=0.0), cert


def test_one_run_gaussian_canaries(key):
    res, cert = _gauss_audit()
    assert cert.parameters["sensitivity"] == 2.0
    assert 0.20 <= res.mu_lower <= MU_CLAIM
    res.check(MU_CLAIM)


def test_one_run_gaussian_canaries_catch_halved_noise(monkeypatch):
    original = mech.gaussian_scale
    monkeypatch.setattr(mech, "gaussian_scale", lambda s, e, d: 0.5 * original(s, e, d))
    res, _ = _gauss_audit()
    with pytest.raises(PrivacyAuditError, match="mu lower bound"):
        res.check(MU_CLAIM)


def _laplace_audit(scale):
    records, bits = _canaries([-scale, -scale], [scale, scale], seed=1)
    y, cert = _privatised(records, mechanism="laplace", epsilon=1.0, bound=1.0)
    stat = y.min(axis=1)  # "all coordinates beyond the boundary" attains the full ε
    return audit_epsilon_scores(stat[~bits], stat[bits], threshold=1.0), cert


@pytest.mark.parametrize("scale", [1.0, 3.0])  # in-domain and out-of-domain canaries
def test_one_run_laplace_canaries(scale):
    res, cert = _laplace_audit(scale)
    assert cert.epsilon == 1.0
    assert 0.85 <= res.epsilon_lower <= 1.0


def test_one_run_laplace_canaries_catch_missing_clipping(monkeypatch):
    monkeypatch.setattr(mech, "clip_box", lambda x, bound: x)
    res, _ = _laplace_audit(3.0)
    with pytest.raises(PrivacyAuditError):
        res.check(1.0)
