"""DP sliced-Wasserstein flow step: dpflows vs NumPy vs PyTorch (CPU), same arithmetic.

    python benchmarks/bench_swf.py

One step of the fixed-release flow (METHODS.md §4b, exact 1-D maps): u = Θx + σξ for k directions and
n particles, ranks of u, the release's quantiles at the mid-rank levels, x ← x − τ(u − q)ᵀΘ/k. The
release holds m = n noisy private projections per direction, sorted once (as every implementation
would). Peers, written for this benchmark from METHODS.md (not from the official code):

* NumPy: argsort along the particle axis, shared interpolation indices (uniform weights), scatter back;
* PyTorch CPU (if importable here, or through ``DPFLOWS_TORCH_PYTHON=/path/to/python`` with torch
  installed there; torch is not a dependency): the same step in torch, one thread per core;
* POT has no sliced flow step: its ``sliced_wasserstein_distance`` on the same projections sorts the
  same arrays and returns only the distance, a lower bound on a POT-based step (reported for scale).

All agree (NumPy vs dpflows checked to 1e-4 on the same noise). Medians of repeated runs.

Section "grid: loop vs sweep": an ε grid of flows and of DPSWgen generators on releases drawn
beforehand, as a Python loop of runs/fits vs one ``dpflows.sweep`` / one ``jax.vmap`` of the fit
(one run each, compilation included; the config-size row takes minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time

import dpflows
import ot as pot
from dpflows import data, swf
from dpflows.nn import MLPGenerator

TAU = 1.0

TORCH_STEP = textwrap.dedent(
    """
    import json, sys, time, statistics, numpy as np, torch
    torch.set_num_threads(int(sys.argv[2]))
    cases = json.loads(sys.argv[1]); out = []
    for n, d, k in cases:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, d, generator=g); th = torch.randn(k, d, generator=g)
        th = th / th.norm(dim=1, keepdim=True)
        table = torch.sort(torch.randn(k, n, generator=g) * 3, dim=1).values
        levels = (torch.arange(n) + 0.5) / n
        pos = levels * n - 0.5
        lo = pos.floor().clamp(0, n - 1).long(); hi = (lo + 1).clamp(max=n - 1); fr = (pos - lo).clamp(0, 1)
        def step():
            u = th @ x.T + 0.5 * torch.randn(k, n, generator=g)
            perm = torch.argsort(u, dim=1)
            qs = table[:, lo] * (1 - fr) + table[:, hi] * fr
            q = torch.empty_like(u).scatter_(1, perm, qs)
            return x - 1.0 * ((u - q).T @ th) / k
        step(); ts = []
        for _ in range(5):
            t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
        out.append(statistics.median(ts))
    print(json.dumps(out))
    """
)


def _problem(n, d, k):
    key = jr.key(0)
    y = jr.normal(key, (n, d))
    y = 0.9 * y / jnp.linalg.norm(y, axis=1, keepdims=True)
    flow = swf.DPSlicedWassersteinFlow.from_data(y, epsilon=5.0, delta=1e-5, num_projections=k, step_size=TAU, key=key)
    state = flow.init(jr.normal(jr.fold_in(key, 1), (n, d)))
    return flow, state


def _numpy_step(x, theta, table, noise):
    n, k = x.shape[0], theta.shape[0]
    m = table.shape[1]
    u = theta @ x.T + noise
    perm = np.argsort(u, axis=1)
    pos = np.clip((np.arange(n) + 0.5) / n * m - 0.5, 0, m - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, m - 1)
    fr = pos - lo
    qs = table[:, lo] * (1 - fr) + table[:, hi] * fr
    q = np.empty_like(u)
    np.put_along_axis(q, perm, qs, axis=1)
    return x - TAU * ((u - q).T @ theta) / k


def _torch_times(cases):
    python = os.environ.get("DPFLOWS_TORCH_PYTHON", sys.executable)
    try:
        res = subprocess.run(
            [python, "-c", TORCH_STEP, json.dumps(cases), str(os.cpu_count() or 1)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ grid: loop vs sweep
EPSILONS = (float("inf"), 10.0, 5.0, 1.0)


def _once(fn) -> float:
    """Wall time of one call (compilation included: what an experiment grid pays)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _grid_case(m, n, k, num_steps, gen_steps):
    """Releases at each ε of ``EPSILONS`` (drawn once, outside the timings) on 8 Gaussians."""
    y, _ = data.eight_gaussians(jr.key(0), m)
    x0 = jr.normal(jr.key(1), (n, 2))
    flows = [
        swf.DPSlicedWassersteinFlow(
            swf.private_release(jr.fold_in(jr.key(2), i), y, num_projections=k, epsilon=e, delta=1e-5)[0],
            step_size=1.0,
        )
        for i, e in enumerate(EPSILONS)
    ]
    gens = [  # one full-batch release per generator step (exact calibration: no PLD in the timing)
        swf.private_release(
            jr.fold_in(jr.key(3), i), y, num_projections=k, epsilon=e, delta=1e-5, num_releases=gen_steps
        )[0]
        for i, e in enumerate(EPSILONS)
    ]
    return flows, gens, x0


def _grid_rows(label, m, n, k, num_steps, gen_steps) -> list[str]:
    flows, releases, x0 = _grid_case(m, n, k, num_steps, gen_steps)
    state, key = flows[0].init(x0), jr.key(4)
    loop = _once(lambda: [dpflows.run(f, state, key, num_steps)[0].x for f in flows])
    swept = _once(lambda: dpflows.sweep(flows, state, key, num_steps)[0].x)
    gen = MLPGenerator(jr.key(5), latent_dim=2, data_dim=2, width=64, depth=2)

    def train(release):
        res = swf.train_sliced_generator(gen, release, key=key, num_steps=gen_steps, batch_size=256, learning_rate=3e-3)
        return res.loss

    gen_loop = _once(lambda: [train(r) for r in releases])
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *releases)
    gen_vmap = _once(lambda: eqx.filter_vmap(train)(stacked))
    return [
        f"| {label}: flows ({len(flows)} ε, {num_steps} steps) | {loop:.2f} s | {swept:.2f} s | {loop / swept:.2f}× |",
        f"| {label}: DPSWgen ({len(releases)} ε, {gen_steps} steps) | {gen_loop:.2f} s | {gen_vmap:.2f} s | "
        f"{gen_loop / gen_vmap:.2f}× |",
    ]


def grid_loop_vs_sweep() -> str:
    """The experiments' ε grids: a Python loop of runs/fits (before) vs one sweep / one vmapped fit (after)."""
    rows = _grid_rows("swf_2d demo size", 1000, 200, 16, 20, 10)
    rows += _grid_rows("swf_2d config size", 20000, 2000, 64, 300, 100)
    return "\n".join(
        [
            "### DP sliced-Wasserstein flow: grid: loop vs sweep",
            "",
            "One ε grid (∞, 10, 5, 1) on releases drawn beforehand: a Python loop of `dpflows.run` / "
            "`train_sliced_generator` per ε (as swf_generative did) vs one `dpflows.sweep` / one `jax.vmap` of "
            "the `dpflows.fit`-based trainer (as it does now). One run each, compilation included.",
            "",
            "| grid | loop | sweep / vmap | ratio |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def main() -> str:
    cases = [(10_000, d, k) for d in (8, 64) for k in (70, 1000)]
    torch_times = _torch_times(cases)
    rows = []
    for i, (n, d, k) in enumerate(cases):
        flow, state = _problem(n, d, k)
        step = flow.step  # compiled (eqx.filter_jit inside)
        key = jr.key(3)
        t_ours = median_time(lambda: step(state, key)[0].x, repeats=5)  # noqa: B023
        x = np.asarray(state.x, np.float32)
        theta = np.asarray(flow.release.directions[0])
        table = np.asarray(flow.release.tables[0])
        noise = float(flow.release.noise_std[0]) * np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
        t_np = median_time(lambda: _numpy_step(x, theta, table, noise), repeats=5)  # noqa: B023
        # Same arithmetic: dpflows' drift on the NumPy noise equals the NumPy step.
        w = jnp.full((n,), 1.0 / n)
        rel = flow.release
        drift, _ = swf.sliced_drift(state.x, w, rel.directions[0], rel.tables[0], rel.counts[0], jnp.asarray(noise))
        gap = float(np.max(np.abs(np.asarray(state.x - TAU * drift) - _numpy_step(x, theta, table, noise))))
        t_pot = median_time(
            lambda: pot.sliced_wasserstein_distance(x, x[::-1], n_projections=k, projections=theta.T),  # noqa: B023
            repeats=5,
        )
        t_torch = torch_times[i] if torch_times else None
        best = min(t for t in (t_np, t_torch) if t is not None)
        torch_col = f"{t_torch * 1e3:.1f} ms" if t_torch is not None else "not installed"
        rows.append(
            f"| {n} | {d} | {k} | {t_ours * 1e3:.1f} ms | {t_np * 1e3:.1f} ms | {torch_col} | "
            f"{t_pot * 1e3:.1f} ms | {best / t_ours:.1f}× | {gap:.1e} |"
        )
    growth = []
    for n, d, k in [(1_000, 8, 70), (10_000, 8, 70), (100_000, 8, 70), (10_000, 8, 300), (10_000, 8, 3000)]:
        flow, state = _problem(n, d, k)
        step = flow.step  # compiled (eqx.filter_jit inside)
        growth.append(f"| {n} | {k} | {median_time(lambda: step(state, jr.key(3))[0].x, repeats=5) * 1e3:.1f} ms |")  # noqa: B023
    return "\n".join(
        [
            "### DP sliced-Wasserstein flow: one step (fixed release, exact 1-D maps, m = n private rows)",
            "",
            f"jax {jax.__version__} on {jax.devices()[0].platform}; NumPy {np.__version__}; "
            f"{time.strftime('%Y-%m-%d')}",
            "",
            "| n | d | k | dpflows | NumPy | PyTorch CPU | POT SW distance only | speed-up vs best peer "
            "| max gap vs NumPy |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Growth (dpflows, d = 8):",
            "",
            "| n | k | step |",
            "|---|---|---|",
            *growth,
            "",
            grid_loop_vs_sweep(),
        ]
    )


if __name__ == "__main__":
    print(main())
