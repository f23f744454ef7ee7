"""Runtime overhead: dpflows.run vs a hand-written lax.scan vs NumPy; sweep vs a loop of runs.

python benchmarks/bench_runtime.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time, table

import dpflows
from dpflows.langevin import ULA
from dpflows.potentials import GaussianPotential

N, D, STEPS, H = 10_000, 8, 200, 0.01


def main() -> str:
    key = jr.key(0)
    a = jr.normal(key, (D, D))
    precision = a @ a.T / D + jnp.eye(D)
    target = GaussianPotential(jnp.zeros(D), precision)
    flow = ULA(target, step_size=H)
    x0 = jr.normal(jr.fold_in(key, 1), (N, D))
    state = flow.init(x0)

    run_dp = lambda: dpflows.run(flow, state, key, STEPS)[0].x  # noqa: E731

    @jax.jit
    def hand_scan(x, key):
        def body(x, i):
            noise = jr.normal(jr.fold_in(key, i), x.shape)
            return x - H * (x @ precision) + jnp.sqrt(2 * H) * noise, None

        return jax.lax.scan(body, x, jnp.arange(STEPS))[0]

    hand = lambda: hand_scan(x0, key)  # noqa: E731

    @jax.jit
    def scan_over_step(state, key):
        def body(s, i):
            return flow.step(s, jr.fold_in(key, i))

        final, info = jax.lax.scan(body, state, jnp.arange(STEPS))
        return final.x, info  # keep info: otherwise XLA drops the energy computation

    same_step = lambda: scan_over_step(state, key)  # noqa: E731
    p_np, rng = np.asarray(precision), np.random.default_rng(0)

    def numpy_loop():
        x = np.asarray(x0)
        for _ in range(STEPS):
            x = x - H * (x @ p_np) + np.sqrt(2 * H) * rng.standard_normal(x.shape, dtype=np.float32)
        return x

    bare = ULA(target, step_size=H, record_energy=False)
    run_bare = lambda: dpflows.run(bare, state, key, STEPS)[0].x  # noqa: E731
    t_dp, t_same, t_hand = median_time(run_dp), median_time(same_step), median_time(hand)
    t_bare = median_time(run_bare)
    t_np = median_time(numpy_loop, repeats=3)
    rows = [
        (f"dpflows.run ULA (n={N}, d={D}, {STEPS} steps)", t_dp, "one compiled scan + entry checks + trace"),
        (
            "hand-written lax.scan over the same flow.step",
            t_same,
            f"runtime overhead: run / scan = {t_dp / t_same:.2f}×",
        ),
        ("dpflows.run ULA(record_energy=False)", t_bare, "the bare step"),
        (
            "minimal hand-written ULA (no diagnostic, m = 0)",
            t_hand,
            f"run(record_energy=False) / minimal = {t_bare / t_hand:.2f}×; with energy: {t_dp / t_hand:.2f}×",
        ),
        ("NumPy loop, minimal maths", t_np, f"NumPy / dpflows = {t_np / t_dp:.1f}×"),
    ]

    # Sweep: 16 step sizes as one vmapped program vs a Python loop over compiled runs.
    steps = np.linspace(0.002, 0.02, 16)
    flows = [ULA(target, step_size=h) for h in steps]
    small = flow.init(x0[:1000])
    t_sweep = median_time(lambda: dpflows.sweep(flows, small, key, STEPS)[0].x, repeats=5)
    t_loop = median_time(lambda: [dpflows.run(f, small, key, STEPS)[0].x for f in flows], repeats=5)
    rows += [
        (f"dpflows.sweep, 16 flows (n=1000, {len(jax.devices())} device(s))", t_sweep, "vmapped, sharded"),
        ("loop of 16 dpflows.run", t_loop, f"loop / sweep = {t_loop / t_sweep:.2f}×"),
    ]
    return table(rows, "runtime overhead (CPU)")


if __name__ == "__main__":
    print(main())
