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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time

import ot as pot
from dpflows import swf

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
    flow = swf.DPSlicedWassersteinFlow(
        y, epsilon=5.0, delta=1e-5, num_projections=k, step_size=TAU, num_steps=1, key=key
    )
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
        theta = np.asarray(flow.directions[0])
        table = np.asarray(flow.tables[0])
        noise = float(flow.noise_std[0]) * np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
        t_np = median_time(lambda: _numpy_step(x, theta, table, noise), repeats=5)  # noqa: B023
        # Same arithmetic: dpflows' drift on the NumPy noise equals the NumPy step.
        w = jnp.full((n,), 1.0 / n)
        drift, _ = swf.sliced_drift(state.x, w, flow.directions[0], flow.tables[0], flow.counts[0], jnp.asarray(noise))
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
        ]
    )


if __name__ == "__main__":
    print(main())
