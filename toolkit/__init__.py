"""llmtk: a Python toolchain for GGUF language models (convert, quantize, imatrix, perplexity, gates).

Importing this package is cheap on purpose: heavy modules (numba kernels, torch, pandas,
matplotlib) are imported by the code that needs them, never here.
"""
from __future__ import annotations

__version__ = "0.1.0"
