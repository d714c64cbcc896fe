"""Whole-model quantization as llama-quantize does it.

`rules` holds the file types (`Q4_K_M`, ...) and llama.cpp's per-tensor mix rules, which make the
plan (one ggml type per tensor); `requantize` streams a GGUF through that plan into a new file,
quantizing each tensor with `llmtk.kernels`.
"""
from __future__ import annotations

import sys
import types

from llmtk.quantize.requantize import (
    KVOverride,
    QuantizeResult,
    TensorReport,
    default_output_path,
    load_imatrix_means,
    quantize_model,
)
from llmtk.quantize.rules import FileType, MixOptions, file_type, plan_types

__all__ = ["FileType", "KVOverride", "MixOptions", "QuantizeResult", "TensorReport", "default_output_path",
           "file_type", "load_imatrix_means", "plan_types", "quantize_model"]


class _CallableModule(types.ModuleType):
    """`llmtk.quantize(IN, OUT, TYPE, ...)`: the package doubles as the call (`llmtk.api.quantize`:
    `quantize_model` with requantizing allowed)."""

    def __call__(self, *args, **kwargs):
        kwargs.setdefault("allow_requantize", True)
        return quantize_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
