"""ε over a 10⁴-point (σ, q, T) grid: jitted dpflows.privacy.rdp_epsilon vs a dp-accounting loop.

    python benchmarks/bench_privacy.py

Both use the same integer orders (2..64, 128..1024). dp-accounting is timed on a random subsample
of the grid (it needs ~10 ms a point) and its per-point time is scaled to the full grid; the two
are checked equal (rtol 1e-6) on that subsample.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time, table
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib

from dpflows.privacy import INTEGER_ORDERS, rdp_epsilon

SUBSAMPLE = 200


def main() -> str:
    with jax.enable_x64(True):
        side = np.round(np.power(10_000, 1 / 3)).astype(int) + 1  # 22³ ≥ 10⁴
        sig = np.geomspace(0.5, 20, side)
        qs = np.geomspace(1e-4, 1.0, side)
        ts = np.unique(np.geomspace(1, 10_000, side).astype(int))
        grid = np.array(np.meshgrid(sig, qs, ts, indexing="ij")).reshape(3, -1).T[:10_000]
        fn = jax.jit(jax.vmap(lambda s, q, t: rdp_epsilon(s, q, t, 1e-5)))
        args = [jnp.asarray(c) for c in grid.T]
        t_jax = median_time(lambda: fn(*args), repeats=5)
        ours = np.asarray(fn(*args))

        orders = [float(a) for a in INTEGER_ORDERS]
        idx = np.random.default_rng(0).choice(len(grid), SUBSAMPLE, replace=False)
        start = time.perf_counter()
        ref = []
        for s, q, t in grid[idx]:
            rdp = int(t) * np.asarray(rdp_lib._compute_rdp_poisson_subsampled_gaussian(q, s, orders))
            ref.append(rdp_lib.compute_epsilon(orders, rdp, 1e-5)[0])
        per_point = (time.perf_counter() - start) / SUBSAMPLE
        err = float(np.max(np.abs(ours[idx] - np.array(ref)) / np.maximum(np.abs(ref), 1e-12)))
        t_ref = per_point * len(grid)
    rows = [
        (f"dpflows rdp_epsilon, jit+vmap, {len(grid)} points (float64)", t_jax, "one compiled call"),
        (
            f"dp-accounting loop, {len(grid)} points (scaled from {SUBSAMPLE})",
            t_ref,
            f"dp-accounting / dpflows = {t_ref / t_jax:.0f}×; max rel. diff {err:.1e}",
        ),
    ]
    return table(rows, "privacy accounting over a (σ, q, T) grid (CPU)")


if __name__ == "__main__":
    print(main())
