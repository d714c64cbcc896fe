"""llama.cpp-exact tokenization from a GGUF's `tokenizer.ggml.*` metadata.

    tok = Tokenizer.from_gguf("model.gguf")
    ids = tok.encode("Hello world")          # BOS as the vocabulary says, special tokens parsed
    text = tok.decode(ids)

Modules: `core` (the Tokenizer, special-token partition, BOS/EOS, detokenizer), `pretokenize`
(the regex splitting and the registry of `tokenizer.ggml.pre` values), `bpe`, `spm`, `wpm`
(the three vocabulary models), `unicode` (codepoint classes and the GPT-2 byte alphabet).
"""
from __future__ import annotations

from .core import TOKENIZER_MODELS, TokenAttr, Tokenizer
from .pretokenize import PRE_TOKENIZERS, PreTokenizer

__all__ = ["Tokenizer", "TokenAttr", "TOKENIZER_MODELS", "PRE_TOKENIZERS", "PreTokenizer"]
