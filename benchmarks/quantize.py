"""Whole-model quantization time: `llmtk quantize smollm2-f16.gguf OUT TYPE 2` beside llama-quantize.

llama-quantize's wall seconds come from ../shared/llamacpp/smollm2/quantize/<TYPE>[-imatrix].time
(2 threads, a quiet machine of this class). Each llmtk run is a fresh process (interpreter, numba
import and cached kernels included, as a user sees it), timed as wall and CPU seconds; best of
--repeat. On a busy machine the wall ratio is pessimistic: `cpu/2` is what the run would take on
two free cores if both were kept busy, so its ratio is the fairer comparison there.

Run: `python benchmarks/quantize.py [--types Q4_K_M,Q6_K] [--repeat 2] [--imatrix]`.
The F16 input is made once (from the packaged Q4_1, as llama.cpp made it) into the llmtk cache.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "llamacpp" / "smollm2"
K_MIXES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]
DEFAULT = K_MIXES + ["Q4_0", "Q8_0", "F16", "BF16", "IQ4_XS"]


def smollm2_f16() -> Path:
    from llmtk.quantize import quantize_model
    from llmtk.resources import cache_dir, smollm2_path

    out = cache_dir() / "smollm2-f16.gguf"
    if not out.is_file():
        quantize_model(smollm2_path(), out, "F16", allow_requantize=True)
    return out


def reference_seconds(stem: str) -> float | None:
    p = SHARED / "quantize" / f"{stem}.time"
    if not p.is_file():
        return None
    first = p.read_text().split()
    try:
        return float(first[0])
    except (ValueError, IndexError):
        return None


def run_once(src: Path, out: Path, qtype: str, imatrix: Path | None) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "llmtk.cli", "quantize"]
    if imatrix:
        cmd += ["--imatrix", str(imatrix)]
    cmd += [str(src), str(out), qtype, "2"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(DEFAULT))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--imatrix", action="store_true", help="use ../shared's imatrix (the -imatrix references)")
    args = ap.parse_args()
    src = smollm2_f16()
    imatrix = SHARED / "imatrix.gguf" if args.imatrix else None
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| type | llama-quantize s | llmtk wall s | llmtk cpu s | wall ratio | cpu/2 ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in args.types.split(","):
            stem = qtype + ("-imatrix" if imatrix else "")
            ref = reference_seconds(stem)
            runs = [run_once(src, Path(tmp) / "out.gguf", qtype, imatrix) for _ in range(args.repeat)]
            wall = min(r[0] for r in runs)
            cpu = min(r[1] for r in runs)
            ratio = f"{wall / ref:.2f}" if ref else "n/a"
            cratio = f"{cpu / 2 / ref:.2f}" if ref else "n/a"
            print(f"| {stem} | {ref if ref is not None else 'n/a'} | {wall:.2f} | {cpu:.2f} | {ratio} | {cratio} |",
                  flush=True)


if __name__ == "__main__":
    main()
