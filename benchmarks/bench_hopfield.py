"""Sinkhorn Hopfield retrieval: dpflows (batched, lockstep) vs a loop of plain ott-jax calls vs a loop of POT calls.

    python benchmarks/bench_hopfield.py

The update (METHODS.md §2c, weights held fixed so all three do the same arithmetic): for every query
and step, K divergences S_ε(μ, ξ_k) with their potentials, the self problem OT_ε(μ, μ), the
responsibilities p = softmax(−βS) and the move x ← x + τ(Σ_k p_k T_k(x) − T_self(x)). dpflows runs all
queries × patterns as one compiled, vmapped program; the peers loop in Python over queries, steps and
patterns, as a user without a batched solver would, each call jitted (ott-jax) or vectorised NumPy
(POT, log-domain Sinkhorn). The peers get the patterns' self terms OT_ε(ξ_k, ξ_k) precomputed for free.
All three end at the same points (checked; differences are of the order the 1e-3 Sinkhorn threshold
allows). dpflows is timed through ``retrieve_many`` (one query at a time on CPU inside one compiled
``lax.map``) and through a plain ``jax.vmap`` over queries. K = 32 patterns, n = m = 64 points, d = 8, ε = 0.1·d,
β = 1, τ = 0.5, threshold 1e-3 (L1 marginal error), 3 steps.

"grid: loop vs sweep" (``python benchmarks/bench_hopfield.py grid`` runs it alone): grids that vary
only leaves, timed compiled (median of 5 runs for (a), 3 for (b), after a warm-up). (a) The ``hopfield_perturbation``
experiment's query levels at demo size: a Python loop drawing and retrieving each level's queries
(what the experiment does) vs one vmapped draw of all levels and one stream of retrievals. The
retrieval work is the same; measured, the vmapped form was no faster, and at demo size, where
compilation dominates, the whole experiment took 135 s / 190 s against 93 s / 129 s for the loop
(two alternating runs each, busy 2-core machine), so the experiment keeps its loop.
(b) A β grid for one query: a loop of ``retrieve`` over rebuilt memories vs one ``dpflows.sweep``
over the stacked memories (each member frozen by the energy stop on its own).
"""

from __future__ import annotations

import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time, table
from ott.geometry import pointcloud
from ott.solvers import linear

import dpflows
import ot as pot
from dpflows.experiments.hopfield_memory import make_memories, perturb
from dpflows.hopfield import SinkhornHopfield

K, N, D, STEPS, TAU, BETA, THRESHOLD = 32, 64, 8, 3, 0.5, 1.0, 1e-3
EPS = 0.1 * D


def _problem(key, k=K, n=N, d=D, queries=8):
    pats = 2.0 * jr.normal(key, (k, 1, d)) + jr.normal(jr.fold_in(key, 1), (k, n, d))
    labels = jr.randint(jr.fold_in(key, 2), (queries,), 0, k)
    q = pats[labels] + 0.5 * jr.normal(jr.fold_in(key, 3), (queries, n, d))
    return pats, q


def _ours(pats, steps=STEPS):
    memory = SinkhornHopfield(pats, epsilon=EPS, beta=BETA, step_size=TAU, weight_step=0.0, threshold=THRESHOLD)
    return jax.jit(lambda qs: memory.retrieve_many(qs, num_steps=steps, tol=0.0)[0].x)


def _ours_vmap(pats, steps=STEPS):
    """The same through a plain ``jax.vmap`` over queries (all in lockstep)."""
    memory = SinkhornHopfield(pats, epsilon=EPS, beta=BETA, step_size=TAU, weight_step=0.0, threshold=THRESHOLD)
    return jax.jit(jax.vmap(lambda q: memory.retrieve(q, num_steps=steps, tol=0.0)[0].x))


# ---------------------------------------------------------------------------------- ott-jax
def _ott_solve(x, y):
    """OT_ε with ott (cost ‖x−y‖², ε_ott = 2ε): value in our units and the barycentric map T(x)."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        out = linear.solve(pointcloud.PointCloud(x, y, epsilon=2 * EPS), threshold=THRESHOLD, max_iterations=1000)
        plan = out.matrix
    return out.reg_ot_cost / 2, (plan @ y) / jnp.sum(plan, axis=1, keepdims=True)


_ott_pair = jax.jit(_ott_solve)


def _ott_retrieve(pats, q, self_terms, steps=STEPS):
    x = q
    for _ in range(steps):
        s_self, t_self = _ott_pair(x, x)
        vals, maps = [], []
        for k in range(pats.shape[0]):
            v, t = _ott_pair(x, pats[k])
            vals.append(v)
            maps.append(t)
        s = jnp.stack(vals) - 0.5 * s_self - 0.5 * self_terms
        p = jax.nn.softmax(-BETA * s)
        x = x + TAU * (jnp.tensordot(p, jnp.stack(maps), axes=1) - t_self)
    return x


# -------------------------------------------------------------------------------------- POT
def _pot_solve(x, y):
    c = 0.5 * pot.dist(x, y)
    a, b = np.full(x.shape[0], 1 / x.shape[0]), np.full(y.shape[0], 1 / y.shape[0])
    plan, log = pot.bregman.sinkhorn_log(a, b, c, EPS, stopThr=THRESHOLD, numItermax=1000, log=True)
    f = EPS * (log["log_u"] - np.log(a))
    g = EPS * (log["log_v"] - np.log(b))
    return a @ f + b @ g, plan @ y / plan.sum(axis=1, keepdims=True)


def _pot_retrieve(pats, q, self_terms, steps=STEPS):
    x = np.asarray(q, np.float64)
    for _ in range(steps):
        s_self, t_self = _pot_solve(x, x)
        out = [_pot_solve(x, pats[k]) for k in range(pats.shape[0])]
        s = np.array([v for v, _ in out]) - 0.5 * s_self - 0.5 * self_terms
        p = np.exp(-BETA * (s - s.min()))
        p /= p.sum()
        x = x + TAU * (np.tensordot(p, np.stack([t for _, t in out]), axes=1) - t_self)
    return x


# ------------------------------------------------------------------------- grid: loop vs sweep
def _level_queries(key, pats, level, trials, kind="jitter"):
    labels = jr.randint(jr.fold_in(key, 1), (trials,), 0, pats.shape[0])
    keys = jr.split(key, trials)
    x, w, _ = jax.vmap(lambda k, lab: perturb(k, pats[lab], kind, level, spread=1.0, radius=2.0, max_jitter=3.0))(
        keys, labels
    )
    return x, w


@eqx.filter_jit
def _all_levels(keys, pats, levels, trials: int):
    x, w = jax.vmap(lambda k, lv: _level_queries(k, pats, lv, trials))(keys, levels)
    return x.reshape(-1, *x.shape[2:]), w.reshape(-1, w.shape[-1])


def grid_rows() -> str:
    """(a) query levels of the experiment at demo size, (b) a β grid: loop vs one vmapped call."""
    levels = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials, steps = 8, 5
    pats = make_memories(jr.key(0), 8, 12, 2, 1.0, 2.0)
    memory = SinkhornHopfield(pats, epsilon=0.2, beta=10.0, step_size=0.5)
    keys = jnp.stack([jr.fold_in(jr.key(1), i) for i in range(len(levels))])

    def loop():
        out = []
        for i, level in enumerate(levels):
            x, w = _level_queries(keys[i], pats, level, trials)
            out.append(memory.retrieve_many(x, w, num_steps=steps, warn=False)[1]["divergences"])
        return out

    def swept():
        x, w = _all_levels(keys, pats, jnp.asarray(levels), trials)
        return memory.retrieve_many(x, w, num_steps=steps, warn=False)[1]["divergences"]

    t_loop = median_time(loop, repeats=5)
    t_sweep = median_time(swept, repeats=5)
    same = np.allclose(np.concatenate([np.asarray(v) for v in loop()]), np.asarray(swept()), atol=1e-4)

    betas = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]
    flows = [SinkhornHopfield(pats, epsilon=0.2, beta=b, step_size=0.5, retrieval_tol=1e-6) for b in betas]
    query = pats[3] + 0.5 * jr.normal(jr.key(2), pats[3].shape)
    state = flows[0].init(query)

    def beta_loop():
        return [dpflows.run(f, state, jr.key(0), 20, throw=False)[0].x for f in flows]

    def beta_sweep():
        return dpflows.sweep(flows, state, jr.key(0), 20)[0].x

    t_bloop = median_time(beta_loop, repeats=3)
    t_bsweep = median_time(beta_sweep, repeats=3)
    agree = float(np.max(np.abs(np.stack([np.asarray(v) for v in beta_loop()]) - np.asarray(beta_sweep()))))
    rows = [
        (f"levels ({len(levels)} × {trials} queries, K = 8, n = 12, d = 2): loop", t_loop, "what the experiment does"),
        (
            "levels: one vmapped draw + one retrieve_many",
            t_sweep,
            f"loop / sweep = {t_loop / t_sweep:.2f}×; same: {same}",
        ),
        (f"β grid ({len(betas)} memories, 20 steps, one query): loop of run", t_bloop, ""),
        ("β grid: dpflows.sweep", t_bsweep, f"loop / sweep = {t_bloop / t_bsweep:.2f}×; max |Δx| {agree:.1e}"),
    ]
    return table(rows, "grid: loop vs sweep (compiled; median of 5 / 3 runs)")


def main() -> str:
    rows = []
    for queries in (1, 8, 64):
        pats, q = _problem(jr.key(queries), queries=queries)
        ours = _ours(pats)
        t_ours = median_time(lambda q=q, ours=ours: ours(q), repeats=5)
        x_ours = np.asarray(ours(q))
        vm = _ours_vmap(pats)
        t_vmap = median_time(lambda q=q, vm=vm: vm(q), repeats=5)
        # The peers on a subset of queries (their cost is linear in the number of queries).
        sub = min(queries, 4)
        self_ott = jnp.stack([_ott_pair(pats[k], pats[k])[0] for k in range(K)])
        _ott_retrieve(pats, q[0], self_ott, steps=1)  # compile
        start = time.perf_counter()
        x_ott = [np.asarray(_ott_retrieve(pats, q[i], self_ott)) for i in range(sub)]
        t_ott = (time.perf_counter() - start) / sub * queries
        pats64 = np.asarray(pats, np.float64)
        self_pot = np.array([_pot_solve(pats64[k], pats64[k])[0] for k in range(K)])
        sub_pot = min(queries, 2)
        start = time.perf_counter()
        x_pot = [_pot_retrieve(pats64, q[i], self_pot) for i in range(sub_pot)]
        t_pot = (time.perf_counter() - start) / sub_pot * queries
        err_ott = max(float(np.max(np.abs(x_ott[i] - x_ours[i]))) for i in range(sub))
        err_pot = max(float(np.max(np.abs(x_pot[i] - x_ours[i]))) for i in range(sub_pot))
        rows.append((queries, t_ours, t_vmap, t_ott, t_pot, err_ott, err_pot))
    # Growth of dpflows' cost with K and n (64 queries).
    growth = []
    for k, n in ((8, 64), (32, 64), (128, 64), (32, 32), (32, 128)):
        pats, q = _problem(jr.key(k + n), k=k, n=n, queries=64)
        ours = _ours(pats)
        growth.append((k, n, median_time(lambda q=q, ours=ours: ours(q), repeats=3)))
    lines = [
        f"### Sinkhorn Hopfield retrieval ({STEPS} steps, K = {K}, n = {N}, d = {D})",
        "",
        "| queries | dpflows `retrieve_many` | dpflows `vmap` | ott-jax loop | POT loop | vs ott | vs POT "
        "| max |Δx| ott / POT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for queries, t_ours, t_vmap, t_ott, t_pot, e_ott, e_pot in rows:
        lines.append(
            f"| {queries} | {t_ours * 1e3:.1f} ms | {t_vmap * 1e3:.1f} ms | {t_ott * 1e3:.0f} ms | "
            f"{t_pot * 1e3:.0f} ms | "
            f"{t_ott / t_ours:.1f}× | {t_pot / t_ours:.1f}× | {e_ott:.1e} / {e_pot:.1e} |"
        )
    lines += ["", "dpflows, 64 queries: cost vs K and n", "", "| K | n | time |", "|---|---|---|"]
    lines += [f"| {k} | {n} | {t * 1e3:.1f} ms |" for k, n, t in growth]
    lines += ["", "Peers timed on ≤ 4 (ott) / ≤ 2 (POT) queries and scaled linearly (their loops are per query)."]
    return "\n".join(lines) + "\n\n" + grid_rows()


if __name__ == "__main__":
    print(grid_rows() if sys.argv[1:] == ["grid"] else main())
