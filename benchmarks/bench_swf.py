"""DP sliced-Wasserstein flow step: dpflows vs NumPy vs PyTorch (CPU), same arithmetic.

    python benchmarks/bench_swf.py            # all sections
    python benchmarks/bench_swf.py --step     # only the one-step tables (n = 10⁴, k ∈ {64, 256, 1000}, d ∈ {2, 64})

One step of the fixed-release flow (METHODS.md §4b, exact 1-D maps): u = Θx + σξ for k directions and
n particles, ranks of u, the release's quantiles at the mid-rank levels, x ← x − τ(u − q)ᵀΘ/k. The
release holds m = n noisy private projections per direction, sorted once (as every implementation
would). Peers, written for this benchmark from METHODS.md (not from the official code):

* NumPy: ``np.argsort`` along the particle axis (its SIMD quicksort), interpolation indices shared by
  all directions (uniform weights; dpflows handles any weights), float32 throughout, scatter back;
* "before": dpflows' drift as it was before issue 24 (``jnp.argsort``, i.e. a two-operand XLA sort with a
  total-order float comparator, ``jnp.cumsum``, a row-batched scatter), kept here only for the ratio;
* PyTorch CPU (if importable here, or through ``DPFLOWS_TORCH_PYTHON=/path/to/python`` with torch
  installed there; torch is not a dependency): the same step in torch, one thread per core;
* POT has no sliced flow step: its ``sliced_wasserstein_distance`` on the same projections sorts the
  same arrays and returns only the distance, a lower bound on a POT-based step (reported for scale).

Table 1 times the arithmetic on one fixed noise draw (dpflows' ``sliced_drift`` before and after vs the
NumPy step: the same inputs, so the same work). Table 2 times whole steps that draw their own
smoothing noise (``flow.step``: threefry normals; NumPy: PCG64). Candidates run interleaved (round
robin, after a warm-up) and the medians are compared, so a load change on a shared machine hits all
of them alike. All compute the same step: the gap columns (after one step with τ = 1, NumPy vs dpflows,
and dpflows after vs before) are float32 rounding of the grid positions level·m − ½ (~1e-7·m of a
table gap), which is why they are ~1e-4 at m = 10⁴ and largest where the tables' tail gaps are.

Section "grid: loop vs sweep": an ε grid of flows and of DPSWgen generators on releases drawn
beforehand, as a Python loop of runs/fits vs one ``dpflows.sweep`` / one ``jax.vmap`` of the fit
(one run each, compilation included; the config-size row takes minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

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
    """One NumPy step on the given noise (float32 like dpflows; uniform weights share the interpolation)."""
    n, k = x.shape[0], theta.shape[0]
    m = table.shape[1]
    u = theta @ x.T + noise
    perm = np.argsort(u, axis=1)
    pos = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0, m - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, m - 1)
    fr = (pos - lo).astype(u.dtype)
    qs = table[:, lo] * (1 - fr) + table[:, hi] * fr
    q = np.empty_like(u)
    np.put_along_axis(q, perm, qs, axis=1)
    return x - TAU * ((u - q).T @ theta) / k


def _numpy_step_drawing(x, theta, table, std, rng):
    """The NumPy step with its own smoothing noise, as ``flow.step`` draws its own."""
    noise = std * rng.standard_normal((theta.shape[0], x.shape[0]), dtype=np.float32)
    return _numpy_step(x, theta, table, noise)


@jax.jit
def _drift_before(x, w, directions, table, count, noise):
    """dpflows' exact drift before issue 24 (argsort of values + indices, jnp.cumsum, row-batched scatter)."""
    u = directions @ x.T + noise
    perm = jnp.argsort(u, axis=-1)
    ws = w[perm]
    levels = jnp.cumsum(ws, axis=-1) - 0.5 * ws
    c = jnp.maximum(count, 1).astype(u.dtype)
    pos = jnp.clip(levels * c - 0.5, 0.0, c - 1)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(count, 1).astype(jnp.int32) - 1)
    frac = pos - lo.astype(u.dtype)
    take = jax.vmap(jnp.take)
    q_sorted = take(table, lo) * (1 - frac) + take(table, hi) * frac
    q = jax.vmap(lambda p, v: jnp.zeros_like(v).at[p].set(v))(perm, q_sorted)
    r = u - q
    return (r.T @ directions) / directions.shape[0], jnp.mean(r**2, axis=0) @ w


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each function, timed in turn (round robin) after one warm-up call each.

    CPU time is this process's (all its threads): on a shared machine it moves less with the load than
    wall time does, so both are reported.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu, wall = time.process_time(), time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}


def _ms(t: tuple[float, float]) -> str:
    return f"{t[0] * 1e3:.0f} ({t[1] * 1e3:.0f}) ms"


def _ratio(a: tuple[float, float], b: tuple[float, float]) -> str:
    return f"{a[0] / b[0]:.2f} ({a[1] / b[1]:.2f})"


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


STEP_CASES = [(10_000, d, k) for d in (2, 64) for k in (64, 256, 1000)]


def step_tables(cases=STEP_CASES) -> str:
    """Table 1 (fixed noise: before / after / NumPy) and Table 2 (whole steps drawing their noise)."""
    torch_times = _torch_times(cases)
    fixed, drawing = [], []
    for i, (n, d, k) in enumerate(cases):
        flow, state = _problem(n, d, k)
        rel = flow.release
        theta, table, count = rel.directions[0], rel.tables[0], rel.counts[0]
        std = float(rel.noise_std[0])
        noise = std * np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
        x, theta_np, table_np = np.asarray(state.x, np.float32), np.asarray(theta), np.asarray(table)
        w, noise_j = jnp.full((n,), 1.0 / n), jnp.asarray(noise)
        # Same arithmetic: dpflows' drift on the NumPy noise equals the NumPy step (and the old drift).
        drift, _ = swf.sliced_drift(state.x, w, theta, table, count, noise_j)
        gap = float(np.max(np.abs(np.asarray(state.x - TAU * drift) - _numpy_step(x, theta_np, table_np, noise))))
        gap_before = float(np.max(np.abs(drift - _drift_before(state.x, w, theta, table, count, noise_j)[0])))
        repeats = 3 if k >= 1000 else 5
        t = _interleaved(
            {
                "before": lambda: _drift_before(state.x, w, theta, table, count, noise_j)[0],  # noqa: B023
                "after": lambda: swf.sliced_drift(state.x, w, theta, table, count, noise_j)[0],  # noqa: B023
                "numpy": lambda: _numpy_step(x, theta_np, table_np, noise),  # noqa: B023
            },
            repeats,
        )
        fixed.append(
            f"| {n} | {d} | {k} | {_ms(t['before'])} | {_ms(t['after'])} | {_ms(t['numpy'])} "
            f"| {_ratio(t['after'], t['numpy'])} | {_ratio(t['before'], t['numpy'])} "
            f"| {_ratio(t['before'], t['after'])} | {gap:.1e} | {gap_before:.1e} |"
        )
        rng, key = np.random.default_rng(1), jr.key(3)
        step = flow.step  # compiled (eqx.filter_jit inside)
        t = _interleaved(
            {
                "step": lambda: step(state, key)[0].x,  # noqa: B023
                "numpy": lambda: _numpy_step_drawing(x, theta_np, table_np, std, rng),  # noqa: B023
                "pot": lambda: pot.sliced_wasserstein_distance(x, x[::-1], n_projections=k, projections=theta_np.T),  # noqa: B023
            },
            repeats,
        )
        t_torch = torch_times[i] if torch_times else None
        torch_col = f"{t_torch * 1e3:.0f} ms" if t_torch is not None else "not installed"
        drawing.append(
            f"| {n} | {d} | {k} | {_ms(t['step'])} | {_ms(t['numpy'])} | {_ratio(t['step'], t['numpy'])} "
            f"| {torch_col} | {_ms(t['pot'])} |"
        )
    return "\n".join(
        [
            "### DP sliced-Wasserstein flow: one step (fixed release, exact 1-D maps, m = n private rows)",
            "",
            f"jax {jax.__version__} on {jax.devices()[0].platform}; NumPy {np.__version__}; "
            f"{time.strftime('%Y-%m-%d')}. Medians of interleaved repeats (5; 3 for k = 1000): wall (CPU) time. "
            "A ratio < 1 means dpflows is faster.",
            "",
            "Table 1: the step's arithmetic on one fixed noise draw.",
            "",
            "| n | d | k | dpflows before | dpflows after | NumPy | after / NumPy | before / NumPy | before / after "
            "| max gap vs NumPy | max gap after vs before |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *fixed,
            "",
            "Table 2: whole steps, each drawing its own smoothing noise (dpflows `flow.step`: threefry).",
            "",
            "| n | d | k | dpflows step | NumPy step | dpflows / NumPy | PyTorch CPU | POT SW distance only |",
            "|---|---|---|---|---|---|---|---|",
            *drawing,
        ]
    )


def main(step_only: bool = False) -> str:
    if step_only:
        return step_tables()
    growth = []
    for n, d, k in [(1_000, 8, 70), (10_000, 8, 70), (100_000, 8, 70), (10_000, 8, 300), (10_000, 8, 3000)]:
        flow, state = _problem(n, d, k)
        step = flow.step  # compiled (eqx.filter_jit inside)
        growth.append(f"| {n} | {k} | {median_time(lambda: step(state, jr.key(3))[0].x, repeats=5) * 1e3:.1f} ms |")  # noqa: B023
    return "\n".join(
        [
            step_tables(),
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
    print(main(step_only="--step" in sys.argv[1:]))
