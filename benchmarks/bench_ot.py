"""Entropic OT: dpflows vs ott-jax vs POT, at equal accuracy (L1 marginal error ≤ 1e-3).

    python benchmarks/bench_ot.py

Cost convention: dpflows uses ½‖x−y‖² with ε; ott-jax's PointCloud uses ‖x−y‖², so it gets 2ε
(the same plan). POT gets the explicit ½‖x−y‖² cost matrix and its log-domain Sinkhorn.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time, table
from ott.geometry import pointcloud
from ott.solvers import linear

import ot as pot
from dpflows import ot

EPS, THRESHOLD = 1e-2, 1e-3


def _ott_solve(x, y):
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        out = linear.solve(pointcloud.PointCloud(x, y, epsilon=2 * EPS), threshold=THRESHOLD, max_iterations=10_000)
        return out.reg_ot_cost / 2, out.converged


def _pot_solve(x, y):
    """POT's log-domain plan, scored with the entropic objective ⟨C,π⟩ + ε KL(π‖a⊗b).

    (POT's sinkhorn2 returns only the linear part ⟨C,π⟩; its entropy term −H(π) differs from
    KL(π‖a⊗b) by a constant on Π(a, b), so the plan is the same.)
    """
    c = 0.5 * pot.dist(np.asarray(x, np.float64), np.asarray(y, np.float64))
    n, m = c.shape
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    plan = pot.sinkhorn(a, b, c, EPS, method="sinkhorn_log", stopThr=THRESHOLD, numItermax=10_000)
    pos = plan > 0
    kl = np.sum(plan[pos] * np.log(plan[pos] / np.outer(a, b)[pos]))
    return float(np.sum(plan * c) + EPS * kl)


def batch_rows(key):
    k, n, d = 32, 256, 8
    x = jr.normal(key, (n, d)) / np.sqrt(d)
    ys = jr.normal(jr.fold_in(key, 1), (k, n, d)) / np.sqrt(d) * jnp.linspace(0.5, 1.5, k)[:, None, None]
    ys = ys + jnp.linspace(0.0, 1.0, k)[:, None, None]
    ours = jax.jit(
        jax.vmap(lambda y: ot.entropic_ot(x, y, epsilon=EPS, threshold=THRESHOLD, max_iterations=10_000, warn=False))
    )
    theirs = jax.jit(jax.vmap(lambda y: _ott_solve(x, y)))
    one_ott = jax.jit(lambda y: _ott_solve(x, y))
    t_ours = median_time(lambda: ours(ys).cost, repeats=5)
    t_ott = median_time(lambda: theirs(ys)[0], repeats=3)
    t_ott_loop = median_time(lambda: [one_ott(ys[i])[0] for i in range(k)], repeats=3)
    sub = 4
    start = time.perf_counter()
    pot_vals = [_pot_solve(x, ys[i]) for i in range(sub)]
    t_pot = (time.perf_counter() - start) / sub * k
    res = ours(ys)
    agree = float(np.max(np.abs(np.asarray(res.cost) - np.asarray(theirs(ys)[0])) / np.asarray(res.cost)))
    agree_pot = float(np.max(np.abs(np.asarray(res.cost[:sub]) - np.array(pot_vals)) / np.asarray(res.cost[:sub])))
    iters = np.asarray(res.num_iters)
    rows = [
        (
            f"dpflows, {k} problems batched (jit+vmap), n={n}, d={d}",
            t_ours,
            f"all converged: {bool(res.converged.all())}; iterations per lane {iters.min()}–{iters.max()}",
        ),
        (
            "ott-jax linear.solve, jit+vmap (adaptive loop)",
            t_ott,
            f"ott vmapped / dpflows = {t_ott / t_ours:.1f}×; max rel. cost diff {agree:.1e}",
        ),
        ("ott-jax, Python loop of one compiled solve", t_ott_loop, f"ott loop / dpflows = {t_ott_loop / t_ours:.1f}×"),
        (
            f"POT sinkhorn_log loop (scaled from {sub})",
            t_pot,
            f"POT / dpflows = {t_pot / t_ours:.0f}×; max rel. cost diff {agree_pot:.1e}",
        ),
    ]
    return table(rows, "batch of 32 entropic OT problems (CPU, float32; POT float64)")


def single_rows(key):
    rows = []
    for n in (1000, 4000):
        for d in (2, 64):
            x = jr.normal(jr.fold_in(key, n + d), (n, d)) / np.sqrt(d)
            y = jr.normal(jr.fold_in(key, n + d + 1), (n, d)) / np.sqrt(d) + 0.5
            ours = jax.jit(
                lambda x, y: ot.entropic_ot(x, y, epsilon=EPS, threshold=THRESHOLD, max_iterations=10_000, warn=False)
            )
            theirs = jax.jit(_ott_solve)
            t_ours = median_time(lambda ours=ours, x=x, y=y: ours(x, y).cost, repeats=3)
            t_ott = median_time(lambda theirs=theirs, x=x, y=y: theirs(x, y)[0], repeats=3)
            r = ours(x, y)
            note = f"ott / dpflows = {t_ott / t_ours:.2f}×; {int(r.num_iters)} it; converged {bool(r.converged)}"
            if n == 1000:
                start = time.perf_counter()
                _pot_solve(x, y)
                t_pot = time.perf_counter() - start
                note += f"; POT / dpflows = {t_pot / t_ours:.0f}×"
            rows.append((f"n = m = {n}, d = {d}: dpflows", t_ours, note))
            rows.append((f"n = m = {n}, d = {d}: ott-jax", t_ott, ""))
            if n == 4000:
                online = jax.jit(
                    lambda x, y: ot.entropic_ot(
                        x, y, epsilon=EPS, threshold=THRESHOLD, max_iterations=10_000, method="online", warn=False
                    )
                )
                t_on = median_time(lambda online=online, x=x, y=y: online(x, y).cost, repeats=1)
                rows.append(
                    (
                        f"n = m = {n}, d = {d}: dpflows method='online' (no n×m matrix)",
                        t_on,
                        f"online / dense = {t_on / t_ours:.1f}×; memory O((n+m)·256)",
                    )
                )
    return table(rows, "single problems (CPU, float32)")


def main() -> str:
    key = jr.key(0)
    return batch_rows(key) + "\n\n" + single_rows(key)


if __name__ == "__main__":
    print(main())
