"""Timing helpers: compile first, block_until_ready, median of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def median_time(fn: Callable[[], object], *, repeats: int = 11, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (outputs blocked on; warm-up calls compile).

    The 2-core CI-class machine is noisy (single repeats vary up to 5×): the median of 11 is
    stable to about 10%.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(rows: list[tuple[str, float, str]], title: str) -> str:
    """Markdown table of (name, seconds, note) rows."""
    out = [f"### {title}", "", "| case | median | note |", "|---|---|---|"]
    out += [f"| {name} | {sec * 1e3:.2f} ms | {note} |" for name, sec, note in rows]
    return "\n".join(out)
