"""Kernel throughput: MB/s of float32 data per type for quantize (plain and imatrix) and
dequantize, on one thread and on all cores, beside gguf-py's NumPy quants measured in the same run
and ggml's own figures for this machine class.

Run: `python benchmarks/kernels.py [--types Q4_0,Q8_0] [--rows 128] [--cols 4096] [--repeat 3]`.
Machines are shared and noisy: read the ratios, which are measured in one run (the ggml figures
come from a quiet machine, so ratios to them are pessimistic on a busy one).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

# ggml's C kernels on this machine class, 1 thread, MB/s of float32 data (quantize =
# ggml_quantize_chunk, dequantize = to_float; 128 x 4096 Gaussian, best of 3): the table
# "Speed of the references on this machine class" in ../shared/README.md.
# Columns: quantize, quantize with imatrix, dequantize, gguf-py quantize, gguf-py dequantize.
GGML_MBPS: dict[str, tuple[float, float, float, float | None, float | None]] = {
    "F16": (2337, 2453, 3945, 1414, 1322),
    "BF16": (11675, 11819, 49110, 960, 2200),
    "Q4_0": (3909, 154, 8668, 692, 1677),
    "Q4_1": (4165, 37.0, 6795, 527, 1457),
    "Q5_0": (2218, 154, 4637, 652, 1074),
    "Q5_1": (2474, 37.2, 4571, 494, 1055),
    "Q8_0": (1210, 1244, 30813, 737, 2988),
    "Q2_K": (71.0, 31.0, 5293, None, 1347),
    "Q3_K": (346, 110, 3862, None, 1050),
    "Q4_K": (61.9, 35.6, 25042, None, 1200),
    "Q5_K": (74.4, 34.6, 18886, None, 955),
    "Q6_K": (144, 137, 3847, None, 998),
    "IQ4_NL": (22.8, 22.7, 3987, None, 626),
    "IQ4_XS": (22.2, 22.2, 3981, None, 499),
    "TQ1_0": (1364, 1372, 16045, 625, 1708),
    "TQ2_0": (1332, 1333, 15654, 980, 2204),
    "MXFP4": (877, 874, 3880, 42.8, 401),
    "NVFP4": (162, 162, 4032, None, 512),
    "Q1_0": (763, 760, 897, None, None),
    "Q2_0": (1214, 1217, 4767, None, None),
    "IQ3_S": (12.0, 12.1, 1177, None, 273),
    "IQ3_XXS": (8.3, 8.5, 1213, None, 257),
    "IQ2_S": (18.2, 18.0, 1165, None, 264),
    "IQ2_XS": (5.1, 5.1, 1141, None, 263),
    "IQ2_XXS": (10.8, 10.7, 1205, None, 270),
    "IQ1_M": (29.8, 27.4, 4656, None, 363),
    "IQ1_S": (26.1, 26.2, 7215, None, 474),
}

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
    once, measured after a first run has filled numba's on-disk cache."""
    subprocess.run([sys.executable, "-c", _START_SNIPPET], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", _START_SNIPPET], check=True, capture_output=True, text=True)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def best_mbps(fn, n_bytes: int, repeat: int, min_seconds: float = 1.0, clock=time.perf_counter) -> float:
    """Best time of at least `repeat` runs, going on for `min_seconds` (up to 100 runs): on a
    shared machine the best run is the one that ran undisturbed. `clock` may be
    time.thread_time for one-thread runs (CPU time of the calling thread, which does the work)."""
    fn()  # compile / warm caches
    best = float("inf")
    start = time.perf_counter()
    for i in range(100):
        if i >= repeat and time.perf_counter() - start > min_seconds:
            break
        t = clock()
        fn()
        best = min(best, clock() - t)
    return n_bytes / max(best, 1e-9) / 1e6


def gguf_py_mbps(name: str, x: np.ndarray, repeat: int, clock=time.perf_counter) -> tuple[float | None, float | None]:
    """gguf-py 0.19's NumPy quantize and dequantize, or None where it lacks the type."""
    import gguf
    from gguf import quants

    try:
        qt = gguf.GGMLQuantizationType[name]
    except KeyError:
        return None, None
    q = d = None
    try:
        data = quants.quantize(x, qt)
        q = best_mbps(lambda: quants.quantize(x, qt), x.nbytes, repeat, clock=clock)
    except (NotImplementedError, quants.QuantError, KeyError):
        from llmtk import kernels
        data = kernels.quantize(x, name, imatrix=np.ones(x.shape[1], np.float32))
    try:
        d = best_mbps(lambda: quants.dequantize(data, qt), x.nbytes, repeat, clock=clock)
    except (NotImplementedError, quants.QuantError, KeyError):
        pass
    return q, d


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if v < 100 or digits else f"{v:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def main(argv: list[str] | None = None) -> None:
    import numba

    from llmtk import kernels

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--types", help="comma-separated type names (default: every registered type)")
    p.add_argument("--rows", type=int, default=128)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-gguf", action="store_true", help="skip gguf-py")
    p.add_argument("--no-start", action="store_true", help="skip the warm-cache start measurement")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="one-thread columns by wall time or by the thread's CPU time (busy machines)")
    args = p.parse_args(argv)

    types = kernels.registered_types()
    if args.types:
        wanted = {t.upper() for t in args.types.split(",")}
        types = [t for t in types if t.name in wanted]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols)).astype(np.float32)
    imat = (rng.random(args.cols) + 0.1).astype(np.float32)
    n_cores = numba.config.NUMBA_NUM_THREADS

    cols = ["type", "q 1t", "q 1t/ggml", f"q {n_cores}t", "qi 1t", "qi 1t/ggml", f"qi {n_cores}t",
            "dq 1t", f"dq {n_cores}t", "dq/ggml", "gguf-py q", "gguf-py dq", "dq 1t/gguf-py"]
    print(f"# llmtk kernels, MB/s of f32 data ({args.rows} x {args.cols} Gaussian, best of >= {args.repeat} runs "
          f"and 1 s; one-thread clock: {args.clock}); 1t = one thread, {n_cores}t = all cores; q = quantize, "
          f"qi = with imatrix, dq = dequantize; /ggml = ratio to ggml's one-thread figure, /gguf-py to gguf-py's")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for t in types:
        if t.name == "F32":
            continue
        k = kernels.kernel_for(t)
        ggml = GGML_MBPS.get(t.name)
        row: dict[str, float | None] = {}
        for threads in (1, n_cores):
            numba.set_num_threads(threads)
            tag = "1t" if threads == 1 else "nt"
            clock = time.thread_time if threads == 1 and args.clock == "cpu" else time.perf_counter
            if k.quantize is not None:
                if not kernels.requires_imatrix(t):
                    row["q " + tag] = best_mbps(lambda: kernels.quantize(x, t), x.nbytes, args.repeat, clock=clock)
                row["qi " + tag] = best_mbps(lambda: kernels.quantize(x, t, imatrix=imat), x.nbytes, args.repeat,
                                             clock=clock)
                data = kernels.quantize(x, t, imatrix=imat)
                row["dq " + tag] = best_mbps(lambda: kernels.dequantize(data, t, x.shape), x.nbytes, args.repeat,
                                             clock=clock)
        numba.set_num_threads(n_cores)
        if kernels.requires_imatrix(t):
            row["q 1t"], row["q nt"] = row.get("qi 1t"), row.get("qi nt")
        gq, gdq = (None, None) if args.no_gguf else gguf_py_mbps(
            t.name, x, args.repeat, clock=time.thread_time if args.clock == "cpu" else time.perf_counter)
        cells = [t.name,
                 _fmt(row.get("q 1t")), _ratio(row.get("q 1t"), ggml and ggml[0]), _fmt(row.get("q nt")),
                 _fmt(row.get("qi 1t")), _ratio(row.get("qi 1t"), ggml and ggml[1]), _fmt(row.get("qi nt")),
                 _fmt(row.get("dq 1t")), _fmt(row.get("dq nt")), _ratio(row.get("dq 1t"), ggml and ggml[2]),
                 _fmt(gq), _fmt(gdq), _ratio(row.get("dq 1t"), gdq)]
        print("| " + " | ".join(cells) + " |", flush=True)
    if not args.no_start:
        wall, cpu = warm_start_seconds()
        print(f"\nwarm-cache start (fresh process: import, one call of every kernel of every type): "
              f"{wall:.2f} s wall, {cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
