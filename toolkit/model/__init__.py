"""Transformer forward pass over GGUF weights of any type: `load_model(path).forward(tokens)`.

`Model.forward(tokens, cache=None, hook=None)` returns float32 logits (n, n_vocab);
`Model.new_cache(n_ctx)` makes a KV cache for incremental decoding. Architectures are rows of
`llmtk.model.arch.ARCHS` (llama/mistral/smollm/mixtral, qwen2, qwen3, qwen3moe, phi3, gemma3).
"""
from __future__ import annotations

from .arch import ARCHS, ArchSpec, HParams
from .model import KVCache, Model, load_model

__all__ = ["ARCHS", "ArchSpec", "HParams", "KVCache", "Model", "load_model"]
