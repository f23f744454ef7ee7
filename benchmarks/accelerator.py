"""The GPU check: the numbers a lent accelerator should be asked for first, in one short run (≤ 5 min).

python benchmarks/accelerator.py            # on the accelerator (benchmarks/accelerator.sh wraps it)
python benchmarks/accelerator.py --smoke    # the same sections at toy sizes, on any machine (CPU check)

Sections, each printed as it completes, under a global deadline (sections that would start after it
are skipped and say so):

1. **Sinkhorn, n = m = 16384, d = 64** (float32, ε = 0.05·mean cost): seconds per iteration of the dense
   solve (cost matrix materialised: ``method="log"``) and of the memory-bounded ``method="online"``,
   at a fixed iteration count, against the memory-bandwidth roofline of the device. A dense log-domain
   iteration streams C twice (the f and the g half-steps): 2·n·m·4 bytes, so the roofline is that over
   the device's HBM bandwidth (H100 SXM 3.35 TB/s → ~0.64 ms; H200 4.8 TB/s → ~0.45 ms). The online
   path recomputes C: 2 · (2·n·m·d) FLOPs per iteration (~0.55–1.0 ms on an H100-class device).
2. **DP sliced-Wasserstein step**, n = 10⁶ particles, k = 256 directions, d = 64.
3. **SHK at n = 10⁵**, d = 2 and 10: a ULA step, the subsampled-KDE SHK step (m = 256), and the exact O(n²)
   KDE step, side by side.
4. **The scaling table** of ``bench_scaling.py`` with its ``--full`` caps, as far as the deadline allows.

Nothing here is specific to one vendor: the device is whatever ``jax.devices()[0]`` is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
from _timing import median_time  # noqa: E402

# HBM bandwidth (bytes/s) by device kind, from the vendors' data sheets; None: unknown (no roofline).
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L4": 0.3e12, "V100": 0.9e12, "B200": 8.0e12}

DEADLINE_S = 270.0


def _bandwidth() -> tuple[str, float | None]:
    kind = getattr(jax.devices()[0], "device_kind", "unknown")
    for name, bw in BANDWIDTH.items():
        if name in kind:
            return kind, bw
    return kind, None


def sinkhorn_section(n: int, d: int, iterations: int) -> str:
    from dpflows import ot

    x = jr.normal(jr.key(0), (n, d)) / jnp.sqrt(d)
    y = jr.normal(jr.key(1), (n, d)) / jnp.sqrt(d) + 0.5 / jnp.sqrt(d)
    eps = 0.05 * float(jnp.mean(0.5 * jnp.sum((x[:256, None] - y[None, :256]) ** 2, -1)))
    kind, bw = _bandwidth()
    rows = [f"### Sinkhorn n = m = {n}, d = {d}, ε = {eps:.3g}, {iterations} iterations (float32, {kind})", ""]
    rows += ["| path | s / iteration | roofline | fraction of roofline |", "|---|---|---|---|"]
    roof_dense = 2 * n * n * 4 / bw if bw else None
    for method in ("log", "online"):

        def solve(method=method):
            return ot.entropic_ot(
                x, y, epsilon=eps, method=method, max_iterations=iterations, threshold=1e-30, warn=False
            ).f

        try:
            per_it = median_time(solve, repeats=3) / iterations
        except Exception as err:  # noqa: BLE001 - e.g. the dense matrix does not fit: say so
            rows.append(f"| {method} | failed: {type(err).__name__} | | |")
            continue
        roof = roof_dense if method == "log" else None
        note = "—" if roof is None else f"{roof * 1e3:.3g} ms (2·n·m·4 B / HBM)"
        frac = "—" if roof is None else f"{roof / per_it:.2f}"
        rows.append(f"| {method} | {per_it * 1e3:.3g} ms | {note} | {frac} |")
    return "\n".join(rows)


def swf_section(n: int, k: int, d: int) -> str:
    from dpflows import swf

    rows_ = 0.5 * jr.normal(jr.key(0), (min(n, 100_000), d)) / jnp.sqrt(d)
    rows_ = rows_ / jnp.maximum(1.0, jnp.linalg.norm(rows_, axis=1, keepdims=True))
    release, _ = swf.private_release(jr.key(1), rows_, num_projections=k, epsilon=5.0, delta=1e-5)
    flow = swf.DPSlicedWassersteinFlow(release, step_size=1.0)
    state = flow.init(jr.normal(jr.key(2), (n, d)))
    step = jax.jit(lambda s, key: flow.step(s, key)[0].x)
    sec = median_time(lambda: step(state, jr.key(3)), repeats=5)
    return f"### DP-SW step\n\nn = {n}, k = {k}, d = {d}: {sec * 1e3:.3g} ms per step"


def shk_section(n: int, dims: tuple[int, ...]) -> str:
    from dpflows.langevin import ULA
    from dpflows.potentials import GaussianPotential
    from dpflows.shk import SHKSampler

    out = [f"### SHK at n = {n}", "", "| d | ULA | SHK subsample (m = 256) | SHK exact KDE | subsample / ULA |"]
    out.append("|---|---|---|---|---|")
    for d in dims:
        target = GaussianPotential(jnp.zeros(d), jnp.eye(d))
        state0 = None
        times = {}
        for name, flow in (
            ("ula", ULA(target, step_size=0.01)),
            ("sub", SHKSampler(target, step_size=0.01, density="subsample", num_reference=256)),
            ("exact", SHKSampler(target, step_size=0.01)),
        ):
            state0 = flow.init(2.0 * jr.normal(jr.key(d), (n, d)))
            step = jax.jit(lambda s, key, flow=flow: flow.step(s, key)[0].x)
            try:
                times[name] = median_time(lambda step=step, s=state0: step(s, jr.key(1)), repeats=3)
            except Exception as err:  # noqa: BLE001
                times[name] = None
                print(f"SHK {name} d={d}: {err}", file=sys.stderr)
        fmt = {k: ("failed" if v is None else f"{v * 1e3:.3g} ms") for k, v in times.items()}
        ratio = times["sub"] / times["ula"] if times["sub"] and times["ula"] else float("nan")
        out.append(f"| {d} | {fmt['ula']} | {fmt['sub']} | {fmt['exact']} | {ratio:.2f}× |")
    return "\n".join(out)


def main(smoke: bool = False) -> None:
    start = time.perf_counter()
    dev = jax.devices()[0]
    print(f"# dpflows on {dev.platform} ({getattr(dev, 'device_kind', '?')}), jax {jax.__version__}\n", flush=True)
    sections = [
        ("sinkhorn", lambda: sinkhorn_section(512 if smoke else 16_384, 8 if smoke else 64, 10 if smoke else 50)),
        ("dp-sw", lambda: swf_section(10_000 if smoke else 1_000_000, 16 if smoke else 256, 4 if smoke else 64)),
        ("shk", lambda: shk_section(2_000 if smoke else 100_000, (2,) if smoke else (2, 10))),
    ]
    if not smoke:
        import bench_scaling

        sections.append(("scaling", lambda: bench_scaling.main(full=True)))
    for name, fn in sections:
        if time.perf_counter() - start > DEADLINE_S:
            print(f"### {name}: skipped (past the {DEADLINE_S:.0f} s deadline)\n", flush=True)
            continue
        t0 = time.perf_counter()
        print(fn(), f"\n\n_{name}: {time.perf_counter() - t0:.0f} s_\n", flush=True)
    print(f"Total: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
