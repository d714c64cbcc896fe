"""Forward-pass speed: tokens/s for prompt processing (one 512-token batch) and generation (one
token at a time through the KV cache) on SmolLM2-135M, like `llama-bench -p 512 -n 128`.

Run: `python benchmarks/forward.py [--types F16,Q8_0,Q4_K_M] [--threads 1,2] [--pp 512] [--tg 128]`.
The F16/Q8_0/Q4_K_M files are made once from the embedded Q4_1 with `llmtk.quantize` (as the
references were made with llama-quantize) into llmtk's cache folder. Beside each figure: the ratio
to llama-bench's on this machine class (../shared/README.md, measured on a quiet machine) and
NumPy's sgemm GFLOP/s measured in the same run, since machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

# llama-bench -p 512 -n 128 -r 3 on SmolLM2-135M, tokens/s: (threads, type) -> (pp512, tg128)
LLAMA_BENCH: dict[tuple[int, str], tuple[float, float]] = {
    (1, "F16"): (309, 66), (2, "F16"): (652, 89),
    (1, "Q8_0"): (374, 106), (2, "Q8_0"): (684, 122),
    (1, "Q4_K_M"): (350, 100), (2, "Q4_K_M"): (629, 127),
}


def model_file(qtype: str) -> Path:
    """SmolLM2 in `qtype`, requantized from the embedded Q4_1 once and kept in the cache."""
    from llmtk.resources import cache_dir, smollm2_path

    src = smollm2_path()
    if qtype == "Q4_1":
        return src
    out = cache_dir() / f"smollm2-{qtype}.gguf"
    if not out.is_file():
        from llmtk.quantize import quantize_model
        quantize_model(src, out, qtype, allow_requantize=True)
    return out


def sgemm_gflops(threads: int) -> float:
    """NumPy sgemm GFLOP/s for a SmolLM2 FFN shape (512 x 576 @ 576 x 1536), best of 5."""
    from llmtk.model import _blas

    a = np.random.default_rng(0).random((512, 576), dtype=np.float32)
    b = np.random.default_rng(1).random((1536, 576), dtype=np.float32)
    best = float("inf")
    with _blas.threads(threads):
        a @ b.T
        for _ in range(5):
            t = time.perf_counter()
            a @ b.T
            best = min(best, time.perf_counter() - t)
    return 2 * 512 * 576 * 1536 / best / 1e9


def bench(path: Path, threads: int, n_pp: int, n_tg: int, reps: int) -> tuple[float, float, float]:
    """(load + first-batch seconds, pp tokens/s best of reps, tg tokens/s)."""
    from llmtk.model import load_model

    rng = np.random.default_rng(0)
    with load_model(path, threads=threads) as m:
        toks = rng.integers(0, m.n_vocab, n_pp).astype(np.int32)
        t = time.perf_counter()
        m.forward(toks)  # dequantizes the weights into the float32 cache
        warm = time.perf_counter() - t
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            m.forward(toks)
            best = min(best, time.perf_counter() - t)
        gen = rng.integers(0, m.n_vocab, n_tg).astype(np.int32)
        cache = m.new_cache(n_tg)
        m.forward(gen[:1], cache)
        cache.clear()
        t = time.perf_counter()
        for i in range(n_tg):
            m.forward(gen[i:i + 1], cache)
        tg = n_tg / (time.perf_counter() - t)
    return warm, n_pp / best, tg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="F16,Q8_0,Q4_K_M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    print(f"| type | threads | sgemm GFLOP/s | load+first s | pp{args.pp} t/s | x llama.cpp | "
          f"tg{args.tg} t/s | x llama.cpp |")
    print("|---|---|---|---|---|---|---|---|")
    for qtype in args.types.split(","):
        path = model_file(qtype)
        for threads in (int(x) for x in args.threads.split(",")):
            gf = sgemm_gflops(threads)
            warm, pp, tg = bench(path, threads, args.pp, args.tg, args.reps)
            ref = LLAMA_BENCH.get((threads, qtype))
            rpp = f"{pp / ref[0]:.2f}" if ref and args.pp == 512 else "n/a"
            rtg = f"{tg / ref[1]:.2f}" if ref else "n/a"
            print(f"| {qtype} | {threads} | {gf:.0f} | {warm:.1f} | {pp:.0f} | {rpp} | {tg:.1f} | {rtg} |", flush=True)


if __name__ == "__main__":
    main()
