"""Thread counts of NumPy's OpenBLAS (through its C API, no threadpoolctl) and of numba.

Small matmuls (per-head attention) run faster on one BLAS thread: waking OpenBLAS's workers for
a 128 x 64 x 512 product costs more than it saves, and on a busy machine it can cost 10x.
"""
from __future__ import annotations

import ctypes
import glob
import os
from contextlib import contextmanager
from typing import Iterator

_SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
              "openblas_set_num_threads")
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
              "openblas_get_num_threads")


def _find() -> tuple[object, object] | tuple[None, None]:
    import numpy as np
    base = os.path.dirname(np.__file__)
    candidates = sorted(glob.glob(os.path.join(base, "..", "numpy.libs", "*openblas*"))
                        + glob.glob(os.path.join(base, ".dylibs", "*openblas*")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, n) for n in _SET_NAMES if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _GET_NAMES if hasattr(lib, n)), None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            return setter, getter
    return None, None


_set, _get = _find()


def get_threads() -> int:
    """OpenBLAS's current thread count (0 when NumPy's BLAS is not an OpenBLAS we can reach)."""
    return int(_get()) if _get is not None else 0


def set_threads(n: int) -> None:
    """Set OpenBLAS's thread count (ignored without a reachable OpenBLAS)."""
    if _set is not None and n > 0:
        _set(int(n))


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` BLAS threads (None: leave as is), restoring the count after."""
    if n is None or _set is None:
        yield
        return
    old = get_threads()
    if old == n:
        yield
        return
    set_threads(n)
    try:
        yield
    finally:
        set_threads(old)


@contextmanager
def numba_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` numba threads (None: leave as is), restoring the count after."""
    import numba

    if n is None:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def auto_threads() -> int:
    """All the cores this process may run on, as llama.cpp's tools default to.

    The model's pools do not spin while they wait (OpenBLAS is held to one thread, the batch
    workers are a ThreadPoolExecutor), so a second thread adds to the process's share of a busy
    machine instead of collapsing: on the shared 2-core machine at load average 11-13, a
    512-token SmolLM2 batch took 4.6-5.4 s on two threads against 7.0-7.4 s on one. (An earlier
    rule took one thread once the load average reached the core count, which also fired right
    after the process's own or a benchmark peer's runs and left evaluations on one core.)
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
