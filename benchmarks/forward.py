"""Forward-pass speed: tokens/s for prompt processing (one 512-token batch) and generation (one
token at a time through the KV cache) on SmolLM2-135M, like `llama-bench -p 512 -n 128`.

Run: `python benchmarks/forward.py [--types F16,Q8_0,Q4_K_M] [--threads 1,2] [--pp 512] [--tg 128]`
(the same table as `llmtk bench forward --format markdown`; the logic lives in `llmtk.bench`).
The F16/Q8_0/Q4_K_M files are made once from the embedded Q4_1 with `llmtk.quantize` (as the
references were made with llama-quantize) into llmtk's cache folder. Beside each figure: the ratio
to llama-bench's on this machine class (../shared/README.md, measured on a quiet machine) and
NumPy's sgemm GFLOP/s measured in the same run, since machines are shared and noisy.
"""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    from llmtk.bench import bench_forward, parse_threads, to_markdown

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="F16,Q8_0,Q4_K_M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="one-thread rows by wall time or by the process's CPU time (busy machines)")
    args = ap.parse_args(argv)

    df = bench_forward(None, [t.strip() for t in args.types.split(",") if t.strip()],
                       threads=parse_threads(args.threads), n_prompt=args.pp, n_gen=args.tg, repeat=args.reps,
                       clock=args.clock)
    print(to_markdown(df))


if __name__ == "__main__":
    main()
