"""Sinkhorn Hopfield memory: the checks of METHODS.md §2e, the baseline, and named errors."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import ot
from dpflows.hopfield import EuclideanHopfield, SinkhornHopfield, pad_patterns
from helpers import hopfield_patterns

# ε = 0.5 ≈ ½ × the squared nearest-neighbour spacing of the 8-point patterns: at ε = 0.2 the
# cross Sinkhorn problem of a cloud with itself has a slow mode (an isolated point, plan nearly
# block-diagonal) and 2·10⁴ iterations leave 5e-3 errors in the weight gradient (flagged as
# unconverged, see the docstring of SinkhornHopfield).
EPS, BETA = 0.5, 4.0


def _memory(dtype=jnp.float64, **kw):
    kw = {"epsilon": EPS, "beta": BETA, "threshold": 1e-10, "max_iterations": 20000, **kw}
    return SinkhornHopfield(hopfield_patterns(dtype), **kw)


def _query(key, k=1, noise=0.4, n=8, dtype=jnp.float64):
    pats = hopfield_patterns(dtype)
    m = pats.shape[1]  # a noisy reordering of the pattern's points, or a resample for n != m
    pick = jr.permutation(key, m) if n == m else jr.choice(key, m, (n,))
    return pats[k][pick] + noise * jr.normal(jr.fold_in(key, 1), (n, 2), dtype)


# ------------------------------------------------------------------------- 1. gradient identity
def test_grad_of_divergence_is_the_barycentric_difference(x64, key):
    # ∂S/∂x_i / a_i = T_self(x_i) − T_{μ→ν}(x_i)  and  ∂S/∂a_i = f(x_i) − s(x_i) + const.
    x = jr.normal(key, (10, 2))
    a = jax.nn.softmax(jr.normal(jr.fold_in(key, 1), (10,)))
    y = jr.normal(jr.fold_in(key, 2), (7, 2)) + 1.0
    kw = dict(epsilon=0.3, threshold=1e-12, max_iterations=50000)
    res = ot.sinkhorn_divergence(x, y, a, **kw)
    gx = jax.grad(lambda z: ot.sinkhorn_divergence(z, y, a, **kw).value)(x)
    closed = ot.barycentric_map(res.xx) - ot.barycentric_map(res.xy)
    np.testing.assert_allclose(gx / a[:, None], closed, atol=1e-8)
    ga = jax.grad(lambda w: ot.sinkhorn_divergence(x, y, w, **kw).value)(a)
    psi = res.f_xy - res.f_xx
    np.testing.assert_allclose(ga - ga.mean(), psi - psi.mean(), atol=1e-8)


def test_step_is_minus_the_gradient_of_the_energy(x64, key):
    # The whole pipeline (batched solves, responsibilities, maps): Δx_i = −τ ∂E/∂x_i / a_i and
    # Δlogw_i = −η (∂E/∂a_i − ⟨a, ∂E/∂a⟩).
    memory = _memory(step_size=0.7, weight_step=0.05, beta=0.3)
    pats = hopfield_patterns(jnp.float64)
    x = 0.5 * (pats[0] + pats[2]) + 0.3 * jr.normal(key, (8, 2))  # between two patterns: shared responsibility
    a = jax.nn.softmax(0.3 * jr.normal(jr.fold_in(key, 5), (8,)))
    state = memory.query(x, a)
    p = memory.responsibilities(x, a)
    assert float(jnp.sort(p)[-2]) > 1e-4, p  # a mixed case, not one-hot
    new, info = memory.step(state, jr.key(0))
    gx = jax.grad(lambda z: memory.energy(z, a))(x)
    np.testing.assert_allclose((new.x - x) / 0.7, -gx / a[:, None], atol=1e-7)
    ga = jax.grad(lambda w: memory.energy(x, w))(a)
    dlogw = new.logw - state.logw  # = −η(ψ − ⟨a, ψ⟩) − log Z: compare differences to point 0
    np.testing.assert_allclose(dlogw - dlogw[0], -0.05 * (ga - ga[0]), atol=1e-8)
    np.testing.assert_allclose(info["energy"], memory.energy(x, a), rtol=1e-12)


def test_divergences_match_single_solves_and_ott(x64, key):
    memory = _memory()
    x = _query(key)
    pats = hopfield_patterns(jnp.float64)
    single = [float(ot.sinkhorn_divergence(x, pats[k], epsilon=EPS, threshold=1e-10).value) for k in range(3)]
    np.testing.assert_allclose(memory.divergences(x), single, rtol=1e-8, atol=1e-10)
    pairs = memory.pattern_divergences()
    np.testing.assert_allclose(pairs, pairs.T, rtol=1e-8)
    np.testing.assert_allclose(
        pairs[0, 2], ot.sinkhorn_divergence(pats[0], pats[2], epsilon=EPS, threshold=1e-10).value, rtol=1e-8
    )
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence as sd

    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        theirs = [
            float(
                sd.sinkhorn_divergence(
                    pointcloud.PointCloud, x, pats[k], epsilon=2 * EPS, solve_kwargs={"threshold": 1e-10}
                )[1].divergence
            )
            / 2  # ott's cost ‖x − y‖² = 2c, ε_ott = 2ε
            for k in range(3)
        ]
    np.testing.assert_allclose(memory.divergences(x), theirs, rtol=1e-6, atol=1e-9)


def test_ragged_patterns_are_padded_with_absent_points(x64, key):
    pats = hopfield_patterns(jnp.float64)
    clouds = [pats[0][:5], pats[1], pats[2][:3]]
    w = [jnp.full((5,), 0.2), jax.nn.softmax(jnp.arange(8.0)), jnp.array([0.5, 0.25, 0.25])]
    memory = SinkhornHopfield(clouds, w, epsilon=EPS, beta=BETA, threshold=1e-10, max_iterations=20000)
    assert memory.patterns.shape == (3, 8, 2)
    assert float(memory.pattern_weights[0, 5:].sum()) == 0.0
    x = _query(key)
    single = [
        float(ot.sinkhorn_divergence(x, c, b=b, epsilon=EPS, threshold=1e-10).value)
        for c, b in zip(clouds, w, strict=True)
    ]
    np.testing.assert_allclose(memory.divergences(x), single, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ 2. monotone energy, 7. simplex
@pytest.mark.parametrize("self_term", [True, False])
def test_energy_decreases_and_weights_stay_on_the_simplex(x64, key, self_term):
    memory = _memory(step_size=0.3, self_term=self_term)
    x = _query(key, noise=1.0)
    _, trace = memory.retrieve(x, num_steps=25, tol=0.0)
    e = np.asarray(trace["energy"])
    if self_term:  # exact gradient flow of E: non-increasing for small steps
        assert np.all(np.diff(e) <= 1e-10 * (1 + np.abs(e[1:]))), np.diff(e)
    assert e[-1] < 0.2 * e[0]
    state = memory.query(x)
    for _ in range(5):
        state, _ = memory.step(state, jr.key(0))
        w = state.weights
        assert float(jnp.min(w)) >= 0
        assert abs(float(jnp.sum(w)) - 1) < 1e-12


def test_weights_stay_normalised_in_float32(key):
    memory = SinkhornHopfield(hopfield_patterns(), epsilon=EPS, beta=BETA, weight_step=0.05)
    state, _ = memory.retrieve(_query(key, dtype=jnp.float32, noise=1.0), num_steps=30, tol=0.0)
    assert abs(float(jnp.sum(state.weights)) - 1) < 1e-6
    assert float(jnp.min(state.weights)) >= 0


# ------------------------------------------------------------------------------ 3. fixed points
def test_stored_patterns_are_fixed_points(x64):
    memory = _memory()
    pats = hopfield_patterns(jnp.float64)
    for k in range(3):
        p = memory.responsibilities(pats[k])
        assert float(p[k]) > 1 - 1e-12  # β × gap ≫ log K
        out, trace = memory.retrieve(pats[k], num_steps=10, tol=0.0)
        assert float(memory.divergences(out)[k]) < 1e-9
        np.testing.assert_allclose(out.x, pats[k], atol=1e-6)
        assert memory.report(trace).index == k


def test_without_the_self_term_a_unit_step_is_the_hopfield_average(x64, key):
    memory = _memory(self_term=False, step_size=1.0, weight_step=0.0)
    x = _query(key, noise=1.5)
    state = memory.query(x)
    new, _ = memory.step(state, jr.key(0))
    p = memory.responsibilities(x)
    pats, b = memory.patterns, memory.pattern_weights
    maps = jnp.stack(
        [
            ot.barycentric_map(ot.entropic_ot(x, pats[k], b=b[k], epsilon=EPS, threshold=1e-10, max_iterations=20000))
            for k in range(3)
        ]
    )
    np.testing.assert_allclose(new.x, jnp.tensordot(p, maps, axes=1), atol=1e-7)


# --------------------------------------------------------------- 4. basin, 5. geometric rate
def test_queries_in_a_basin_stay_there_and_converge_geometrically(x64, key):
    memory = _memory(step_size=0.5)
    radii = memory.basin_radii()
    assert bool(jnp.all(radii > 1.0))  # well-separated patterns
    for trial in range(4):
        k = trial % 3
        x = _query(jr.fold_in(key, trial), k=k, noise=0.5)
        assert float(memory.divergences(x)[k]) <= float(radii[k])
        _, trace = memory.retrieve(x, num_steps=40, tol=1e-12)
        report = memory.report(trace, radii)
        assert report.stayed_in_basin
        assert report.index == k
        assert report.start_index == k
        assert report.monotone
        assert report.sinkhorn_converged
        assert report.rate < 0.9, report  # a log-linear fit of E_t − E_T has a negative slope
        assert report.divergence < 1e-2 * float(memory.divergences(x)[k])


# ------------------------------------------------------------------ 6. permutation / resampling
def test_permutation_and_resampling_do_not_change_retrieval(x64, key):
    memory = _memory(step_size=0.5)
    x = _query(key, noise=0.8)
    out, trace = memory.retrieve(x, num_steps=15, tol=0.0)
    perm = jr.permutation(jr.fold_in(key, 3), 8)
    out_p, trace_p = memory.retrieve(x[perm], num_steps=15, tol=0.0)
    np.testing.assert_allclose(out_p.x, out.x[perm], atol=1e-8)
    np.testing.assert_allclose(trace_p["energy"], trace["energy"], rtol=1e-9, atol=1e-12)
    # The same measure on 2n points (each point split in two halves): identical divergences.
    dup = jnp.concatenate([x, x])
    out_d, trace_d = memory.retrieve(dup, num_steps=15, tol=0.0)
    np.testing.assert_allclose(trace_d["divergences"], trace["divergences"], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(out_d.x[:8], out.x, atol=1e-7)
    # A different sample size from the same pattern's law is retrieved to the same pattern.
    bigger = _query(jr.fold_in(key, 9), k=1, noise=0.8, n=16)  # n = 16: reuses the compiled retrieval
    assert int(memory.classify(memory.retrieve(bigger, num_steps=15)[0])) == 1


def test_outlier_mass_is_removed_by_the_weight_step(x64, key):
    memory = _memory(step_size=0.5, weight_step=0.04)
    x = _query(key, noise=0.2).at[0].set(jnp.array([9.0, -9.0]))  # one far outlier
    # warn=False: at threshold 1e-10 one of the 41 solves may stop short of it (trace.ok says so);
    # this test is about the weights, test_unconverged_retrieval_warns_with_the_fix about the warning.
    out, _ = memory.retrieve(x, num_steps=40, tol=0.0, warn=False)
    assert float(out.weights[0]) < 0.2 / 8  # started at 1/8: the reaction removes its mass
    assert float(jnp.min(out.weights[1:])) > 1 / 8  # and gives it to the inliers
    assert int(memory.classify(out)) == 1


# ------------------------------------------------------------------------------ batching, jit
def test_vmap_over_queries_equals_the_loop(key):
    memory = SinkhornHopfield(hopfield_patterns(), epsilon=EPS, beta=BETA, threshold=1e-4)
    queries = jnp.stack([_query(jr.fold_in(key, i), k=i % 3, dtype=jnp.float32) for i in range(4)])
    batched, btrace = jax.vmap(lambda q: memory.retrieve(q, num_steps=12, tol=1e-5))(queries)
    for i in range(4):
        single, strace = memory.retrieve(queries[i], num_steps=12, tol=1e-5)
        np.testing.assert_allclose(batched.x[i], single.x, atol=2e-5)
        np.testing.assert_array_equal(btrace["active"][i], strace["active"])
    many, mtrace = memory.retrieve_many(queries, num_steps=12, tol=1e-5)
    np.testing.assert_allclose(many.x, batched.x, atol=2e-5)
    np.testing.assert_array_equal(mtrace["active"], btrace["active"])
    grouped, _ = memory.retrieve_many(queries, jnp.full((4, 8), 1 / 8), num_steps=12, tol=1e-5, batch_size=2)
    np.testing.assert_allclose(grouped.x, batched.x, atol=2e-5)
    labels = jax.vmap(memory.classify)(batched)
    np.testing.assert_array_equal(labels, np.arange(4) % 3)
    jitted, _ = jax.jit(lambda q: memory.retrieve(q, num_steps=12, tol=1e-5))(queries[0])
    np.testing.assert_allclose(jitted.x, memory.retrieve(queries[0], num_steps=12, tol=1e-5)[0].x, atol=1e-5)


def test_retrieve_stops_on_the_energy_tolerance(x64, key):
    memory = _memory()
    _, trace = memory.retrieve(_query(key), num_steps=200, tol=1e-8)
    active = np.asarray(trace["active"])
    taken = int(active.sum()) - 1
    assert 1 <= taken < 200
    assert not active[-1]
    e = np.asarray(trace["energy"])
    assert abs(e[taken] - e[taken - 1]) < 1e-8
    np.testing.assert_array_equal(e[taken:], e[taken])  # frozen after the stop


def test_sweep_over_leaves_freezes_each_member_on_its_own(key):
    # threshold and retrieval_tol are leaves: one compiled sweep, each member stopped by its own rule.
    pats = hopfield_patterns()
    flows = [
        SinkhornHopfield(pats, epsilon=EPS, beta=BETA, threshold=th, retrieval_tol=tol)
        for th, tol in ((1e-4, 1e-3), (1e-5, 1e-6))
    ]
    state = flows[0].init(_query(key, dtype=jnp.float32))
    final, trace = dpflows.sweep(flows, state, jr.key(0), 30)
    for i, flow in enumerate(flows):
        single, strace = dpflows.run(flow, state, jr.key(0), 30, throw=False)
        np.testing.assert_allclose(final.x[i], single.x, atol=2e-5)
        np.testing.assert_array_equal(trace["active"][i], strace["active"])
    taken = np.asarray(trace["active"]).sum(axis=1)
    assert taken[0] < taken[1], taken  # the looser tolerance stops first


def test_unconverged_retrieval_warns_with_the_cause_and_the_fix(key):
    # Ten Sinkhorn iterations at ε = 0.01 cannot reach the threshold: trace.ok is False, and it says so.
    memory = SinkhornHopfield(hopfield_patterns(), epsilon=0.01, beta=BETA, max_iterations=10, check_every=10)
    query = _query(key, dtype=jnp.float32)
    match = r"did not converge in \d+ of 4 evaluated steps.*larger epsilon, more max_iterations or a looser threshold"
    with pytest.warns(ot.ConvergenceWarning, match=match):
        _, trace = memory.retrieve(query, num_steps=3, tol=0.0)
    assert not bool(trace.ok)
    with pytest.warns(ot.ConvergenceWarning, match=r"\(1 of 1 queries\)"):
        memory.retrieve_many(query[None], num_steps=3, tol=0.0)
    _, quiet = memory.retrieve(query, num_steps=3, tol=0.0, warn=False)  # -W error: no warning here
    assert not bool(quiet.ok)


# --------------------------------------------------------------------------------- the baseline
def test_euclidean_baseline_update_and_its_blind_spot(key):
    pats = hopfield_patterns(m=16)
    base = EuclideanHopfield(pats, beta=0.5)
    x = pats[2] + 0.3 * jr.normal(key, (16, 2))
    state = base.init(x)
    new, _ = base.step(state, jr.key(0))
    s = 0.5 * jnp.sum((pats - x[None]) ** 2, axis=(1, 2))
    np.testing.assert_allclose(new.x, jnp.tensordot(jax.nn.softmax(-0.5 * s), pats, axes=1), rtol=1e-5, atol=1e-5)
    assert int(base.classify(x)) == 2
    # Reordering the query's points does not change the measure, but the flattened vector moves
    # far away: the baseline loses the pattern its own stored order defined; Sinkhorn does not care.
    other = jnp.concatenate([pats[2][8:], pats[2][:8]]) + 0.3 * jr.normal(key, (16, 2))
    sink = SinkhornHopfield(pats, epsilon=EPS, beta=BETA)
    assert int(sink.classify(other)) == 2
    dist_true = float(base.scores(other)[2])
    assert dist_true > float(base.scores(x)[2]) * 3


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: SinkhornHopfield([], epsilon=0.1, beta=1.0), "patterns must hold at least one"),
        (lambda p: SinkhornHopfield(p[0], epsilon=0.1, beta=1.0), r"patterns must have shape \(K, m, d\)"),
        (
            lambda p: SinkhornHopfield(p.at[0, 0, 0].set(jnp.nan), epsilon=0.1, beta=1.0),
            r"patterns\[0\] must be finite",
        ),
        (lambda p: SinkhornHopfield([p[0], p[1][:, :1]], epsilon=0.1, beta=1.0), r"patterns\[1\] must have shape"),
        (lambda p: SinkhornHopfield([p[0], p[1][:0]], epsilon=0.1, beta=1.0), r"patterns\[1\] must hold at least"),
        (lambda p: SinkhornHopfield(p, jnp.ones((3, 8)), epsilon=0.1, beta=1.0), r"pattern_weights\[0\] must sum to 1"),
        (lambda p: SinkhornHopfield(p, jnp.ones((2, 8)) / 8, epsilon=0.1, beta=1.0), "pattern_weights must have shape"),
        (lambda p: SinkhornHopfield(p, epsilon=0.0, beta=1.0), "epsilon must be finite and > 0"),
        (lambda p: SinkhornHopfield(p, epsilon=jnp.nan, beta=1.0), "epsilon must be finite and > 0"),
        (lambda p: SinkhornHopfield(p, epsilon=0.1, beta=-1.0), "beta must be finite and > 0"),
        (lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0, step_size=0.0), "step_size must be finite and > 0"),
        (lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0, weight_step=-1.0), "weight_step must be finite and >= 0"),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).retrieve(jnp.zeros((4, 3))),
            r"query must have shape \(n, 2\)",
        ),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).retrieve(jnp.zeros((0, 2))),
            "query must hold at least one",
        ),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).retrieve(jnp.full((4, 2), jnp.inf)),
            "query must be finite",
        ),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).energy(jnp.zeros((4, 2)), jnp.ones(4)),
            "weights must sum to 1",
        ),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).retrieve(jnp.zeros((4, 2)), num_steps=0),
            "num_steps must be >= 1",
        ),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).retrieve(jnp.zeros((4, 2)), tol=-1.0),
            "tol must be finite and >= 0",
        ),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).retrieve_many(jnp.zeros((4, 2))),
            r"queries must have shape \(B, n, 2\)",
        ),
        (
            lambda p: SinkhornHopfield(p, epsilon=0.1, beta=1.0).retrieve_many(jnp.zeros((2, 4, 2)), jnp.ones((2, 4))),
            r"weights\[0\] must sum to 1",
        ),
        (lambda p: EuclideanHopfield([p[0], p[1][:4]], beta=1.0), "same shape"),
        (lambda p: EuclideanHopfield(p, beta=0.0), "beta must be finite and > 0"),
        (lambda p: EuclideanHopfield(p, beta=1.0, step_size=2.0), r"step_size must lie in \[0.0, 1.0\]"),
        (lambda p: EuclideanHopfield(p, beta=1.0).classify(jnp.zeros((7, 2))), "query must have the stored shape"),
    ],
)
def test_bad_inputs_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make(hopfield_patterns())


def test_pad_patterns_keeps_dense_input_as_is():
    pats = hopfield_patterns()
    y, b = pad_patterns(pats)
    np.testing.assert_array_equal(y, pats)
    np.testing.assert_allclose(b, jnp.full((3, 8), 1 / 8), rtol=1e-6)
