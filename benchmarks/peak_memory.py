"""Peak memory of a batch forward pass on a 1B-class model shape (TinyLlama-1.1B's widths) with a
few layers: it must grow with one layer, not with the model.

Run: `python benchmarks/peak_memory.py [--layers 1,2,4] [--tokens 512] [--type F16] [--threads 2]
[--budget]`. Each model (random weights, written to a temporary folder, ~90 MB a layer in F16)
is measured in a fresh process; `--budget` also runs with a 2 GiB `weight_budget` (float32 copies
kept, the old default) for contrast. Columns: the file's size, its weights as float32, NumPy's
peak during the batch (`traced peak`, the mapped file excluded), the weights the model keeps
between calls (`kept`), and the process's peak RSS (imports and the mapped file's pages included).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = ("import json, sys; from llmtk.bench.memory import forward_memory; "
         "print(json.dumps(forward_memory(sys.argv[1], int(sys.argv[2]), threads=int(sys.argv[3]), "
         "weight_budget=None if sys.argv[4] == 'default' else int(sys.argv[4]))))")


def main(argv: list[str] | None = None) -> None:
    from llmtk.bench.memory import (
        TINYLLAMA_SHAPE,
        weights_f32_bytes,
        write_synthetic_llama,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="1,2,4")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--type", default="F16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", action="store_true", help="also measure with a 2 GiB weight_budget")
    ap.add_argument("--dir", help="folder for the model files (default: a temporary one)")
    args = ap.parse_args(argv)
    budgets = ["default"] + ([str(2 << 30)] if args.budget else [])
    print(f"load average {os.getloadavg()[0]:.1f}; shape {TINYLLAMA_SHAPE}, {args.type}, "
          f"{args.tokens}-token batch, {args.threads} threads")
    print("| layers | budget | file MB | weights f32 MB | traced peak MB | kept MB | peak RSS MB | batch s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="llmtk-mem-", dir=args.dir) as tmp:
        for n in (int(x) for x in args.layers.split(",")):
            path = Path(tmp) / f"synthetic-{n}.gguf"
            write_synthetic_llama(path, n, qtype=args.type, **TINYLLAMA_SHAPE)
            for budget in budgets:
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.tokens), str(args.threads),
                                      budget], check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {n} | {'0 (stream)' if budget == 'default' else '2 GiB'} | "
                      f"{path.stat().st_size / 1e6:.0f} | {weights_f32_bytes(path) / 1e6:.0f} | "
                      f"{r['traced peak MB']:.0f} | {r['kept MB']:.0f} | {r['peak RSS MB']:.0f} | "
                      f"{r['seconds']:.2f} |", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
