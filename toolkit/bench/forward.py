"""`llmtk bench forward`: tokens/s of the forward pass (pp512, tg128), beside llama-bench."""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from llmtk.bench.reference import LLAMA_BENCH_TPS
from llmtk.bench.timing import CLOCKS, Progress, best_seconds, nan_if_none, parse_threads, ratio, set_numba_threads
from llmtk.errors import InputError
from llmtk.ggufio.constants import Key
from llmtk.quantize.rules import canonical_name as canonical_type
from llmtk.quantize.rules import file_type_names

if TYPE_CHECKING:
    import pandas

DEFAULT_FORWARD_TYPES = ("F16", "Q8_0", "Q4_K_M")


def _file_type_name(path: Path) -> str:
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        ft = r.kv.get(Key.FILE_TYPE)
    return file_type_names().get(int(ft), f"ftype {ft}") if ft is not None else "?"


def is_smollm2_135m(path: str | os.PathLike) -> bool:
    """Whether a GGUF file is SmolLM2-135M (any type), the model llama.cpp's figures are for."""
    from llmtk.ggufio.shards import open_gguf

    with open_gguf(path) as r:
        kv = r.kv
        return (str(kv.get(Key.BASENAME, "")).lower() == "smollm2" and kv.get(Key.SIZE_LABEL) == "135M"
                and kv.get(Key.EMBEDDING_LENGTH.format(arch="llama")) == 576
                and kv.get(Key.BLOCK_COUNT.format(arch="llama")) == 30)


def _variants(model: Path, types: Sequence[str], workdir: Path | None,
              progress: Progress | None) -> list[tuple[str, Path]]:
    """(label, path) per requested type, made from `model` with llama-quantize's mixes into
    `workdir`; the model's own type is the file itself."""
    from llmtk.quantize import quantize_model

    own = _file_type_name(model)
    if not types:
        return [(own, model)]
    out = []
    for t in types:
        name = canonical_type(t)
        if name == own:
            out.append((name, model))
            continue
        dst = workdir / f"{model.stem}-{name}.gguf"
        if not dst.exists():
            if progress:
                progress(f"quantize {model.name} -> {name}")
            quantize_model(model, dst, name, allow_requantize=True)
        out.append((name, dst))
    return out


def sgemm_gflops(threads: int, n: int = 512, k: int = 576, m: int = 1536, repeat: int = 5) -> float:
    """NumPy float32 sgemm GFLOP/s on `threads` BLAS threads for a SmolLM2 FFN shape ((n, k) @
    (k, m)), best of `repeat`: the machine's state during a forward run, measured beside it."""
    from llmtk.model import _blas

    a = np.random.default_rng(0).random((n, k), dtype=np.float32)
    b = np.random.default_rng(1).random((m, k), dtype=np.float32)
    with _blas.threads(threads):
        secs = best_seconds(lambda: a @ b.T, repeat, min_seconds=0)
    return 2 * n * k * m / secs / 1e9


def bench_forward(model: str | os.PathLike | None = None, types: Sequence[str] | None = None, *,
                  threads: Sequence[int] = (1, 2), n_prompt: int = 512, n_gen: int = 128, repeat: int = 3,
                  clock: str = "wall", workdir: str | os.PathLike | None = None,
                  progress: Progress | None = None) -> "pandas.DataFrame":
    """Tokens/s of `Model.forward` for prompt processing (`pp`: one batch of `n_prompt` tokens in
    a fresh cache) and generation (`tg`: `n_gen` single-token steps through the KV cache from
    empty), as llama-bench's pp512 and tg128, per type and thread count (numba and BLAS threads).

    `model` defaults to the embedded SmolLM2 (Q4_1) and `types` to F16, Q8_0, Q4_K_M; they are
    made from the model with `quantize_model(..., allow_requantize=True)` in `workdir` (default:
    llmtk's cache folder for SmolLM2, where they are kept, else a temporary folder); with a model
    given and no types, the file is benchmarked as it is. Ratios to llama-bench
    (`LLAMA_BENCH_TPS`) are given for SmolLM2-135M, and NumPy's sgemm GFLOP/s measured just before
    each row shows how busy the machine was. Random token ids, seeded; best of `repeat` runs after
    a warm-up pass of both (`warmup s`, which loads numba's cached kernels and unpacks the weights
    decoding reads as int8 blocks, as llama-bench warms up; the batch dequantizes the weights it
    streams on every run, as `perplexity` does).
    `clock` "cpu" times the one-thread rows by the process's CPU time (busy machines).
    Like llama-bench, only the last token's logits are computed (`all_logits=False`).
    """
    import pandas as pd

    from llmtk.model import load_model
    from llmtk.resources import cache_dir, smollm2_path

    threads = parse_threads(threads)
    if clock not in CLOCKS:
        raise InputError(f"unknown clock {clock!r}; valid: {', '.join(CLOCKS)}")
    if n_prompt < 1 or n_gen < 1 or repeat < 1:
        raise InputError(f"n_prompt {n_prompt}, n_gen {n_gen} and repeat {repeat} must all be >= 1")
    if model is None:
        model = smollm2_path()
        types = DEFAULT_FORWARD_TYPES if types is None else types
        if workdir is None:
            workdir = cache_dir()
    model = Path(model)
    if not model.is_file():
        raise InputError(f"model file {str(model)!r} does not exist")
    smollm2 = is_smollm2_135m(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmtk-bench-") as tmp:
        wd = Path(workdir) if workdir is not None else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        for label, path in _variants(model, list(types or ()), wd, progress):
            with load_model(path) as m:
                rng = np.random.default_rng(0)
                tokens = rng.integers(0, m.n_vocab, size=max(n_prompt, n_gen), dtype=np.int32)
                for n in threads:
                    if progress:
                        progress(f"forward {label}, {n} thread(s)")
                    set_numba_threads(n)
                    m.threads = n
                    gflops = sgemm_gflops(n)
                    t0 = time.perf_counter()
                    m.forward(tokens[:n_prompt], m.new_cache(n_prompt), all_logits=False)  # warm-up
                    cache = m.new_cache(2)  # and decoding's: unpacked weights, decode kernels
                    for i in range(2):
                        m.forward(tokens[i:i + 1], cache, all_logits=False)
                    warm = time.perf_counter() - t0

                    def pp() -> None:
                        m.forward(tokens[:n_prompt], m.new_cache(n_prompt), all_logits=False)

                    def tg() -> None:
                        cache = m.new_cache(n_gen)
                        for i in range(n_gen):
                            m.forward(tokens[i:i + 1], cache, all_logits=False)

                    ck = time.process_time if clock == "cpu" and n == 1 else time.perf_counter
                    pp_tps = n_prompt / best_seconds(pp, repeat, min_seconds=0, warmup=False, clock=ck)
                    tg_tps = n_gen / best_seconds(tg, repeat, min_seconds=0, warmup=False, clock=ck)
                    ref = LLAMA_BENCH_TPS.get((label, n), (None, None)) if smollm2 else (None, None)
                    rows.append({"type": label, "threads": n, "sgemm GFLOP/s": gflops, "warmup s": warm,
                                 f"pp{n_prompt} t/s": pp_tps, f"tg{n_gen} t/s": tg_tps,
                                 "llama pp t/s": nan_if_none(ref[0]), "llama tg t/s": nan_if_none(ref[1]),
                                 "pp/llama": ratio(pp_tps, ref[0]) if n_prompt == 512 else math.nan,
                                 "tg/llama": ratio(tg_tps, ref[1]) if n_gen == 128 else math.nan})
        set_numba_threads(None)
    df = pd.DataFrame(rows)
    df.attrs["title"] = (f"llmtk forward on {model.name}, tokens/s (best of {repeat}; one-thread clock: {clock}): "
                         f"pp{n_prompt} = one "
                         f"{n_prompt}-token batch, tg{n_gen} = {n_gen} single-token steps with the KV cache; "
                         f"/llama = ratio to llama-bench on SmolLM2-135M (quiet machine)")
    return df
