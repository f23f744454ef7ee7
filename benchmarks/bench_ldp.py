"""One training step of the noise-matched loss: dpflows vs ott-jax called directly vs POT.

    python benchmarks/bench_ldp.py

The step is the matched entropic cost OT_ε(model batch, private records) and its gradient w.r.t.
the model points (what a generator step back-propagates), at ε = σ² for c = ½‖x−y‖², threshold 1e-3.
ott-jax gets ‖x−y‖² and 2ε (the same plan) and is differentiated through its implicit solver;
POT (NumPy) has no gradient here: its row is the forward solve only, so its ratio is a lower bound.
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
from dpflows import ldp

SIGMA, THRESHOLD, M = 0.5, 1e-3, 4096


def _data(key, n, m):
    k1, k2 = jr.split(key)
    y = jr.normal(k1, (m, 2)) * 0.6 + SIGMA * jr.normal(k2, (m, 2))
    return jr.normal(jr.fold_in(key, 7), (n, 2)), y


def _ours(noise):
    return jax.jit(jax.value_and_grad(lambda x, y: ldp.noise_matched_loss(x, y, noise=noise, threshold=THRESHOLD)))


def _ott():
    def loss(x, y):
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            geom = pointcloud.PointCloud(x, y, epsilon=2 * SIGMA**2)
            return linear.solve(geom, threshold=THRESHOLD).reg_ot_cost / 2

    return jax.jit(jax.value_and_grad(loss))


def _pot(x, y):
    c = 0.5 * pot.dist(np.asarray(x, np.float64), np.asarray(y, np.float64))
    a, b = np.full(c.shape[0], 1 / c.shape[0]), np.full(c.shape[1], 1 / c.shape[1])
    return pot.sinkhorn2(a, b, c, SIGMA**2, method="sinkhorn_log", stopThr=THRESHOLD)


def main() -> str:
    noise = ldp.GaussianNoise(SIGMA)
    ours, ott_step = _ours(noise), _ott()
    rows = []
    for n in (256, 1024, 4096):
        x, y = _data(jr.key(n), n, M)
        t_ours = median_time(lambda x=x, y=y: ours(x, y), repeats=5)
        t_ott = median_time(lambda x=x, y=y: ott_step(x, y), repeats=5)
        v_ours, g_ours = ours(x, y)
        v_ott, g_ott = ott_step(x, y)
        start = time.perf_counter()
        v_pot = _pot(x, y)
        t_pot = time.perf_counter() - start
        rows.append(
            (
                f"dpflows value+grad, batch {n} × {M}",
                t_ours,
                f"ott / dpflows = {t_ott / t_ours:.1f}×; POT (forward only) / dpflows = {t_pot / t_ours:.1f}×",
            )
        )
        rows.append(
            (
                f"ott-jax value+grad, batch {n} × {M}",
                t_ott,
                f"cost rel. diff {abs(float(v_ours) - float(v_ott)) / abs(float(v_ours)):.1e}; "
                f"grad max diff {float(jnp.max(jnp.abs(g_ours - g_ott))):.1e}",
            )
        )
        rows.append((f"POT sinkhorn2 (NumPy, forward only), batch {n} × {M}", t_pot, f"cost {float(v_pot):.4f}"))
    return table(rows, "LDP matched-loss training step (CPU; median of 5, POT a single run)")


if __name__ == "__main__":
    print(main())
