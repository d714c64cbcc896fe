"""Transformer forward pass over GGUF weights of any type: `load_model(path).forward(tokens)`.

`Model.forward(tokens, cache=None, hook=None)` returns float32 logits (n, n_vocab);
`Model.new_cache(n_ctx)` makes a KV cache for incremental decoding. Architectures are rows of
`llmtk.model.arch.ARCHS` (`llmtk.model.ARCHS.names()` lists them; docs/model.md says what
differs in each).
"""
from __future__ import annotations

from .arch import ARCHS, ArchSpec, HParams
from .model import KVCache, Model, load_model

__all__ = ["ARCHS", "ArchSpec", "HParams", "KVCache", "Model", "load_model"]
