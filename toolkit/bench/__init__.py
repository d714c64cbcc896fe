"""Speed tables of llmtk beside llama.cpp's: kernels (MB/s), forward pass (tokens/s), whole-model
quantize (seconds) and start-up, one module each.

Each `bench_*` function measures and returns a pandas DataFrame with one row per type (numbers as
floats, NaN where a figure does not exist) and a title in `df.attrs["title"]`. Ratios are taken
against a peer measured in the same run (gguf-py's NumPy quants) or against llama.cpp's figures
for this machine class (`reference`). `timing` says how things are timed, `report` turns a table
into markdown/CSV/JSON; the terminal table is the CLI's.
"""
from __future__ import annotations

from llmtk.bench.forward import DEFAULT_FORWARD_TYPES, bench_forward, canonical_type, is_smollm2_135m
from llmtk.bench.kernels import bench_kernels, gguf_py_mbps, kernel_columns
from llmtk.bench.quantize import DEFAULT_QUANTIZE_TYPES, bench_quantize, smollm2_f16
from llmtk.bench.reference import GGML_MBPS, LLAMA_BENCH_TPS, llama_quantize_seconds
from llmtk.bench.report import format_cell, is_ratio_column, render, to_markdown
from llmtk.bench.start import bench_start, warm_start_seconds
from llmtk.bench.timing import best_seconds, parse_threads

__all__ = ["DEFAULT_FORWARD_TYPES", "DEFAULT_QUANTIZE_TYPES", "GGML_MBPS", "LLAMA_BENCH_TPS", "bench_forward",
           "bench_kernels", "bench_quantize", "bench_start", "best_seconds", "canonical_type", "format_cell",
           "gguf_py_mbps", "is_ratio_column", "is_smollm2_135m", "kernel_columns", "llama_quantize_seconds",
           "parse_threads", "render", "smollm2_f16", "to_markdown", "warm_start_seconds"]
