"""llama.cpp's and ggml's own speed figures on this machine class, which the benchmarks divide by.

Copied from the section "Speed of the references on this machine class" of the shared reference
README (`tests/toolkit/test_bench.py` holds the copy equal to it) and read from llama-quantize's
`.time` files there. They were measured on a quiet machine (2 cores, AMD EPYC Zen 4).
"""
from __future__ import annotations

import os
from pathlib import Path

from llmtk.resources import shared_dir

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
