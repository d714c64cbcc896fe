"""Whole-model quantization time: `llmtk quantize smollm2-f16.gguf OUT TYPE 2` beside llama-quantize.

llama-quantize's wall seconds come from ../shared/llamacpp/smollm2/quantize/<TYPE>[-imatrix].time
(2 threads, a quiet machine of this class). Each llmtk run is a fresh process (interpreter, numba
import and cached kernels included, as a user sees it), timed as wall and CPU seconds; best of
--repeat. On a busy machine the wall ratio is pessimistic: `cpu/2t` is what the run would take on
two free cores if both were kept busy, so its ratio is the fairer comparison there.

Run: `python benchmarks/quantize.py [--types Q4_K_M,Q6_K] [--repeat 2] [--imatrix]`
(the same table as `llmtk bench quantize --format markdown`; the logic lives in `llmtk.bench`).
The F16 input is made once (from the packaged Q4_1, as llama.cpp made it) into the llmtk cache.
"""
from __future__ import annotations

import argparse
import os

K_MIXES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]
DEFAULT = K_MIXES + ["Q4_0", "Q8_0", "F16", "BF16", "IQ4_XS"]


def main(argv: list[str] | None = None) -> None:
    from llmtk.bench import bench_quantize, to_markdown

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(DEFAULT))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--imatrix", action="store_true", help="use ../shared's imatrix (the -imatrix references)")
    args = ap.parse_args(argv)
    types = [t.strip() + ("-imatrix" if args.imatrix else "") for t in args.types.split(",") if t.strip()]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(to_markdown(bench_quantize(types, threads=2, repeat=args.repeat)))


if __name__ == "__main__":
    main()
