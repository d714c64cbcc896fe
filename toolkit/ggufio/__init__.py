"""The GGUF container and nothing else: format facts, reader, writer, metadata edits, imatrix files.

This package never quantizes and never runs a model; it moves bytes and metadata. Its names are
loaded on first use (`llmtk.ggufio.GGUFReader`), so the kernels can import `constants` without
pulling in file I/O. Named `ggufio` so it cannot be confused with the PyPI `gguf` package, which
the converters use for its key and tensor-name tables.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GGUFReader": "reader", "TensorInfo": "reader", "escape_control": "reader",
    "GGUFWriter": "writer", "copy_kv": "writer", "infer_value_type": "writer",
    "open_gguf": "shards", "ShardedReader": "shards",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"llmtk.ggufio.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'llmtk.ggufio' has no attribute {name!r}")
