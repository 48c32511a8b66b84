"""One line that says what machine a figure came from, and how fast its CPU ran at that moment.

This VM's speed varies by up to 3x with its neighbours; the empty-loop figure lets a reader compare
two runs of a benchmark (about 12 ns per iteration when the machine is quiet).
"""

from __future__ import annotations

import os
import platform
import time


def describe() -> str:
    n = 5_000_000
    t0 = time.perf_counter()
    for _ in range(n):
        pass
    loop_ns = (time.perf_counter() - t0) / n * 1e9
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"empty loop {loop_ns:.1f} ns/iteration"
    )
