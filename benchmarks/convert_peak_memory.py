"""Peak memory and time of `llmtk convert` on a >= 1 GB checkpoint, beside llama.cpp's converter.

Run: python benchmarks/convert_peak_memory.py [--outtype f16] [--no-reference]

Builds a random-init Llama with transformers (bf16 safetensors, SmolLM2's tokenizer from
../shared), converts it in a child process and reports the child's peak RSS (VmHWM, which also
counts pages of the memory-mapped checkpoint while they are mapped in), its peak anonymous and
file-backed memory (sampled from /proc every 2 ms), beside the size of the largest single tensor.
With the llama.cpp sources in /work/ref it also runs llama.cpp's `convert_hf_to_gguf.py` (torch,
lazy mode) the same way, reports the ratios and whether both outputs are byte-identical. (That
script imports `sentencepiece` even for BPE-only models; a stub module is put on its path.) Everything is written under a temporary
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
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = Path("/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py")

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
if sys.argv[4] == "llmtk":
    import llmtk.converters  # imports counted in the baseline
else:
    import runpy, torch, transformers, numpy  # the reference's heavy imports, in its baseline
base = status()
t = threading.Thread(target=sample, daemon=True); t.start()
t0 = time.perf_counter()
if sys.argv[4] == "llmtk":
    from llmtk.converters import convert
    convert(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
else:
    sys.argv = [sys.argv[4], sys.argv[1], "--outfile", sys.argv[2], "--outtype", sys.argv[3]]
    sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])
    runpy.run_path(sys.argv[0], run_name="__main__")
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


def measure(tool: str, src: Path, out: Path, outtype: str, env: dict | None = None) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), outtype, tool],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{res.stderr[-2000:]}")
    base_rss, base_anon, peak_rss, peak_anon, peak_file, dt = (float(x) for x in res.stdout.split()[-6:])
    mib = 1 / 1024  # kB -> MiB
    return {"baseline_rss_MiB": round(base_rss * mib, 1), "peak_rss_MiB": round(peak_rss * mib, 1),
            "peak_anon_MiB": round(peak_anon * mib, 1), "peak_file_backed_MiB": round(peak_file * mib, 1),
            "peak_anon_over_baseline_MiB": round((peak_anon - base_anon) * mib, 1), "seconds": round(dt, 1)}


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=5632)
    ap.add_argument("--outtype", default="f16")
    ap.add_argument("--no-reference", action="store_true", help="skip llama.cpp's converter")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmtk-convert-bench-", dir="/tmp"))
    try:
        src = tmp / "bench-llama"
        n_bytes, largest = build(src, args.layers, args.hidden, args.ff)
        out = tmp / "out.gguf"
        mine = measure("llmtk", src, out, args.outtype)
        report = {"weights_MiB": round(n_bytes / 2**20, 1), "largest_tensor_bf16_MiB": round(largest / 2**20, 1),
                  "outtype": args.outtype, "output_MiB": round(out.stat().st_size / 2**20, 1), "llmtk": mine,
                  "llmtk_peak_anon_over_baseline_per_largest_tensor":
                      round(mine["peak_anon_over_baseline_MiB"] * 2**20 / largest, 2)}
        if REFERENCE.is_file() and not args.no_reference:
            stub = tmp / "stub"
            stub.mkdir()
            (stub / "sentencepiece.py").write_text("class SentencePieceProcessor:\n    pass\n")
            env = {**os.environ, "PYTHONPATH": str(stub)}
            ref_out = tmp / "ref.gguf"
            ref = measure(str(REFERENCE), src, ref_out, args.outtype, env)
            report["llama.cpp"] = ref
            report["byte_identical"] = same_bytes(out, ref_out)
            report["ratios_llmtk_over_llama.cpp"] = {
                "seconds": round(mine["seconds"] / ref["seconds"], 2),
                "peak_rss": round(mine["peak_rss_MiB"] / ref["peak_rss_MiB"], 2),
                "peak_anon_over_baseline": round(mine["peak_anon_over_baseline_MiB"]
                                                 / max(ref["peak_anon_over_baseline_MiB"], 1e-9), 2)}
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
