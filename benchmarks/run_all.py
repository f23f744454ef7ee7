"""Run every benchmark and print one markdown report (``make bench``)."""

from __future__ import annotations

import importlib
import platform
import sys
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
]


def main() -> None:
    print(
        f"# dpflows benchmarks\n\njax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{len(jax.devices())} device(s), {platform.processor() or platform.machine()}\n"
    )
    for name in BENCHMARKS:
        print(importlib.import_module(name).main(), "\n", flush=True)


if __name__ == "__main__":
    main()
