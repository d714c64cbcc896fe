"""`llmtk bench start`: what a fresh process pays before its first result (JIT cache, imports).

Start-up can only be measured in fresh processes, so this module runs them.
"""
from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

from llmtk.bench.timing import Progress, children_cpu_seconds

if TYPE_CHECKING:
    import pandas

_START_SNIPPET = """
import time
t0 = time.perf_counter()
import numpy as np
from llmtk import kernels
x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
imat = np.ones(256, np.float32)
for t in kernels.registered_types():
    k = kernels.kernel_for(t)
    if k.quantize is not None:
        q = kernels.quantize(x, t, imatrix=imat)
        kernels.quantize(x, t) if not kernels.requires_imatrix(t) else None
        kernels.dequantize(q, t, x.shape)
        if k.matvec is not None:
            kernels.matvec(q, t, x)
print(time.perf_counter() - t0, time.process_time())
"""


def warm_start_seconds() -> tuple[float, float]:
    """(wall, CPU) seconds for a fresh process to import every kernel module and run each kernel
    once, measured after a first run has filled numba's on-disk cache (`cache=True`)."""
    subprocess.run([sys.executable, "-c", _START_SNIPPET], check=True, capture_output=True)
    res = subprocess.run([sys.executable, "-c", _START_SNIPPET], check=True, capture_output=True, text=True)
    wall, cpu = res.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def bench_start(repeat: int = 3, progress: Progress | None = None) -> "pandas.DataFrame":
    """Start-up costs in fresh processes (best of `repeat`, wall and CPU seconds): the warm-cache
    JIT start of every kernel (timed inside the process) and `llmtk --help` (the whole process,
    which must import nothing heavy)."""
    import pandas as pd

    if progress:
        progress("start: kernels")
    kern = [warm_start_seconds() for _ in range(repeat)]
    if progress:
        progress("start: llmtk --help")
    helps = []
    for _ in range(repeat):
        t, c = time.perf_counter(), children_cpu_seconds()
        subprocess.run([sys.executable, "-m", "llmtk.cli", "--help"], check=True, capture_output=True)
        helps.append((time.perf_counter() - t, children_cpu_seconds() - c))
    df = pd.DataFrame([
        {"what": "kernels: import + one call of every kernel (numba cache warm)",
         "wall s": min(w for w, _ in kern), "cpu s": min(c for _, c in kern)},
        {"what": "llmtk --help (whole process)", "wall s": min(w for w, _ in helps), "cpu s": min(c for _, c in helps)},
    ])
    df.attrs["title"] = f"llmtk start-up, fresh processes, best of {repeat}"
    return df
