"""llmtk: a Python toolchain for GGUF language models (convert, quantize, imatrix, perplexity, gates).

Importing this package is cheap on purpose: heavy modules (numba kernels, torch, pandas,
matplotlib) are imported by the code that needs them, never here.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# one call per job, loaded on first use (see llmtk/api.py): llmtk.convert, llmtk.evaluate,
# llmtk.load_tensor; llmtk.quantize and llmtk.generate are subpackages, callable as
# llmtk.quantize(IN, OUT, TYPE) and llmtk.generate(MODEL, PROMPT)
_API = ("convert", "evaluate", "load_tensor")
__all__ = ["__version__", *_API, "generate", "quantize"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from llmtk import api

        return getattr(api, name)
    if name in ("quantize", "generate"):  # callable subpackages, not yet imported
        import importlib

        return importlib.import_module(f"llmtk.{name}")
    raise AttributeError(f"module 'llmtk' has no attribute {name!r}")
