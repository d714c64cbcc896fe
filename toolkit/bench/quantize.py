"""`llmtk bench quantize`: whole-model quantize seconds, beside llama-quantize's."""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from llmtk.bench.forward import canonical_type, is_smollm2_135m
from llmtk.bench.reference import llama_quantize_seconds
from llmtk.bench.timing import Progress, children_cpu_seconds, nan_if_none, parse_threads, ratio, set_numba_threads
from llmtk.errors import InputError
from llmtk.resources import shared_dir

if TYPE_CHECKING:
    import pandas

DEFAULT_QUANTIZE_TYPES = ("F16", "Q8_0", "Q4_0", "Q6_K", "Q4_K_M", "Q3_K_M", "IQ4_XS", "Q4_K_M-imatrix")


def smollm2_f16(workdir: str | os.PathLike | None = None) -> Path:
    """An F16 of the embedded SmolLM2 (from its Q4_1, as llama.cpp's references were made from an
    F16), made once into `workdir` (default: llmtk's cache folder) and kept."""
    from llmtk.quantize import quantize_model
    from llmtk.resources import cache_dir, smollm2_path

    out = Path(workdir if workdir is not None else cache_dir()) / "smollm2-f16.gguf"
    if not out.is_file():
        quantize_model(smollm2_path(), out, "F16", allow_requantize=True)
    return out


def _quantize_in_process(model: Path, out: Path, name: str, imatrix: Any, threads: int) -> tuple[float, float]:
    from llmtk.quantize import quantize_model

    t0, c0 = time.perf_counter(), time.process_time()
    quantize_model(model, out, name, imatrix=imatrix, nthreads=threads, allow_requantize=True)
    return time.perf_counter() - t0, time.process_time() - c0


def _quantize_child(model: str, out: str, name: str, imatrix: Any, threads: int, errors: Any) -> None:
    from llmtk.errors import LlmtkError
    from llmtk.quantize import quantize_model

    try:
        quantize_model(model, out, name, imatrix=imatrix, nthreads=threads, allow_requantize=True)
    except LlmtkError as e:
        errors.send(str(e))
        raise SystemExit(2) from None


def _quantize_process(model: Path, out: Path, name: str, imatrix: Any, threads: int) -> tuple[float, float]:
    """`quantize_model` in a fresh (spawned) interpreter, its start-up and imports included as
    llama-quantize's figure includes its own; (wall, CPU) seconds of that process."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    t0, c0 = time.perf_counter(), children_cpu_seconds()
    proc = ctx.Process(target=_quantize_child, args=(str(model), str(out), name,
                                                     str(imatrix) if imatrix else None, threads, send))
    proc.start()
    proc.join()
    wall, cpu = time.perf_counter() - t0, children_cpu_seconds() - c0
    if proc.exitcode != 0:
        why = receive.recv() if receive.poll() else f"exit code {proc.exitcode}"
        raise InputError(f"quantize {name} in a fresh process failed: {why}")
    return wall, cpu


def bench_quantize(types: Sequence[str] = DEFAULT_QUANTIZE_TYPES, *, model: str | os.PathLike | None = None,
                   threads: int = 2, imatrix: str | os.PathLike | None = None, repeat: int = 1,
                   process: bool = True, reference_dir: str | os.PathLike | None = None,
                   workdir: str | os.PathLike | None = None,
                   progress: Progress | None = None) -> "pandas.DataFrame":
    """Whole-model quantize time of llmtk against llama-quantize's (`<TYPE>.time`: wall seconds
    of `llama-quantize smollm2-f16.gguf OUT TYPE 2` on a quiet machine).

    `model` (an F16 GGUF) defaults to `smollm2_f16()`. A type written `TYPE-imatrix` is quantized
    with `imatrix` (default: llama-imatrix's `imatrix.gguf` for SmolLM2 in the shared data). With
    `process` (the default) each run is `quantize_model` in a fresh process, start-up included as
    llama-quantize's figure includes it; without, `quantize_model` is timed in this process after
    an untimed warm-up. Wall and CPU seconds, best of `repeat`. On a busy machine the wall ratio is
    pessimistic; `cpu/Nt/llama` (CPU seconds over the thread count) is what the run would take
    with its N cores to itself. llama-quantize's figures are shown only for SmolLM2-135M inputs.
    """
    import pandas as pd

    parse_threads([threads])
    specs = []
    for t in types:
        base, _, suffix = t.partition("-")
        if suffix and suffix.lower() != "imatrix":
            raise InputError(f"type {t!r}: write TYPE or TYPE-imatrix")
        name = canonical_type(base)
        specs.append((f"{name}{'-imatrix' if suffix else ''}", name, bool(suffix)))
    if model is not None and not Path(model).is_file():
        raise InputError(f"model file {str(model)!r} does not exist")
    smollm2 = model is None or is_smollm2_135m(model)
    if imatrix is None and any(s[2] for s in specs):
        if not smollm2:  # the reference imatrix fits SmolLM2 alone
            raise InputError(f"TYPE-imatrix on {model} needs --imatrix (the shared reference imatrix is "
                             f"SmolLM2's)")
        sd = shared_dir()
        imatrix = sd / "llamacpp" / "smollm2" / "imatrix.gguf" if sd is not None else None
        if imatrix is None or not Path(imatrix).is_file():
            raise InputError("TYPE-imatrix needs an imatrix file (no shared SmolLM2 imatrix.gguf found)")
    if progress and model is None:
        progress("make SmolLM2 F16")
    model = Path(model) if model is not None else smollm2_f16(workdir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmtk-bench-") as tmp:
        out = Path(tmp) / "out.gguf"
        for label, name, use_imat in specs:
            if progress:
                progress(f"quantize {label}")
            im = imatrix if use_imat else None
            run = _quantize_process if process else _quantize_in_process
            if not process:
                run(model, out, name, im, threads)  # warm-up: numba caches, page cache
            runs = [run(model, out, name, im, threads) for _ in range(repeat)]
            ref = llama_quantize_seconds(label, reference_dir) if smollm2 else None
            wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
            rows.append({"type": label, "threads": threads, "size MB": out.stat().st_size / 1e6,
                         "wall s": wall, "cpu s": cpu, "llama s": nan_if_none(ref), "wall/llama": ratio(wall, ref),
                         f"cpu/{threads}t/llama": ratio(cpu / threads, ref)})
            out.unlink(missing_ok=True)
    set_numba_threads(None)
    df = pd.DataFrame(rows)
    how = "fresh processes" if process else "quantize_model in one process, after a warm-up"
    df.attrs["title"] = (f"whole-model quantize of {model.name} ({how}), seconds, best of {repeat}; llama s = "
                         f"llama-quantize on SmolLM2 F16, 2 threads, quiet machine; /llama < 1 is faster")
    return df
