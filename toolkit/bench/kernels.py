"""`llmtk bench kernels`: MB/s of quantize / dequantize per ggml type, beside ggml and gguf-py."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from llmtk.bench.reference import GGML_MBPS
from llmtk.bench.timing import CLOCKS, Progress, mbps, nan_if_none, parse_threads, ratio, set_numba_threads
from llmtk.errors import InputError

if TYPE_CHECKING:
    import pandas

def gguf_py_mbps(name: str, x: np.ndarray, repeat: int = 3, fallback: np.ndarray | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> tuple[float | None, float | None]:
    """gguf-py's NumPy quantize and dequantize of `x` in MB/s of f32, None where it lacks the type.

    Where gguf-py can dequantize but not quantize a type, `fallback` (llmtk's bytes for `x`) is
    the data it dequantizes."""
    import gguf
    from gguf import quants

    try:
        qt = gguf.GGMLQuantizationType[name]
    except KeyError:
        return None, None
    q = d = None
    data = fallback
    try:
        data = quants.quantize(x, qt)
        q = mbps(lambda: quants.quantize(x, qt), x.nbytes, repeat, clock)
    except (NotImplementedError, quants.QuantError, KeyError):
        pass
    if data is not None:
        try:
            d = mbps(lambda: quants.dequantize(data, qt), x.nbytes, repeat, clock)
        except (NotImplementedError, quants.QuantError, KeyError):
            pass
    return q, d


def kernel_columns(threads: Sequence[int]) -> list[str]:
    """Columns of `bench_kernels` for these thread counts."""
    cols = ["type"]
    for op in ("q", "qi", "dq"):
        for t in threads:
            cols.append(f"{op} {t}t")
            if t == 1:
                cols.append(f"{op} 1t/ggml")
    return cols + ["gguf-py q", "gguf-py dq", "q 1t/gguf-py", "dq 1t/gguf-py"]


def bench_kernels(types: Sequence[str] | None = None, *, rows: int = 128, cols: int = 4096,
                  threads: Sequence[int] = (1, 2), repeat: int = 3, gguf_py: bool = True,
                  clock: str = "wall", progress: Progress | None = None) -> "pandas.DataFrame":
    """MB/s of f32 data per ggml type for llmtk's quantize (`q`), quantize with an imatrix (`qi`)
    and dequantize (`dq`) on each thread count, gguf-py's NumPy code in the same run, and ratios to
    ggml's one-thread figures (`GGML_MBPS`) and to gguf-py.

    Input: a seeded (rows, cols) Gaussian, as ggml's figures were measured (128 x 4096). Types that
    require an imatrix report their imatrix speed in `q` too, as the ggml table does. `clock`
    "cpu" times one-thread runs and gguf-py by the calling thread's CPU time (busy machines);
    multi-thread runs are always timed by the wall clock.
    """
    import pandas as pd

    from llmtk import kernels
    from llmtk.ggufio.constants import parse_ggml_type, type_traits

    threads = parse_threads(threads)
    if clock not in CLOCKS:
        raise InputError(f"unknown clock {clock!r}; valid: {', '.join(CLOCKS)}")
    registered = [t for t in kernels.registered_types() if t.name != "F32"]
    if types:
        wanted = [parse_ggml_type(t) for t in types]
        missing = [t.name for t in wanted if t not in registered]
        if missing:
            raise InputError(f"no llmtk kernel for type(s) {', '.join(missing)}; "
                             f"registered: {', '.join(t.name for t in registered)}")
        registered = wanted
    block = max(type_traits(t).block_size for t in registered) if registered else 1
    if rows < 1 or cols < 1 or cols % block:
        raise InputError(f"--rows {rows} --cols {cols}: need rows >= 1 and cols a multiple of {block} "
                         f"(the largest block size among the chosen types)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    imat = (rng.random(cols) + 0.1).astype(np.float32)

    out = []
    try:
        for t in registered:
            if progress:
                progress(f"kernels {t.name}")
            k = kernels.kernel_for(t)
            ggml = GGML_MBPS.get(t.name, (None,) * 5)
            row: dict[str, Any] = {"type": t.name}
            for n in threads:
                set_numba_threads(n)
                ck = CLOCKS[clock] if n == 1 else time.perf_counter
                if k.quantize is not None:
                    qi = mbps(lambda: kernels.quantize(x, t, imatrix=imat), x.nbytes, repeat, ck)
                    q = qi if kernels.requires_imatrix(t) else mbps(lambda: kernels.quantize(x, t), x.nbytes, repeat, ck)
                    row[f"q {n}t"], row[f"qi {n}t"] = q, qi
                    data = kernels.quantize(x, t, imatrix=imat)
                    row[f"dq {n}t"] = mbps(lambda: kernels.dequantize(data, t, x.shape), x.nbytes, repeat, ck)
            set_numba_threads(None)
            for op, ref in (("q", ggml[0]), ("qi", ggml[1]), ("dq", ggml[2])):
                row[f"{op} 1t/ggml"] = ratio(row.get(f"{op} 1t"), ref)
            gq = gdq = None
            if gguf_py:
                fallback = kernels.quantize(x, t, imatrix=imat) if k.quantize is not None else None
                gq, gdq = gguf_py_mbps(t.name, x, repeat, fallback=fallback, clock=CLOCKS[clock])
            row["gguf-py q"], row["gguf-py dq"] = nan_if_none(gq), nan_if_none(gdq)
            row["q 1t/gguf-py"] = ratio(row.get("q 1t"), gq)
            row["dq 1t/gguf-py"] = ratio(row.get("dq 1t"), gdq)
            out.append(row)
    finally:
        set_numba_threads(None)
    df = pd.DataFrame(out, columns=kernel_columns(threads)).astype({c: float for c in kernel_columns(threads)[1:]})
    df.attrs["title"] = (f"llmtk kernels, MB/s of f32 data ({rows} x {cols} Gaussian, best of >= {repeat} runs "
                         f"and 1 s; one-thread clock: {clock}); "
                         f"q = quantize, qi = with imatrix, dq = dequantize; Nt = N threads; "
                         f"/ggml = ratio to ggml's 1-thread figure (quiet machine), /gguf-py = same run")
    return df
