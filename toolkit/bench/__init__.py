"""Speed tables of llmtk beside llama.cpp's: kernels (MB/s), forward pass (tokens/s), whole-model
quantize (seconds) and the JIT warm-cache start.

Each `bench_*` function measures and returns a pandas DataFrame with one row per type (numbers as
floats, NaN where a figure does not exist) and a title in `df.attrs["title"]`. Ratios are taken
against a peer measured in the same run (gguf-py's NumPy quants) or against llama.cpp's figures
for this machine class (2 cores, AMD EPYC Zen 4), copied below from the section "Speed of the
references on this machine class" of ../shared/README.md and from llama-quantize's `.time` files.
Those were measured on a quiet machine; on a shared, busy one the ratios to them are pessimistic,
so every timing is the best of several runs (the run that was least disturbed).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from llmtk.errors import InputError

if TYPE_CHECKING:
    import pandas

Progress = Callable[[str], None]

# ggml's C kernels, 1 thread, MB/s of float32 data (quantize = ggml_quantize_chunk, dequantize =
# to_float; 128 x 4096 Gaussian, best of 3; types that require an imatrix get one in both quantize
# columns), and gguf-py 0.19's NumPy quants in the same run (None: gguf-py lacks the type).
# Source: ../shared/README.md, "Speed of the references on this machine class".
# Columns: quantize, quantize with imatrix, dequantize, gguf-py quantize, gguf-py dequantize.
GGML_MBPS: dict[str, tuple[float, float, float, float | None, float | None]] = {
    "F16": (2337, 2453, 3945, 1414, 1322),
    "BF16": (11675, 11819, 49110, 960, 2200),
    "Q4_0": (3909, 154, 8668, 692, 1677),
    "Q4_1": (4165, 37.0, 6795, 527, 1457),
    "Q5_0": (2218, 154, 4637, 652, 1074),
    "Q5_1": (2474, 37.2, 4571, 494, 1055),
    "Q8_0": (1210, 1244, 30813, 737, 2988),
    "Q2_K": (71.0, 31.0, 5293, None, 1347),
    "Q3_K": (346, 110, 3862, None, 1050),
    "Q4_K": (61.9, 35.6, 25042, None, 1200),
    "Q5_K": (74.4, 34.6, 18886, None, 955),
    "Q6_K": (144, 137, 3847, None, 998),
    "IQ4_NL": (22.8, 22.7, 3987, None, 626),
    "IQ4_XS": (22.2, 22.2, 3981, None, 499),
    "TQ1_0": (1364, 1372, 16045, 625, 1708),
    "TQ2_0": (1332, 1333, 15654, 980, 2204),
    "MXFP4": (877, 874, 3880, 42.8, 401),
    "NVFP4": (162, 162, 4032, None, 512),
    "Q1_0": (763, 760, 897, None, None),
    "Q2_0": (1214, 1217, 4767, None, None),
    "IQ3_S": (12.0, 12.1, 1177, None, 273),
    "IQ3_XXS": (8.3, 8.5, 1213, None, 257),
    "IQ2_S": (18.2, 18.0, 1165, None, 264),
    "IQ2_XS": (5.1, 5.1, 1141, None, 263),
    "IQ2_XXS": (10.8, 10.7, 1205, None, 270),
    "IQ1_M": (29.8, 27.4, 4656, None, 363),
    "IQ1_S": (26.1, 26.2, 7215, None, 474),
}

# llama-bench on SmolLM2-135M (`-p 512 -n 128 -r 3`), tokens/s: (type, threads) -> (pp512, tg128).
# Source: ../shared/README.md, "Speed of the references on this machine class".
LLAMA_BENCH_TPS: dict[tuple[str, int], tuple[float, float]] = {
    ("F16", 1): (309, 66), ("F16", 2): (652, 89),
    ("Q8_0", 1): (374, 106), ("Q8_0", 2): (684, 122),
    ("Q4_K_M", 1): (350, 100), ("Q4_K_M", 2): (629, 127),
}

DEFAULT_FORWARD_TYPES = ("F16", "Q8_0", "Q4_K_M")
DEFAULT_QUANTIZE_TYPES = ("F16", "Q8_0", "Q4_0", "Q6_K", "Q4_K_M", "Q3_K_M", "IQ4_XS", "Q4_K_M-imatrix")


# --- timing ----------------------------------------------------------------------------------

def best_seconds(fn: Callable[[], Any], repeat: int = 3, min_seconds: float = 1.0, warmup: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time of at least `repeat` calls, going on until `min_seconds` of wall time have passed
    (at most 100 calls): on a shared machine the fastest run is the one that ran undisturbed.
    `clock` may be `time.thread_time` for work done on the calling thread alone (one-thread
    kernels, NumPy): its CPU time, which other processes on a busy machine do not inflate."""
    if warmup:
        fn()  # compile, load numba's cache, fault pages in
    best = math.inf
    start = time.perf_counter()
    for i in range(100):
        if i >= repeat and time.perf_counter() - start > min_seconds:
            break
        t = clock()
        fn()
        best = min(best, clock() - t)
    return max(best, 1e-9)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def _mbps(fn: Callable[[], Any], n_bytes: int, repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    return n_bytes / best_seconds(fn, repeat, clock=clock) / 1e6


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)) or math.isnan(b):
        return math.nan
    return a / b


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def parse_threads(text: str | Iterable[int]) -> list[int]:
    """'1,2' -> [1, 2], checked against the threads numba can run."""
    import numba

    items = [int(t) for t in text.split(",") if t.strip()] if isinstance(text, str) else [int(t) for t in text]
    n_max = numba.config.NUMBA_NUM_THREADS
    for t in items:
        if not 1 <= t <= n_max:
            raise InputError(f"thread count {t} is outside 1..{n_max} (numba's NUMBA_NUM_THREADS)")
    if not items:
        raise InputError("no thread count given")
    return items


def _numba_threads(n: int | None) -> None:
    import numba

    numba.set_num_threads(n if n is not None else numba.config.NUMBA_NUM_THREADS)


# --- kernels ---------------------------------------------------------------------------------

def gguf_py_mbps(name: str, x: np.ndarray, repeat: int = 3, fallback: np.ndarray | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> tuple[float | None, float | None]:
    """gguf-py's NumPy quantize and dequantize of `x` in MB/s of f32, None where it lacks the type.

    Where gguf-py can dequantize but not quantize a type, `fallback` (llmtk's bytes for `x`) is
    the data it dequantizes."""
    import gguf
    from gguf import quants

    try:
        qt = gguf.GGMLQuantizationType[name]
    except KeyError:
        return None, None
    q = d = None
    data = fallback
    try:
        data = quants.quantize(x, qt)
        q = _mbps(lambda: quants.quantize(x, qt), x.nbytes, repeat, clock)
    except (NotImplementedError, quants.QuantError, KeyError):
        pass
    if data is not None:
        try:
            d = _mbps(lambda: quants.dequantize(data, qt), x.nbytes, repeat, clock)
        except (NotImplementedError, quants.QuantError, KeyError):
            pass
    return q, d


def kernel_columns(threads: Sequence[int]) -> list[str]:
    """Columns of `bench_kernels` for these thread counts."""
    cols = ["type"]
    for op in ("q", "qi", "dq"):
        for t in threads:
            cols.append(f"{op} {t}t")
            if t == 1:
                cols.append(f"{op} 1t/ggml")
    return cols + ["gguf-py q", "gguf-py dq", "q 1t/gguf-py", "dq 1t/gguf-py"]


def bench_kernels(types: Sequence[str] | None = None, *, rows: int = 128, cols: int = 4096,
                  threads: Sequence[int] = (1, 2), repeat: int = 3, gguf_py: bool = True,
                  clock: str = "wall", progress: Progress | None = None) -> "pandas.DataFrame":
    """MB/s of f32 data per ggml type for llmtk's quantize (`q`), quantize with an imatrix (`qi`)
    and dequantize (`dq`) on each thread count, gguf-py's NumPy code in the same run, and ratios to
    ggml's one-thread figures (`GGML_MBPS`) and to gguf-py.

    Input: a seeded (rows, cols) Gaussian, as ggml's figures were measured (128 x 4096). Types that
    require an imatrix report their imatrix speed in `q` too, as the ggml table does. `clock`
    "cpu" times one-thread runs and gguf-py by the calling thread's CPU time (busy machines);
    multi-thread runs are always timed by the wall clock.
    """
    import pandas as pd

    from llmtk import kernels
    from llmtk.ggufio.constants import parse_ggml_type, type_traits

    threads = parse_threads(threads)
    if clock not in CLOCKS:
        raise InputError(f"unknown clock {clock!r}; valid: {', '.join(CLOCKS)}")
    registered = [t for t in kernels.registered_types() if t.name != "F32"]
    if types:
        wanted = [parse_ggml_type(t) for t in types]
        missing = [t.name for t in wanted if t not in registered]
        if missing:
            raise InputError(f"no llmtk kernel for type(s) {', '.join(missing)}; "
                             f"registered: {', '.join(t.name for t in registered)}")
        registered = wanted
    block = max(type_traits(t).block_size for t in registered) if registered else 1
    if rows < 1 or cols < 1 or cols % block:
        raise InputError(f"--rows {rows} --cols {cols}: need rows >= 1 and cols a multiple of {block} "
                         f"(the largest block size among the chosen types)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    imat = (rng.random(cols) + 0.1).astype(np.float32)

    out = []
    try:
        for t in registered:
            if progress:
                progress(f"kernels {t.name}")
            k = kernels.kernel_for(t)
            ggml = GGML_MBPS.get(t.name, (None,) * 5)
            row: dict[str, Any] = {"type": t.name}
            for n in threads:
                _numba_threads(n)
                ck = CLOCKS[clock] if n == 1 else time.perf_counter
                if k.quantize is not None:
                    qi = _mbps(lambda: kernels.quantize(x, t, imatrix=imat), x.nbytes, repeat, ck)
                    q = qi if kernels.requires_imatrix(t) else _mbps(lambda: kernels.quantize(x, t), x.nbytes, repeat, ck)
                    row[f"q {n}t"], row[f"qi {n}t"] = q, qi
                    data = kernels.quantize(x, t, imatrix=imat)
                    row[f"dq {n}t"] = _mbps(lambda: kernels.dequantize(data, t, x.shape), x.nbytes, repeat, ck)
            _numba_threads(None)
            for op, ref in (("q", ggml[0]), ("qi", ggml[1]), ("dq", ggml[2])):
                row[f"{op} 1t/ggml"] = _ratio(row.get(f"{op} 1t"), ref)
            gq = gdq = None
            if gguf_py:
                fallback = kernels.quantize(x, t, imatrix=imat) if k.quantize is not None else None
                gq, gdq = gguf_py_mbps(t.name, x, repeat, fallback=fallback, clock=CLOCKS[clock])
            row["gguf-py q"], row["gguf-py dq"] = _nan(gq), _nan(gdq)
            row["q 1t/gguf-py"] = _ratio(row.get("q 1t"), gq)
            row["dq 1t/gguf-py"] = _ratio(row.get("dq 1t"), gdq)
            out.append(row)
    finally:
        _numba_threads(None)
    df = pd.DataFrame(out, columns=kernel_columns(threads)).astype({c: float for c in kernel_columns(threads)[1:]})
    df.attrs["title"] = (f"llmtk kernels, MB/s of f32 data ({rows} x {cols} Gaussian, best of >= {repeat} runs "
                         f"and 1 s; one-thread clock: {clock}); "
                         f"q = quantize, qi = with imatrix, dq = dequantize; Nt = N threads; "
                         f"/ggml = ratio to ggml's 1-thread figure (quiet machine), /gguf-py = same run")
    return df


_START_SNIPPET = """
import time
t0 = time.perf_counter()
import numpy as np
from llmtk import kernels
x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
imat = np.ones(256, np.float32)
for t in kernels.registered_types():
    k = kernels.kernel_for(t)
    if k.quantize is not None:
        q = kernels.quantize(x, t, imatrix=imat)
        kernels.quantize(x, t) if not kernels.requires_imatrix(t) else None
        kernels.dequantize(q, t, x.shape)
        if k.matvec is not None:
            kernels.matvec(q, t, x)
print(time.perf_counter() - t0, time.process_time())
"""


def warm_start_seconds() -> tuple[float, float]:
    """(wall, CPU) seconds for a fresh process to import every kernel module and run each kernel
    once, measured after a first run has filled numba's on-disk cache (`cache=True`)."""
    subprocess.run([sys.executable, "-c", _START_SNIPPET], check=True, capture_output=True)
    res = subprocess.run([sys.executable, "-c", _START_SNIPPET], check=True, capture_output=True, text=True)
    wall, cpu = res.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def _children_cpu() -> float:
    r = os.times()
    return r.children_user + r.children_system


def bench_start(repeat: int = 3, progress: Progress | None = None) -> "pandas.DataFrame":
    """Start-up costs in fresh processes (best of `repeat`, wall and CPU seconds): the warm-cache
    JIT start of every kernel (timed inside the process) and `llmtk --help` (the whole process,
    which must import nothing heavy)."""
    import pandas as pd

    if progress:
        progress("start: kernels")
    kern = [warm_start_seconds() for _ in range(repeat)]
    if progress:
        progress("start: llmtk --help")
    helps = []
    for _ in range(repeat):
        t, c = time.perf_counter(), _children_cpu()
        subprocess.run([sys.executable, "-m", "llmtk.cli", "--help"], check=True, capture_output=True)
        helps.append((time.perf_counter() - t, _children_cpu() - c))
    df = pd.DataFrame([
        {"what": "kernels: import + one call of every kernel (numba cache warm)",
         "wall s": min(w for w, _ in kern), "cpu s": min(c for _, c in kern)},
        {"what": "llmtk --help (whole process)", "wall s": min(w for w, _ in helps), "cpu s": min(c for _, c in helps)},
    ])
    df.attrs["title"] = f"llmtk start-up, fresh processes, best of {repeat}"
    return df


# --- forward pass ----------------------------------------------------------------------------

def _ftype_names() -> dict[int, str]:
    """general.file_type -> llama-quantize's name; aliases (Q4_K, COPY) give way to Q4_K_M, F32."""
    from llmtk.quantize.rules import FILE_TYPES

    return {int(f.ftype): n for n, f in FILE_TYPES.items() if n != "COPY"}


def canonical_type(name: str) -> str:
    """llama-quantize's main spelling of a type name (`q4_k` -> `Q4_K_M`), as the references use."""
    from llmtk.quantize.rules import file_type

    ft = file_type(name)
    return _ftype_names().get(int(ft.ftype), ft.name) if ft.name != "COPY" else ft.name


def _file_type_name(path: Path) -> str:
    from llmtk.ggufio import GGUFReader

    with GGUFReader(path) as r:
        ft = r.kv.get("general.file_type")
    return _ftype_names().get(int(ft), f"ftype {ft}") if ft is not None else "?"


def is_smollm2_135m(path: str | os.PathLike) -> bool:
    """Whether a GGUF file is SmolLM2-135M (any type), the model llama.cpp's figures are for."""
    from llmtk.ggufio import GGUFReader

    with GGUFReader(path) as r:
        kv = r.kv
        return (str(kv.get("general.basename", "")).lower() == "smollm2" and kv.get("general.size_label") == "135M"
                and kv.get("llama.embedding_length") == 576 and kv.get("llama.block_count") == 30)


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
    a warm-up pass (`warmup s`, which dequantizes the weights to float32 on its first run).
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
                    _numba_threads(n)
                    m.threads = n
                    gflops = sgemm_gflops(n)
                    t0 = time.perf_counter()
                    m.forward(tokens[:n_prompt], m.new_cache(n_prompt), all_logits=False)  # warm-up
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
                                 "llama pp t/s": _nan(ref[0]), "llama tg t/s": _nan(ref[1]),
                                 "pp/llama": _ratio(pp_tps, ref[0]) if n_prompt == 512 else math.nan,
                                 "tg/llama": _ratio(tg_tps, ref[1]) if n_gen == 128 else math.nan})
        _numba_threads(None)
    df = pd.DataFrame(rows)
    df.attrs["title"] = (f"llmtk forward on {model.name}, tokens/s (best of {repeat}; one-thread clock: {clock}): "
                         f"pp{n_prompt} = one "
                         f"{n_prompt}-token batch, tg{n_gen} = {n_gen} single-token steps with the KV cache; "
                         f"/llama = ratio to llama-bench on SmolLM2-135M (quiet machine)")
    return df


# --- whole-model quantize --------------------------------------------------------------------

def shared_dir() -> Path | None:
    """The reference data folder: `$LLMTK_SHARED`, else `shared/` beside the project checkout."""
    env = os.environ.get("LLMTK_SHARED")
    d = Path(env) if env else Path(__file__).resolve().parents[3] / "shared"
    return d if (d / "README.md").is_file() else None


def llama_quantize_seconds(name: str, reference_dir: str | os.PathLike | None = None) -> float | None:
    """llama-quantize's wall seconds for `<name>.time` (`TYPE` or `TYPE-imatrix`) on SmolLM2's F16."""
    if reference_dir is None:
        sd = shared_dir()
        if sd is None:
            return None
        reference_dir = sd / "llamacpp" / "smollm2" / "quantize"
    f = Path(reference_dir) / f"{name}.time"
    if not f.is_file():
        return None
    return float(f.read_text().split()[0])


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


def _quantize_process(model: Path, out: Path, name: str, imatrix: Any, threads: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "llmtk.cli", "quantize", "--allow-requantize"]
    cmd += ["--imatrix", str(imatrix)] if imatrix else []
    cmd += [str(model), str(out), name, str(threads)]
    t0, c0 = time.perf_counter(), _children_cpu()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if res.returncode != 0:
        raise InputError(f"llmtk quantize {name} failed: {res.stderr.strip().splitlines()[-1:]}")
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
    `process` (the default) each run is a fresh `llmtk quantize` process, start-up included as
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
    if imatrix is None and any(s[2] for s in specs):
        sd = shared_dir()
        imatrix = sd / "llamacpp" / "smollm2" / "imatrix.gguf" if sd is not None else None
        if imatrix is None or not Path(imatrix).is_file():
            raise InputError("TYPE-imatrix needs an imatrix file (no shared SmolLM2 imatrix.gguf found)")
    if progress and model is None:
        progress("make SmolLM2 F16")
    model = Path(model) if model is not None else smollm2_f16(workdir)
    if not model.is_file():
        raise InputError(f"model file {str(model)!r} does not exist")
    smollm2 = is_smollm2_135m(model)
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
                         "wall s": wall, "cpu s": cpu, "llama s": _nan(ref), "wall/llama": _ratio(wall, ref),
                         f"cpu/{threads}t/llama": _ratio(cpu / threads, ref)})
            out.unlink(missing_ok=True)
    _numba_threads(None)
    df = pd.DataFrame(rows)
    how = "fresh `llmtk quantize` processes" if process else "quantize_model in one process, after a warm-up"
    df.attrs["title"] = (f"whole-model quantize of {model.name} ({how}), seconds, best of {repeat}; llama s = "
                         f"llama-quantize on SmolLM2 F16, 2 threads, quiet machine; /llama < 1 is faster")
    return df


# --- rendering -------------------------------------------------------------------------------

def is_ratio_column(column: str) -> bool:
    """Ratio columns are named `a/b` (`q 1t/ggml`, `pp/llama`); `t/s`, `GFLOP/s` are units."""
    return "/" in column and not column.endswith("/s")


def format_cell(value: Any, column: str = "") -> str:
    """A number as the tables show it: ratios with 2 decimals, others to about 3 significant
    digits, NaN as n/a."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if is_ratio_column(column):
            return f"{v:.2f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(value)


def to_markdown(df: "pandas.DataFrame") -> str:
    cols = list(df.columns)
    lines = []
    if df.attrs.get("title"):
        lines += [df.attrs["title"], ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(format_cell(v, c) for v, c in zip(rec, cols)) + " |")
    return "\n".join(lines)


def render(df: "pandas.DataFrame", fmt: str) -> str:
    """`markdown`, `csv` or `json` text of a bench table (csv/json keep full precision, NaN as empty/null)."""
    if fmt == "markdown":
        return to_markdown(df)
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        import json

        def plain(v: Any) -> Any:
            v = v.item() if isinstance(v, np.generic) else v
            return None if isinstance(v, float) and math.isnan(v) else v

        return json.dumps([{k: plain(v) for k, v in r.items()} for r in df.to_dict(orient="records")], indent=2)
    raise InputError(f"unknown format {fmt!r}; valid: markdown, csv, json")
