"""Peak memory of `llmtk convert` on a >= 1 GB checkpoint (run: python benchmarks/convert_peak_memory.py).

Builds a random-init Llama with transformers (bf16 safetensors, SmolLM2's tokenizer from
../shared), converts it in a child process and reports the child's peak RSS (VmHWM, which also
counts pages of the memory-mapped checkpoint while they are mapped in), its peak anonymous and
file-backed memory (sampled from /proc every 2 ms), beside the size of the largest single tensor. Everything is written under a temporary
folder in /tmp and deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"

CHILD = r"""
import sys, threading, time
peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
stop = False
def status():
    with open("/proc/self/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) for l in f if l.split(":")[0] in peak}
def sample():
    while not stop:
        for k, v in status().items():
            peak[k] = max(peak[k], v)
        time.sleep(0.002)
import llmtk.converters  # imports counted in the baseline
base = status()
t = threading.Thread(target=sample, daemon=True); t.start()
t0 = time.perf_counter()
from llmtk.converters import convert
convert(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
dt = time.perf_counter() - t0
stop = True; t.join()
# VmHWM (this process image's peak RSS): ru_maxrss would carry the parent's peak across fork+exec
with open("/proc/self/status") as f:
    hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
print(base["VmRSS"], base["RssAnon"], hwm, peak["RssAnon"], peak["RssFile"], dt)
"""


def build(dest: Path, layers: int, hidden: int, ff: int) -> tuple[int, int]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 256,
                      max_position_embeddings=4096, tie_word_embeddings=False, torch_dtype="bfloat16")
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True, max_shard_size="600MB")
    tok = SHARED / "convert" / "_tokenizer" / "tokenizer.json"
    shutil.copy(tok, dest / "tokenizer.json")
    shutil.copy(SHARED / "convert" / "llama" / "tiny-llama" / "tokenizer_config.json", dest / "tokenizer_config.json")
    n_bytes = sum(p.numel() * 2 for p in model.parameters())
    largest = max(p.numel() * 2 for p in model.parameters())
    del model
    return n_bytes, largest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=5632)
    ap.add_argument("--outtype", default="f16")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmtk-convert-bench-", dir="/tmp"))
    try:
        src = tmp / "bench-llama"
        n_bytes, largest = build(src, args.layers, args.hidden, args.ff)
        out = tmp / "out.gguf"
        res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), args.outtype],
                             capture_output=True, text=True, check=True)
        base_rss, base_anon, peak_rss, peak_anon, peak_file, dt = (float(x) for x in res.stdout.split())
        mib = 1 / 1024  # kB -> MiB
        report = {
            "weights_MiB": round(n_bytes / 2**20, 1),
            "largest_tensor_bf16_MiB": round(largest / 2**20, 1),
            "outtype": args.outtype,
            "output_MiB": round(out.stat().st_size / 2**20, 1),
            "baseline_rss_MiB": round(base_rss * mib, 1),
            "peak_rss_MiB": round(peak_rss * mib, 1),
            "peak_anon_MiB": round(peak_anon * mib, 1),
            "peak_file_backed_MiB": round(peak_file * mib, 1),
            "peak_anon_over_baseline_MiB": round((peak_anon - base_anon) * mib, 1),
            "peak_anon_over_baseline_per_largest_tensor": round((peak_anon - base_anon) * 1024 / largest, 2),
            "peak_rss_over_baseline_per_weights": round((peak_rss - base_rss) * 1024 / n_bytes, 3),
            "seconds": round(dt, 1),
        }
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
