"""Run every benchmark and print one markdown report (``make bench``; ``make bench-full`` adds ``--full``).

Each section is printed as soon as it completes, with its own wall time. ``--full`` turns on the
long parts (full-size peer solves, the 10⁵-point Sinkhorn runs, larger scaling caps) in the
benchmarks that have them; the default run is sized to finish in about 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import importlib
import inspect
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402

BENCHMARKS = [
    "bench_runtime",
    "bench_privacy",
    "bench_ot",
    "bench_shk",
    "bench_ldp",
    "bench_muon",
    "bench_aeot",
    "bench_hopfield",
    "bench_swf",
    "bench_scaling",
]


def main(argv: list[str]) -> None:
    full = "--full" in argv
    only = [a for a in argv if not a.startswith("--")]
    print(
        f"# dpflows benchmarks{' (--full)' if full else ''}\n\njax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{len(jax.devices())} device(s), {platform.processor() or platform.machine()}\n",
        flush=True,
    )
    start = time.perf_counter()
    for name in only or BENCHMARKS:
        t0 = time.perf_counter()
        run = importlib.import_module(name).main
        text = run(full=full) if "full" in inspect.signature(run).parameters else run()
        print(f"## {name}\n\n{text}\n\n_{name}: {time.perf_counter() - t0:.0f} s_\n", flush=True)
    print(f"Total: {time.perf_counter() - start:.0f} s.", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
