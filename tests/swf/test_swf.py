"""DP sliced-Wasserstein flow (METHODS.md §4e): maps, sensitivity, accounting, descent, limits, inputs."""

import math

import dp_accounting as dpa
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

import dpflows
from dpflows import ot, privacy, swf
from dpflows.privacy import PrivacyLedger, calibrate_gaussian
from dpflows.swf import DPSlicedWassersteinFlow
from helpers import swf_data


def _flow(data=None, **kw):
    args = dict(epsilon=5.0, delta=1e-5, num_projections=8, step_size=0.5, num_steps=6, key=jr.key(41))
    args.update(kw)
    return DPSlicedWassersteinFlow.from_data(swf_data() if data is None else data, **args)


def _unit_rows(key, m, d, radius=0.9):
    y = jr.normal(key, (m, d))
    return radius * y / jnp.linalg.norm(y, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------ the maps
def test_one_step_is_exact_in_one_dimension(key, x64):
    # d = 1, one direction, no noise, τ = 1: x ← T(x) maps the order statistics onto the target's.
    y = jr.uniform(key, (50, 1), minval=-0.9, maxval=0.9)
    x = 3.0 * jr.normal(jr.fold_in(key, 1), (50, 1))
    flow = _flow(y, epsilon=math.inf, num_projections=1, step_size=1.0)
    new, _ = flow.step(flow.init(x), key)
    order = jnp.argsort(x[:, 0])
    np.testing.assert_allclose(new.x[order, 0], jnp.sort(y[:, 0]), atol=1e-12)


def test_drift_without_noise_is_the_sliced_wasserstein_flow_drift(key, x64):
    # σ = 0: the step is the SWF step (Liutkus et al. 2019) with dpflows.ot.quantile_map, exact and P-tabulated.
    y, x = _unit_rows(key, 60, 3), jr.normal(jr.fold_in(key, 1), (80, 3))
    for p in (None, 40):
        flow = _flow(y, epsilon=math.inf, num_projections=16, step_size=0.7, num_quantiles=p)
        theta = flow.release.directions[0]
        u, v = theta @ x.T, theta @ y.T
        ref = x - 0.7 * ((u - ot.quantile_map(u, v, num_quantiles=p)).T @ theta) / 16
        new, _ = flow.step(flow.init(x), key)
        np.testing.assert_allclose(new.x, ref, atol=1e-12)


def test_smoothing_limit_sigma_to_zero(key, x64):
    # As ε grows the release noise σ → 0 and the private step converges to the noiseless one.
    y, x = _unit_rows(key, 200, 3), jr.normal(jr.fold_in(key, 1), (200, 3))
    exact, _ = _flow(y, epsilon=math.inf, num_projections=16).step(_flow(y, epsilon=math.inf).init(x), key)
    gaps, sigmas = [], []
    for eps in (1e1, 1e3, 1e5):
        flow = _flow(y, epsilon=eps, num_projections=16)
        new, _ = flow.step(flow.init(x), key)
        gaps.append(float(jnp.max(jnp.abs(new.x - exact.x))))
        sigmas.append(float(flow.release.noise_std[0]))
    assert sigmas[0] > sigmas[1] > sigmas[2]
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < min(1e-2, gaps[0] / 50), gaps


def test_weighted_particles_use_their_weights(key, x64):
    # A particle of weight 0 shifts no one's CDF level: the others move exactly as without it.
    y, x = _unit_rows(key, 30, 2), jr.normal(jr.fold_in(key, 1), (20, 2))
    flow = _flow(y, epsilon=math.inf, num_projections=5)
    single, _ = flow.step(flow.init(x), key)
    logw = jnp.concatenate([jnp.full(20, -math.log(20)), jnp.full(1, -jnp.inf)])
    both, _ = flow.step(flow.init(jnp.concatenate([x, jnp.zeros((1, 2))]), logw), key)
    np.testing.assert_allclose(both.x[:20], single.x, atol=1e-12)
    heavy, _ = flow.step(flow.init(x, jnp.log(jnp.linspace(1.0, 2.0, 20) / jnp.sum(jnp.linspace(1.0, 2.0, 20)))), key)
    assert float(jnp.max(jnp.abs(heavy.x - single.x))) > 1e-3  # and weights do matter


# ----------------------------------------------------------------------------- sensitivity bound
def test_projections_follow_the_beta_law(key):
    # ⟨θ, z⟩² ~ Beta(½, (d−1)/2) for the release's directions; Σ_l ⟨θ_l, z⟩² has mean k/d.
    d, k = 8, 50
    rel = swf.sliced_gaussian_mechanism(
        key, jnp.ones((1, d)) / d, num_projections=k, noise_multiplier=0.0, sensitivity=1.0, num_releases=200
    )
    z = jnp.zeros(d).at[0].set(1.0)
    sq = np.asarray((rel.directions @ z) ** 2, np.float64)  # (200, k)
    assert stats.kstest(sq.ravel(), stats.beta(0.5, (d - 1) / 2).cdf).pvalue > 1e-3
    sums = sq.sum(axis=1)
    v = 2 * (d - 1) / (d**2 * (d + 2))
    assert abs(sums.mean() - k / d) < 4 * math.sqrt(k * v / sums.size)


def test_sensitivity_bounds_by_monte_carlo():
    # METHODS §4e(3): the (1 − δ_s) quantile of 4 Σ_l ⟨θ_l, z⟩² against Δ² at d = 8, k = 70.
    rng = np.random.default_rng(0)
    d, k, fail, n = 8, 70, 1e-3, 400_000
    g = rng.standard_normal((n, k)) ** 2
    s = np.sum(g / (g + rng.chisquare(d - 1, (n, k))), axis=1)  # ⟨θ, z⟩² = g²/(g² + χ²_{d−1})
    frac = {
        m: float(np.mean(4 * s > swf.sensitivity_bound(k, d, fail, m) ** 2)) for m in ("chernoff", "bernstein", "clt")
    }
    limit = fail + 3 * math.sqrt(fail / n)
    assert frac["chernoff"] <= limit, frac
    assert frac["bernstein"] <= limit, frac
    # The paper's CLT form is not a bound: the skewed sum exceeds it about twice as often as δ_s.
    assert frac["clt"] > 1.5 * fail, frac
    # Chernoff is close to the truth: within 10 % of the empirical quantile of Δ.
    emp = 2 * math.sqrt(np.quantile(s, 1 - fail))
    assert emp <= swf.sensitivity_bound(k, d, fail, "chernoff") < 1.1 * emp


def test_sensitivity_bound_edge_cases():
    assert swf.sensitivity_bound(5, 1, 1e-3) == pytest.approx(2 * math.sqrt(5))  # d = 1: |θ| = 1
    assert swf.sensitivity_bound(3, 8, 1e-12, "bernstein") == pytest.approx(2 * math.sqrt(3))  # capped at 2√k
    a, b = swf.sensitivity_bound(70, 8, 1e-3), swf.sensitivity_bound(70, 8, 1e-6)
    assert a < b < 2 * math.sqrt(70)


def test_operator_sensitivity_is_the_drawn_directions_norm(key):
    flow = _flow(sensitivity="operator", num_projections=16)
    theta = np.asarray(flow.release.directions[0], np.float64)
    s = flow.release.parameters()["noise_multiplier"]
    np.testing.assert_allclose(float(flow.release.noise_std[0]), s * 2 * np.linalg.norm(theta, 2), rtol=1e-5)
    assert flow.release.parameters()["sensitivity_failure"] == 0.0
    assert s == pytest.approx(calibrate_gaussian(5.0, 1e-5, 1.0))  # all of δ goes to the mechanism


# ------------------------------------------------------------------------------------ accounting
def test_single_release_uses_the_analytic_gaussian_mechanism():
    flow = _flow()
    mech, cert = flow.release.parameters(), flow.certificate
    assert cert.covers == "mechanism"
    assert cert.epsilon == 5.0
    assert cert.delta == 1e-5
    assert mech["noise_multiplier"] == pytest.approx(calibrate_gaussian(5.0, 5e-6, 1.0))
    assert mech["sensitivity"] == pytest.approx(swf.sensitivity_bound(8, 2, 5e-6, "chernoff"))
    assert mech["noise_multiplier"] < mech["classical_noise_multiplier"]  # the analytic σ is smaller, and exact
    np.testing.assert_allclose(
        np.asarray(flow.release.noise_std), mech["noise_multiplier"] * mech["sensitivity"], rtol=1e-6
    )
    assert mech["epsilon_pld"] == pytest.approx(5.0, abs=1e-6)


def test_resampled_accounting_meets_the_target_and_agrees_with_dp_accounting():
    flow = _flow(resample=True, batch_size=20)
    mech, cert = flow.release.parameters(), flow.certificate
    s, q, t, delta_mech = mech["noise_multiplier"], mech["sampling_rate"], mech["num_releases"], 5e-6
    assert (q, t) == (0.5, 6)
    assert mech["sensitivity_failure"] == pytest.approx(1e-5 / 12)
    # An independent route: dp-accounting's own PLD accountant on the certificate's event.
    pld = dpa.pld.PLDAccountant().compose(cert.to_dp_event()).get_epsilon(delta_mech)
    rdp = dpa.rdp.RdpAccountant().compose(cert.to_dp_event()).get_epsilon(delta_mech)
    assert pld <= 5.0 + 1e-3
    assert pld > 4.9
    assert rdp >= pld
    assert rdp < 1.25 * pld
    assert PrivacyLedger().add_gaussian(0.99 * s, t, q).epsilon(delta_mech) > 5.0  # s is (nearly) the smallest


def test_accountant_is_monotone():
    def eps(s, t, q):  # RDP here (fast); the PLD route is checked against the target above
        return PrivacyLedger().add_gaussian(s, t, q).epsilon(1e-5, "rdp")

    assert eps(1.0, 50, 0.1) > eps(1.5, 50, 0.1) > eps(2.0, 50, 0.1)
    assert eps(1.0, 10, 0.1) < eps(1.0, 50, 0.1) < eps(1.0, 200, 0.1)
    assert eps(1.0, 50, 0.05) < eps(1.0, 50, 0.1) < eps(1.0, 50, 0.3)


def test_non_private_flow_says_so():
    cert = _flow(epsilon=math.inf).certificate
    assert cert.covers == "none"
    assert math.isinf(cert.epsilon)


# ----------------------------------------------------------------------------- the release
def test_the_flow_keeps_only_the_release(key):
    # The tables are the sorted published values of private_release (the audited function); the
    # flow holds no array with the private rows, so anything computed from it is post-processing.
    y = swf_data()
    flow = _flow(y, resample=True, batch_size=20)
    rel = swf.sliced_gaussian_mechanism(jr.key(41), y, **flow.release.mechanism_kwargs())
    for t in range(flow.release.parameters()["num_releases"]):
        count = int(flow.release.counts[t])
        assert count == int(jnp.sum(rel.mask[t]))
        ref = jnp.sort(rel.values[t][:, rel.mask[t]], axis=-1)
        np.testing.assert_allclose(flow.release.tables[t][:, :count], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flow.release.directions, rel.directions, rtol=1e-6)
    leaves = jax.tree_util.tree_leaves(flow)
    assert not any(getattr(a, "shape", None) and a.shape[-2:] == y.shape for a in leaves)


def _residual_std_ok(flow, data, key):
    """SW-σ: the release residual's std lies in the 99.9 % χ² interval of the σ the certificate claims."""
    mech = flow.release.parameters()
    claimed = calibrate_gaussian(mech["epsilon"], mech["delta"] / 2, 1.0) * swf.sensitivity_bound(
        mech["num_projections"], mech["dim"], mech["delta"] / 2, "chernoff"
    )
    rel = swf.sliced_gaussian_mechanism(key, data, **flow.release.mechanism_kwargs())
    resid = np.asarray(rel.values - rel.directions @ data.T, np.float64).ravel()
    n = resid.size
    lo, hi = stats.chi2.ppf([5e-4, 1 - 5e-4], n)
    ratio = np.sum(resid**2) / claimed**2
    assert lo <= ratio <= hi, f"release noise std {math.sqrt(ratio / n) * claimed:.4g} vs claimed {claimed:.4g}"


def test_release_noise_matches_the_calibration(key):
    y = _unit_rows(key, 400, 4)
    _residual_std_ok(_flow(y, num_projections=32), y, key)


def test_noise_check_fails_if_the_noise_were_smaller(monkeypatch, key):
    y = _unit_rows(key, 400, 4)
    original = privacy.calibrate_subsampled_gaussian  # the seam swf calls (looked up at call time)
    monkeypatch.setattr(privacy, "calibrate_subsampled_gaussian", lambda *a: 0.9 * original(*a))
    with pytest.raises(AssertionError, match="release noise std"):
        _residual_std_ok(_flow(y, num_projections=32), y, key)


# ----------------------------------------------------------------------------------- dynamics
def test_noiseless_flow_descends_sliced_wasserstein(key, x64):
    y = _unit_rows(key, 300, 3) * jr.uniform(jr.fold_in(key, 2), (300, 1))
    x = 2.0 * jr.normal(jr.fold_in(key, 1), (300, 3))
    flow = _flow(y, epsilon=math.inf, num_projections=64, step_size=0.2)
    out, trace = dpflows.run(flow, flow.init(x), key, 40)
    sw = np.asarray(trace["sliced_w2"])
    assert np.all(np.diff(sw) <= 1e-12), sw  # the flow's own sliced W₂² never increases
    fresh = ot.random_directions(jr.fold_in(key, 9), 3, 500)
    before = float(ot.sliced_wasserstein(x, y, directions=fresh))
    after = float(ot.sliced_wasserstein(out.x, y, directions=fresh))
    assert after < before / 20, (before, after)


def test_private_flow_moves_toward_the_data(key):
    # At ε = 5 the release noise (σ ≈ 9) swamps the data's spread (0.3), which 4000 rows cannot
    # resolve; the mean they can: the particles' mean moves from 0 to the data's (0.5, 0).
    y = 0.3 * _unit_rows(key, 4000, 2) + jnp.array([[0.5, 0.0]])
    flow = _flow(y, epsilon=5.0, num_projections=32, step_size=0.5)
    out, _ = dpflows.run(flow, flow.init(jr.normal(jr.fold_in(key, 1), (500, 2))), key, 60)
    assert float(jnp.linalg.norm(jnp.mean(out.x, axis=0) - jnp.mean(y, axis=0))) < 0.15


def test_entropy_adds_brownian_noise(key, x64):
    y, x = _unit_rows(key, 50, 2), jr.normal(jr.fold_in(key, 1), (4000, 2))
    base, _ = _flow(y, epsilon=math.inf, step_size=0.1).step(_flow(y, epsilon=math.inf).init(x), key)
    flow = _flow(y, epsilon=math.inf, step_size=0.1, entropy=2.0)
    new, _ = flow.step(flow.init(x), key)
    np.testing.assert_allclose(np.std(np.asarray(new.x - base.x)), math.sqrt(2 * 2.0 * 0.1), rtol=0.05)


def test_releases_cycle_and_subprojections(key):
    flow = _flow(resample=True, batch_size=20)
    _, trace = dpflows.run(flow, flow.init(jr.normal(key, (16, 2))), key, 14)
    assert list(np.asarray(trace["release"])) == [i % 6 for i in range(14)]
    sub = _flow(num_subprojections=3)
    new, _ = sub.step(sub.init(jr.normal(key, (16, 2))), key)
    assert bool(jnp.all(jnp.isfinite(new.x)))


def test_sharded_run_matches_unsharded(key):
    assert len(jax.devices()) == 4
    flow = _flow(num_projections=16)
    state = flow.init(jr.normal(key, (64, 2)))
    sharded = flow.shard(state)
    assert len(sharded.x.sharding.device_set) == 4
    a, _ = dpflows.run(flow, state, key, 10)
    b, _ = dpflows.run(flow, sharded, key, 10)
    np.testing.assert_allclose(a.x, b.x, atol=1e-5)


def test_generator_baseline_fits_the_release(key):
    from dpflows.nn import MLPGenerator

    y = 0.3 * _unit_rows(key, 1000, 2) + jnp.array([[0.4, 0.0]])
    flow = _flow(y, epsilon=math.inf, num_projections=16, resample=True, num_steps=300)
    gen = MLPGenerator(jr.fold_in(key, 1), latent_dim=2, data_dim=2, width=32, depth=2)
    res = swf.train_sliced_generator(gen, flow.release, key=key, num_steps=300, batch_size=128, learning_rate=3e-3)
    assert res.loss.shape == (300,)
    # Step t trains on release t mod T: every paid-for release is used in turn.
    np.testing.assert_array_equal(res.trace["release"], np.arange(300) % flow.release.directions.shape[0])
    x = jax.vmap(res.generator)(jr.normal(jr.fold_in(key, 2), (1000, 2)))
    x0 = jax.vmap(gen)(jr.normal(jr.fold_in(key, 2), (1000, 2)))
    fresh = ot.random_directions(jr.fold_in(key, 9), 2, 200)
    before = float(ot.sliced_wasserstein(x0, y, directions=fresh))
    assert float(ot.sliced_wasserstein(x, y, directions=fresh)) < before / 10


# -------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data": np.zeros((0, 2))}, "data"),
        ({"data": np.zeros(5)}, "data"),
        ({"data": np.array([[0.1, np.nan]])}, "data"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": "a"}, "epsilon"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"num_projections": 0}, "num_projections"),
        ({"num_projections": 2.5}, "num_projections"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"num_steps": 0}, "num_steps"),
        ({"entropy": -1.0}, "entropy"),
        ({"num_quantiles": 1}, "num_quantiles"),
        ({"num_subprojections": 0}, "num_subprojections"),
        ({"sensitivity": "exact"}, "sensitivity"),
        ({"resample": 1}, "resample"),
        ({"batch_size": 5}, "batch_size"),
        ({"batch_size": 100, "resample": True}, "batch_size"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, match):
    kw = dict(kwargs)
    data = kw.pop("data", None)
    with pytest.raises((ValueError, TypeError), match=match):
        _flow(data, **kw)


def test_bad_particles_and_unclipped_data(key):
    flow = _flow()
    with pytest.raises(ValueError, match="x must have shape"):
        flow.init(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="x must be finite"):
        flow.init(jnp.full((4, 2), jnp.nan))
    with pytest.warns(UserWarning, match="norm > 1"):
        big = _flow(3 * swf_data())
    assert isinstance(big, eqx.Module)
    with pytest.raises(ValueError, match="sampling_rate"):
        swf.sliced_gaussian_mechanism(
            key, swf_data(), num_projections=2, noise_multiplier=1.0, sensitivity=1.0, sampling_rate=0
        )


def test_privacy_levels_share_compiled_code_and_sweep(key):
    # The privacy numbers are leaves, not static: flows at ε = 5 and 10 stack into one sweep.
    flows = [_flow(epsilon=5.0), _flow(epsilon=10.0)]
    state = flows[0].init(jr.normal(key, (16, 2)))
    swept, _ = dpflows.sweep(flows, state, key, 3)
    for i, flow in enumerate(flows):
        single, _ = dpflows.run(flow, state, key, 3)
        np.testing.assert_allclose(np.asarray(swept.x[i]), single.x, atol=1e-5)
    assert float(flows[1].release.noise_std[0]) < float(flows[0].release.noise_std[0])


# ------------------------------------------------------------------- privacy boundary and sweeps
def test_private_release_returns_the_release_and_its_certificate(key):
    y = swf_data()
    release, cert = swf.private_release(key, y, num_projections=8, epsilon=5.0, delta=1e-5)
    assert isinstance(release, swf.SlicedRelease)
    assert str(cert) == str(release.certificate)
    assert cert.epsilon == 5.0
    assert cert.delta == 1e-5
    # The flow on the release equals the one-call convenience path (same key, same draw).
    flow = swf.DPSlicedWassersteinFlow(release, step_size=0.5)
    same = _flow(y, key=key)
    assert bool(eqx.tree_equal(flow, same))
    # key=None draws the key from OS entropy: a different draw (and the same calibration).
    other, other_cert = swf.private_release(None, y, num_projections=8, epsilon=5.0, delta=1e-5)
    assert not np.allclose(other.directions, release.directions)
    assert other_cert.parameters["noise_multiplier"] == cert.parameters["noise_multiplier"]
    # The post-processing hyper-parameters are leaves; the number of releases is the release's shape.
    assert {f for f in ("num_steps", "resample") if hasattr(flow, f)} == set()
    assert all(eqx.is_array(getattr(flow, f)) for f in ("step_size", "entropy", "smooth_particles"))
    assert all(eqx.is_array(getattr(release, f)) for f in ("epsilon", "delta", "noise_multiplier"))
    with pytest.raises(TypeError, match="release"):
        swf.DPSlicedWassersteinFlow(y, step_size=0.5)
    with pytest.raises(ValueError, match="num_steps"):
        _flow(y, num_steps=None, resample=True)


class _CountingFlow(dpflows.AbstractFlow):
    inner: swf.DPSlicedWassersteinFlow
    counter: list = eqx.field(static=True)

    def init(self, x, logw=None):
        return self.inner.init(x, logw)

    def step(self, state, key):
        self.counter.append(1)
        return self.inner.step(state, key)


def test_sweep_over_epsilon_compiles_once_and_certifies_each_member(key):
    # Releases at different ε stack into one flow; a second grid of ε reuses the compiled program.
    counter: list = []
    y = swf_data()

    def flows(epsilons, resample=False):
        return [_CountingFlow(_flow(y, epsilon=e, resample=resample), counter) for e in epsilons]

    state = flows([5.0])[0].init(jr.normal(key, (16, 2)))
    swept, trace = dpflows.sweep(flows([5.0, 10.0]), state, key, 3)
    traced = len(counter)
    assert traced >= 1
    assert bool(jnp.all(trace.ok))
    grid = flows([2.0, 20.0])
    dpflows.sweep(grid, state, jr.fold_in(key, 1), 3)
    assert len(counter) == traced
    # The stacked flow's certificate: one per member, never below the member's own numbers.
    stacked, _ = dpflows.stack([f.inner for f in grid])
    certs = stacked.certificate
    assert isinstance(certs, tuple)
    assert len(certs) == 2
    for cert, flow in zip(certs, grid, strict=True):
        own = flow.inner.certificate
        assert own.epsilon <= cert.epsilon <= own.epsilon * (1 + 1e-6)  # float32 storage, rounded up
        assert own.delta <= cert.delta <= own.delta * (1 + 1e-6)
        assert cert.covers == "mechanism"
        assert cert.parameters["noise_multiplier"] == pytest.approx(own.parameters["noise_multiplier"], rel=1e-6)
    single, _ = dpflows.run(grid[1].inner, state, jr.fold_in(key, 1), 3)
    np.testing.assert_allclose(dpflows.sweep(grid, state, jr.fold_in(key, 1), 3)[0].x[1], single.x, atol=1e-5)
    with pytest.raises(ValueError, match="member"):
        stacked.release.parameters()


def test_degenerate_state_is_reported_in_trace_ok(key):
    # A non-finite release table (not one private_release makes) drives the particles non-finite:
    # the run reports it through trace.ok (and the finite `energy` diagnostic turns NaN).
    flow = _flow()
    broken = eqx.tree_at(lambda f: f.release.tables, flow, jnp.full_like(flow.release.tables, jnp.nan))
    state = flow.init(jr.normal(key, (16, 2)))
    _, good = dpflows.run(flow, state, key, 3)
    assert bool(good.ok)
    assert bool(jnp.all(jnp.isfinite(good["energy"])))
    with pytest.warns(dpflows.FlowWarning):
        _, bad = dpflows.run(broken, state, key, 3, throw=False)
    assert not bool(bad.ok)


def test_generator_learning_rates_and_releases_vmap_through_fit(key):
    # DPSWgen runs on dpflows.fit with the learning rate as a leaf: a vmap over learning rates and
    # stacked releases (ε = 5, 10) is one program and equals the separate trainings.
    from dpflows.nn import MLPGenerator

    gen = MLPGenerator(jr.fold_in(key, 1), latent_dim=2, data_dim=2, width=8, depth=1)
    flows = [_flow(epsilon=e, num_projections=4) for e in (5.0, 10.0)]
    stacked, axes = dpflows.stack(flows)
    rates = jnp.array([1e-3, 1e-2])

    def train(release, lr):
        return swf.train_sliced_generator(gen, release, key=key, num_steps=5, batch_size=16, learning_rate=lr).loss

    batched = eqx.filter_vmap(train, in_axes=(axes.release, 0))(stacked.release, rates)
    for i, flow in enumerate(flows):
        res = swf.train_sliced_generator(gen, flow.release, key=key, num_steps=5, batch_size=16, learning_rate=rates[i])
        np.testing.assert_allclose(batched[i], res.loss, rtol=1e-5, atol=1e-6)
        assert bool(res.trace.ok)
        assert res.opt_state.hyperparams["learning_rate"] == pytest.approx(float(rates[i]))
    assert not np.allclose(batched[0], batched[1])


def test_padded_tables_leave_the_flow_unchanged(key):
    # Releases whose largest Poisson batches differ are padded to one width to stack; the padding
    # repeats each row's largest value, which the maps never read (they use the batch count).
    flow = _flow(resample=True, batch_size=20)
    width = flow.release.tables.shape[-1]
    padded = swf.DPSlicedWassersteinFlow(flow.release.pad_tables(width + 7), step_size=0.5)
    assert padded.release.tables.shape[-1] == width + 7
    state = flow.init(jr.normal(key, (16, 2)))
    a, _ = dpflows.run(flow, state, key, 6)
    b, _ = dpflows.run(padded, state, key, 6)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        flow.release.pad_tables(width - 1)
