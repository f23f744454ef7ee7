"""Scaling table: time per step and peak memory against the particle count n, for every flow.

python benchmarks/bench_scaling.py [--full]

For each flow, one compiled step at n = 10³, 10⁴, 10⁵ (10⁶ where it fits), d = 2 unless said:

* **time**: median wall time of the compiled step (3 repeats after a compiling call);
* **memory**: XLA's buffer assignment for that compiled step (arguments + outputs + temporaries,
  ``compiled.memory_analysis()``): the peak the program can hold at once, deterministic and free of
  allocator noise (resident-set measurements on a shared 2-core machine are not);
* **exponent**: the least-squares slope of log time against log n over the sizes that ran, so a
  regression in complexity shows up as a number (≈ 1 for O(n), ≈ 2 for O(n²); small n is
  overhead-dominated, so the fit uses the sizes ≥ 10⁴ where there are two of them).

A size is skipped (and says so) when the step's cost at that size is known to be out of reach here:
an O(n²) kernel or dense cost matrix past its row cap, or a previous size slower than the budget.
``--full`` raises the caps by one decade where the memory allows.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time

from dpflows import aeot, ldp, muon, swf
from dpflows.hopfield import SinkhornHopfield
from dpflows.langevin import ULA
from dpflows.potentials import GaussianMixturePotential
from dpflows.shk import SHKSampler

SIZES = (1_000, 10_000, 100_000, 1_000_000)
BUDGET_S = 3.0  # skip the next size once a step takes longer than this


def _mixture():
    return GaussianMixturePotential(jnp.array([[-4.0, 0.0], [4.0, 0.0]]), jnp.array([0.9, 0.1]), 0.7)


def _flow_step(flow, n: int, key, d: int = 2, scale: float = 3.0):
    state = flow.init(scale * jr.normal(key, (n, d)))
    return (lambda s, k: flow.step(s, k)[0]), (state, jr.fold_in(key, 1))


def ula(n, key):
    return _flow_step(ULA(_mixture(), step_size=0.02), n, key)


def shk_exact(n, key):
    return _flow_step(SHKSampler(_mixture(), step_size=0.02), n, key)


def shk_subsample(n, key):
    return _flow_step(SHKSampler(_mixture(), step_size=0.02, density="subsample", num_reference=256), n, key)


def hopfield(n, key):
    patterns = jr.normal(key, (4, n, 2)) + 3.0 * jnp.arange(4.0)[:, None, None]
    memory = SinkhornHopfield(patterns, epsilon=0.3, beta=10.0, max_iterations=50, threshold=1e-12)
    state = memory.query(patterns[1] + 0.3 * jr.normal(jr.fold_in(key, 1), (n, 2)))
    return (lambda s, k: memory.step(s, k)[0]), (state, jr.fold_in(key, 2))


def dp_sw(n, key):
    rows = 0.3 * jr.normal(key, (min(n, 100_000), 2))
    rows = rows / jnp.maximum(1.0, jnp.linalg.norm(rows, axis=1, keepdims=True))
    release, _ = swf.private_release(jr.fold_in(key, 1), rows, num_projections=64, epsilon=5.0, delta=1e-5)
    flow = swf.DPSlicedWassersteinFlow(release, step_size=1.0)
    return _flow_step(flow, n, jr.fold_in(key, 2), scale=1.0)


def muon_meanfield(n, key):
    inputs = jr.normal(key, (256, 5))
    net = muon.TwoLayerNetwork(inputs, jnp.tanh(inputs[:, 0] - inputs[:, 1]))
    flow = muon.MuonMeanFieldFlow(net, eps=0.1, damping=1.0, step_size=0.05)
    state = flow.init(jr.normal(jr.fold_in(key, 1), (n, 2, 5)))
    return (lambda s, k: flow.step(s, k)[0]), (state, jr.fold_in(key, 2))


def ldp_loss(n, key):
    noise = ldp.GaussianNoise(0.5)
    y = jr.normal(key, (n, 2))

    def loss_and_grad(x):
        return jax.value_and_grad(
            lambda x: ldp.noise_matched_loss(x, y, noise=noise, max_iterations=50, threshold=1e-12, warn=False)
        )(x)

    return loss_and_grad, (jr.normal(jr.fold_in(key, 1), (n, 2)),)


def aeot_estimate(n, key):
    solver = aeot.SemiDiscreteOT(jr.uniform(key, (n, 2)), batch_size=4096)
    # cell_masses validates its heights on the host and compiles its own chunked program: timed as called.
    return HostCall(lambda h, k: solver.cell_masses(k, h, 4096)), (jnp.zeros(n), jr.fold_in(key, 1))


class HostCall:
    """A step that compiles itself (host-side validation first): timed as called, memory not analysed."""

    def __init__(self, fn: Callable):
        self.fn = fn


# name -> (builder, largest n by default, largest n with --full, what one step is)
CASES: dict[str, tuple[Callable, int, int, str]] = {
    "ULA": (ula, 1_000_000, 1_000_000, "one Langevin step on a 2-mode mixture"),
    "SHK (exact KDE)": (shk_exact, 10_000, 100_000, "transport + reaction with the exact O(n²) leave-one-out KDE"),
    "SHK (subsample KDE)": (
        shk_subsample,
        1_000_000,
        1_000_000,
        "the same with the O(n·m) KDE against m = 256 references",
    ),
    "Sinkhorn Hopfield": (
        hopfield,
        10_000,
        10_000,
        "one retrieval step: 4 stored clouds of n points, 50 dense Sinkhorn iterations",
    ),
    "DP-SW": (dp_sw, 1_000_000, 1_000_000, "one flow step from a 64-direction release"),
    "Muon mean-field": (
        muon_meanfield,
        1_000_000,
        1_000_000,
        "one damped Hamiltonian step, n particles of 2×5 matrices, 256 inputs",
    ),
    "LDP loss": (
        ldp_loss,
        10_000,
        10_000,
        "matched entropic loss and its gradient, n model vs n private points, 50 dense Sinkhorn iterations",
    ),
    "AE-OT estimate": (
        aeot_estimate,
        1_000_000,
        1_000_000,
        "the solver's step: cell masses of 4096 source points over n codes",
    ),
}


def _measure(build: Callable, n: int, key) -> tuple[float, float]:
    fn, args = build(n, key)
    if isinstance(fn, HostCall):
        return median_time(lambda: fn.fn(*args), repeats=3), math.nan
    compiled = jax.jit(fn).lower(*args).compile()
    mem = compiled.memory_analysis()
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    seconds = median_time(lambda: compiled(*args), repeats=3)
    return seconds, peak


def growth_exponent(ns, seconds) -> float:
    """Least-squares slope of log t against log n (over n ≥ 10⁴ when there are two such sizes)."""
    ns, seconds = np.asarray(ns, float), np.asarray(seconds, float)
    big = ns >= 10_000
    if big.sum() >= 2:
        ns, seconds = ns[big], seconds[big]
    if len(ns) < 2:
        return math.nan
    return float(np.polyfit(np.log(ns), np.log(seconds), 1)[0])


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt_mem(b: float) -> str:
    if math.isnan(b):
        return "memory n/a"
    return f"{b / 2**20:.3g} MiB" if b < 2**30 else f"{b / 2**30:.3g} GiB"


def main(full: bool = False) -> str:
    key = jr.key(0)
    header = [f"n = {n:.0e}".replace("e+0", "e") for n in SIZES]
    out = [
        "### Scaling: time per step and peak memory (XLA buffers) against n",
        "",
        "| flow | " + " | ".join(header) + " | exponent | one step |",
        "|---|" + "---|" * len(SIZES) + "---|---|",
    ]
    for name, (build, cap, full_cap, what) in CASES.items():
        limit = full_cap if full else cap
        cells, ns, times, last = [], [], [], 0.0
        for n in SIZES:
            if n > limit:
                cells.append("not run (cap)")
                continue
            if last > BUDGET_S:
                cells.append("not run (budget)")
                continue
            try:
                seconds, peak = _measure(build, n, key)
            except Exception as err:  # noqa: BLE001 - out of memory or similar: report, keep going
                cells.append(f"failed: {type(err).__name__}")
                print(f"{name} at n = {n}: {err}", file=sys.stderr)
                last = math.inf
                continue
            cells.append(f"{_fmt_time(seconds)}, {_fmt_mem(peak)}")
            ns.append(n)
            times.append(seconds)
            last = seconds
        exponent = growth_exponent(ns, times)
        out.append(f"| {name} | " + " | ".join(cells) + f" | {exponent:.2f} | {what} |")
        print(out[-1], file=sys.stderr, flush=True)
    out.append("")
    out.append(
        f"Caps: O(n²) steps stop at their cap (`--full` raises SHK's to 10⁵); any size after a step slower than "
        f"{BUDGET_S:.0f} s is skipped. Exponent ≈ 1: linear; ≈ 2: quadratic."
    )
    return "\n".join(out)


if __name__ == "__main__":
    print(main(full="--full" in sys.argv[1:]))
