"""How llmtk's benchmarks time things: best of several runs, by wall or CPU clock, and ratios.

On a shared machine the fastest run is the one that ran undisturbed, so every figure is a best,
never a mean; `nan` stands for a figure that does not exist (a peer lacking a type).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable

from llmtk.errors import InputError

Progress = Callable[[str], None]


def best_seconds(fn: Callable[[], Any], repeat: int = 3, min_seconds: float = 1.0, warmup: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time of at least `repeat` calls, going on until `min_seconds` of wall time have passed
    (at most 100 calls): on a shared machine the fastest run is the one that ran undisturbed.
    `clock` may be `time.thread_time` for work done on the calling thread alone (one-thread
    kernels, NumPy): its CPU time, which other processes on a busy machine do not inflate."""
    if warmup:
        fn()  # compile, load numba's cache, fault pages in
    best = math.inf
    start = time.perf_counter()
    for i in range(100):
        if i >= repeat and time.perf_counter() - start > min_seconds:
            break
        t = clock()
        fn()
        best = min(best, clock() - t)
    return max(best, 1e-9)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def mbps(fn: Callable[[], Any], n_bytes: int, repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    return n_bytes / best_seconds(fn, repeat, clock=clock) / 1e6


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)) or math.isnan(b):
        return math.nan
    return a / b


def nan_if_none(v: float | None) -> float:
    return math.nan if v is None else float(v)


def parse_threads(text: str | Iterable[int]) -> list[int]:
    """'1,2' -> [1, 2], checked against the threads numba can run."""
    import numba

    items = [int(t) for t in text.split(",") if t.strip()] if isinstance(text, str) else [int(t) for t in text]
    n_max = numba.config.NUMBA_NUM_THREADS
    for t in items:
        if not 1 <= t <= n_max:
            raise InputError(f"thread count {t} is outside 1..{n_max} (numba's NUMBA_NUM_THREADS)")
    if not items:
        raise InputError("no thread count given")
    return items


def set_numba_threads(n: int | None) -> None:
    import numba

    numba.set_num_threads(n if n is not None else numba.config.NUMBA_NUM_THREADS)


def children_cpu_seconds() -> float:
    r = os.times()
    return r.children_user + r.children_system
