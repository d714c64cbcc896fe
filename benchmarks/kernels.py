"""Kernel throughput: MB/s of float32 data per type for quantize (plain and imatrix) and
dequantize, on one thread and on all cores, beside gguf-py's NumPy quants measured in the same run
and ggml's own figures for this machine class.

Run: `python benchmarks/kernels.py [--types Q4_0,Q8_0] [--rows 128] [--cols 4096] [--repeat 3]`
(the same table as `llmtk bench kernels --format markdown`; the logic lives in `llmtk.bench`).
Machines are shared and noisy: read the ratios, which are measured in one run (the ggml figures
come from a quiet machine, so ratios to them are pessimistic on a busy one).
"""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    import numba

    from llmtk.bench import bench_kernels, to_markdown, warm_start_seconds

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

    types = [t.strip() for t in args.types.split(",")] if args.types else None
    n_cores = numba.config.NUMBA_NUM_THREADS
    df = bench_kernels(types, rows=args.rows, cols=args.cols, threads=sorted({1, n_cores}), repeat=args.repeat,
                       gguf_py=not args.no_gguf, clock=args.clock)
    print("# " + to_markdown(df))
    if not args.no_start:
        wall, cpu = warm_start_seconds()
        print(f"\nwarm-cache start (fresh process: import, one call of every kernel of every type): "
              f"{wall:.2f} s wall, {cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
