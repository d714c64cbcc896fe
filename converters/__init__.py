"""Hugging Face checkpoint -> GGUF conversion, tensor-identical to llama.cpp's `convert_hf_to_gguf.py`.

`convert(hf_dir, out_path, outtype)` reads config.json and the safetensors (no torch needed),
maps names, writes llama.cpp's metadata and tokenizer, and streams one tensor at a time into an
atomic GGUF writer. Architectures are registered below by their HF class name and imported
lazily: a new family is one module defining `CONVERTERS` and one row per class name here.
"""
from __future__ import annotations

# HF architecture name -> module of llmtk.converters holding its converter class (`CONVERTERS`)
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "MixtralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen",
    "Qwen3ForCausalLM": "qwen",
    "Qwen3MoeForCausalLM": "qwen",
    "Phi3ForCausalLM": "phi3",
    "Gemma3ForCausalLM": "gemma3",
}

from .pipeline import convert, converter_class, parse_outtype, supported_architectures  # noqa: E402

__all__ = ["ARCHITECTURES", "convert", "converter_class", "parse_outtype", "supported_architectures"]
