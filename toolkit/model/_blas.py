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
    """All cores, or one when the machine is already saturated (1-minute load average >= cores).

    Thread pools that spin while they wait (OpenBLAS, OpenMP) collapse on an oversubscribed
    machine: on a shared 2-core box at load 9, two threads ran 2-10x slower than one.
    """
    n = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] >= n
    except OSError:
        busy = False
    return 1 if busy else n
