"""CPU-bound pure-Python work of the differ (classifying mismatched sessions, DeepDiff) in two halves
at once, one in a forked child, where the machine has more than one core.

The child is forked after the work is staged in a module global, so nothing is pickled on the way in;
only its results come back. It runs pure Python on what it inherited and touches no DuckDB
connection or file. ``SDB_DIFF_WORKERS=1`` turns it off; platforms without ``fork`` run serially.
``SDB_DIFF_MIN_ITEMS=N`` sets the size from which it forks (default :data:`MIN_ITEMS`): a test can
make a small diff take the parallel path.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_WORK: tuple[Callable[[Sequence[Any]], Any], Sequence[Any]] | None = None
MIN_ITEMS = 4000  # below this, forking costs more than it saves


def _child(_: int) -> Any:
    assert _WORK is not None
    fn, items = _WORK
    return fn(items)


def _min_items() -> int:
    configured = os.environ.get("SDB_DIFF_MIN_ITEMS", "").strip()
    return int(configured) if configured.isdigit() else MIN_ITEMS


def _workers() -> int:
    configured = os.environ.get("SDB_DIFF_WORKERS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(2, os.cpu_count() or 1)


def in_halves(fn: Callable[[Sequence[T]], R], items: Sequence[T]) -> list[R]:
    """``[fn(items)]``, or ``[fn(first half), fn(second half)]`` computed at the same time."""
    global _WORK
    if _workers() < 2 or len(items) < _min_items() or "fork" not in mp.get_all_start_methods():
        return [fn(items)]
    mid = len(items) // 2
    _WORK = (fn, items[mid:])
    try:
        # a ProcessPoolExecutor, not a Pool: a child that dies (killed for memory) is a BrokenProcessPool
        # here, and its half is computed in this process instead of waiting forever
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("fork")) as pool:
            later = pool.submit(_child, 0)
            first = fn(items[:mid])
            try:
                second: R = later.result()
            except BrokenProcessPool:
                second = fn(items[mid:])
    finally:
        _WORK = None
    return [first, second]
