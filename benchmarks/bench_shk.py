"""SHK time-to-accuracy on an asymmetric mixture vs BlackJAX MALA and ULA; per-step cost vs ULA.

python benchmarks/bench_shk.py

The last section times the accuracy grid of ``shk_private_regression`` at its demo size
(ε ∈ {0.3, 3, 30} at t = 5 and t ∈ {0.2, 1, 5} at ε = 3, 2 seeds, 4000 candidates): one
``dpflows.run`` per grid point (the loop the experiment used) against one ``dpflows.sweep`` per seed
(ε and t are array leaves, so every sweep shares one compiled program). One run each, cold (after
``jax.clear_caches()``, as the experiment meets it) and warm.

Mixture 0.9/0.1 in d = 2 (modes at ±4, σ = 0.7), n = 2000 particles split evenly at the start,
h = 0.02 for every method. Time-to-accuracy = (first recorded step with mode-weight error < 0.02)
× (median compiled seconds per step). ULA/MALA get a wall-time budget of 15× the faster SHK
scheme's time; if they never reach the tolerance the ratio is reported as a lower bound.

The scaling section (``python benchmarks/bench_shk.py --scaling`` runs it alone) times one compiled
step at n = 10⁴ and 10⁵ in d = 2 and 10 (the same 0.9/0.1 mixture, modes at ±4e₁): ULA, SHK with
the exact O(n²) KDE and SHK with ``density="subsample"`` (O(n·m), m = ``num_reference``), as
ratios to the ULA step timed in the same round (rounds interleave the cases, so a burst of load on
the shared machine hits all of them; the median of the per-round ratios is reported), in wall time
and in CPU time (all threads of the process; steadier when other processes share the cores). The exact KDE
at n = 10⁵ is skipped (10¹⁰ kernel pairs, minutes per step); its time is extrapolated as n² from
n = 10⁴. Memory is what XLA's buffer assignment plans for the compiled step (temporaries,
arguments and outputs: ``Compiled.memory_analysis``), exact and available without running it.
"""

from __future__ import annotations

import statistics
import sys
import time

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from _timing import median_time, table

import dpflows
from dpflows.experiments import shk_private_regression as regression
from dpflows.experiments.shk_mixture import (
    SHKMixtureConfig,
    initial_positions,
    make_flow,
    make_target,
    mode_weights,
)
from dpflows.langevin import ULA
from dpflows.potentials import GaussianMixturePotential
from dpflows.shk import SHKSampler

CFG = SHKMixtureConfig(num_particles=2000, step_size=0.02, num_steps=400, record_every=5)


def _per_step(flow, state, key, num_steps=400):
    return median_time(lambda: dpflows.run(flow, state, key, num_steps)[0].x, repeats=3) / num_steps


def _errors(flow, state, target, key, num_steps):
    w = np.asarray(CFG.weights)
    _, trace = dpflows.run(
        flow, state, key, num_steps, record_every=CFG.record_every, record=lambda s: mode_weights(s, target)
    )
    err = np.max(np.abs(np.asarray(trace.states, np.float64) - w[None, :]), axis=1)
    return err, np.asarray(trace.record_steps)


@eqx.filter_jit
def _one_step(flow, state, key):
    return flow.step(state, key)


def _once(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def grid_loop_vs_sweep() -> tuple[list[tuple[str, float, str]], list[str]]:
    """The demo-size accuracy grid of shk_private_regression: a run per point vs a sweep per seed."""
    cfg = regression.SHKPrivateRegressionConfig(
        num_particles=4000, num_seeds=2, epsilons=(0.3, 3.0, 30.0), times=(0.2, 1.0, 5.0), audit_trials=0
    )
    x_tr, y_tr, x_te, y_te = regression.load_data(cfg.test_fraction)
    data, key = (x_tr, y_tr), jr.key(0)
    points = [(e, cfg.time) for e in cfg.epsilons] + [(cfg.epsilon_for_time, t) for t in cfg.times]
    kw = dict(radius=cfg.radius, reaction=cfg.reaction, num_particles=cfg.num_particles, num_steps=cfg.num_steps)

    def loop():
        return [
            regression.expected_accuracy(
                regression.sample_weights(jr.fold_in(key, s), data, epsilon=e, time=t, **kw), x_te, y_te
            )
            for s in range(cfg.num_seeds)
            for e, t in points
        ]

    def swept():
        a_eps, a_t = regression.grid_accuracy(cfg, key, data, x_te, y_te)
        return [a for a, _ in a_eps + a_t]

    times = {}
    for name, fn in (("loop", loop), ("sweep", swept)):
        jax.clear_caches()
        times[name] = (_once(fn), _once(fn))  # (cold, warm)
    size = f"{len(points)} points x {cfg.num_seeds} seeds, n = {cfg.num_particles}"
    rows = [
        (f"grid, {name} ({temp})", times[name][j], size)
        for name in ("loop", "sweep")
        for j, temp in enumerate(("cold", "warm"))
    ]
    lines = [
        f"- grid: loop vs sweep: {times['loop'][0] / times['sweep'][0]:.1f}x cold, "
        f"{times['loop'][1] / times['sweep'][1]:.1f}x warm (one run each)"
    ]
    return rows, lines


SCALING_SIZES = (10_000, 100_000)
SCALING_DIMS = (2, 10)
NUM_REFERENCE = 256
EXACT_LIMIT = 10_000  # the exact KDE above this n is extrapolated (∝ n²), not run


def _scaling_target(d: int) -> GaussianMixturePotential:
    means = np.zeros((2, d), np.float32)
    means[:, 0] = (-4.0, 4.0)
    return GaussianMixturePotential(means, np.asarray(CFG.weights, np.float32), CFG.mode_scale)


def _step_memory(flow, state) -> int:
    """Bytes XLA's buffer assignment plans for one compiled step: temporaries + arguments + outputs.

    A compile-time figure (``Compiled.memory_analysis``), so it is exact, noise-free and available for
    sizes that are too slow to run (the exact KDE at n = 10⁵).
    """
    dynamic, static = eqx.partition((flow, state), eqx.is_array)

    def step(dynamic, key):
        f, s = eqx.combine(dynamic, static)
        return f.step(s, key)

    stats = jax.jit(step).lower(dynamic, jr.key(0)).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def _paired_ratios(fns: dict, reference: str, rounds: int) -> tuple[dict, dict, dict]:
    """Median wall seconds of each case, and the medians of its per-round wall and CPU-time ratios to ``reference``.

    CPU time (``time.process_time``: every thread of this process) counts the work done, so it is far
    less sensitive than wall time to other processes sharing the cores.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile
    wall: dict = {name: [] for name in fns}
    cpu: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)

    def ratio(times):
        return {
            name: statistics.median(t / r for t, r in zip(ts, times[reference], strict=True))
            for name, ts in times.items()
        }

    return {name: statistics.median(ts) for name, ts in wall.items()}, ratio(wall), ratio(cpu)


def scaling(rounds: int = 9) -> tuple[list[tuple[str, float, str]], list[str]]:
    """One step at n = 10⁴, 10⁵ and d = 2, 10: ULA vs SHK (exact KDE) vs SHK (subsample KDE)."""
    rows, lines, exact_at_limit = [], [], {}
    for n in SCALING_SIZES:
        for d in SCALING_DIMS:
            target = _scaling_target(d)
            x = jr.normal(jr.key(1), (n, d)) * 3.0
            flows = {
                "ula": ULA(target, step_size=0.02, record_energy=False),
                "shk_subsample": SHKSampler(target, step_size=0.02, density="subsample", num_reference=NUM_REFERENCE),
            }
            if n <= EXACT_LIMIT:
                flows["shk_exact"] = SHKSampler(target, step_size=0.02)
            states = {name: flow.init(x) for name, flow in flows.items()}
            fns = {
                name: (lambda f=flow, s=states[name]: _one_step(f, s, jr.key(2))[0].x) for name, flow in flows.items()
            }
            med, ratio, cpu = _paired_ratios(fns, "ula", rounds)
            for name, flow in flows.items():
                mem = _step_memory(flow, states[name]) / 2**20
                note = f"{ratio[name]:.1f}x ULA (CPU time {cpu[name]:.1f}x), memory {mem:.0f} MiB"
                rows.append((f"n = {n}, d = {d}: {name}", med[name], note))
            if "shk_exact" in ratio:
                exact_at_limit[d] = (n, med["shk_exact"])
            else:
                n0, t0 = exact_at_limit[d]
                exact = SHKSampler(target, step_size=0.02)
                mem = _step_memory(exact, states["ula"]) / 2**20
                note = f"not run: time extrapolated ∝ n² from n = {n0}, {t0 * (n / n0) ** 2 / med['ula']:.0f}x ULA"
                rows.append((f"n = {n}, d = {d}: shk_exact", t0 * (n / n0) ** 2, f"{note}, memory {mem:.0f} MiB"))
            exact = f"{ratio['shk_exact']:.0f}x" if "shk_exact" in ratio else "not run"
            lines.append(
                f"- n = {n}, d = {d}: SHK-subsample / ULA = {ratio['shk_subsample']:.1f}x wall "
                f"({cpu['shk_subsample']:.1f}x CPU time), SHK-exact / ULA = {exact} "
                f"(m = {NUM_REFERENCE}; medians of {rounds} paired rounds)"
            )
    return rows, lines


def main() -> str:
    target = make_target(CFG)
    k_init, k_run = jr.split(jr.key(0))
    x0 = initial_positions(k_init, CFG, target)
    rows, lines, tta = [], [], {}
    for method in ("shk_weighted", "shk_jump", "ula", "mala"):
        flow = make_flow(method, target, CFG.step_size)
        state = flow.init(x0)
        per_step = _per_step(flow, state, k_run)
        if method.startswith("shk"):
            budget = CFG.num_steps
        else:  # a wall-time budget of 15× the faster SHK scheme's time to accuracy
            best = min(tta["shk_weighted"][0], tta["shk_jump"][0])
            budget = int(np.ceil(15 * best / per_step / CFG.record_every)) * CFG.record_every
        err, steps = _errors(flow, state, target, k_run, budget)
        hit = np.nonzero(err < CFG.tolerance)[0]
        tta[method] = (steps[hit[0]] * per_step, True) if hit.size else (budget * per_step, False)
        reached = f"reached at step {steps[hit[0]]}" if hit.size else f"not reached in {budget} steps"
        rows.append(
            (
                f"{method}: time to error < {CFG.tolerance}",
                tta[method][0],
                f"{reached}, final error {err[-1]:.3f}, {1e3 * per_step:.2f} ms/step",
            )
        )
    best = min(tta["shk_weighted"][0], tta["shk_jump"][0])
    for peer in ("mala", "ula"):
        sec, ok = tta[peer]
        bound = "" if ok else "≥ "
        lines.append(f"- SHK vs {peer}: {bound}{sec / best:.1f}× faster to mode-weight error < {CFG.tolerance}")

    # Per-step cost at n = 10⁴ (d = 2): the KDE is O(n²), ULA is O(n).
    n = 10_000
    big = GaussianMixturePotential(np.asarray(target.means), np.asarray(CFG.weights, np.float32), CFG.mode_scale)
    xb = jr.normal(jr.key(1), (n, 2)) * 3.0
    per = {}
    for name, flow in {
        "ula": ULA(big, step_size=0.02, record_energy=False),
        "shk_weighted": SHKSampler(big, step_size=0.02),
        "shk_jump": SHKSampler(big, step_size=0.02, scheme="jump"),
    }.items():
        state = flow.init(xb)
        per[name] = median_time(lambda f=flow, s=state: _one_step(f, s, jr.key(2))[0].x, repeats=5)
        rows.append((f"one step at n = {n}: {name}", per[name], ""))
    for name in ("shk_weighted", "shk_jump"):
        lines.append(f"- per-step cost at n = 10⁴: {name} / ULA = {per[name] / per['ula']:.0f}× (the KDE is O(n²))")
    grid_rows, grid_lines = grid_loop_vs_sweep()
    return (
        table(rows, "SHK sampler: time to accuracy and per-step cost")
        + "\n\n"
        + "\n".join(lines)
        + "\n\n"
        + table(grid_rows, "shk_private_regression grid: loop vs sweep")
        + "\n\n"
        + "\n".join(grid_lines)
        + "\n\n"
        + scaling_report()
    )


def scaling_report() -> str:
    """The scaling section alone (``--scaling``)."""
    rows, lines = scaling()
    return table(rows, "SHK at scale: one step, exact vs subsample KDE, against ULA") + "\n\n" + "\n".join(lines)


if __name__ == "__main__":
    print(scaling_report() if "--scaling" in sys.argv[1:] else main())
