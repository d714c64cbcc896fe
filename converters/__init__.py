"""Hugging Face checkpoint -> GGUF conversion, tensor-identical to llama.cpp's `convert_hf_to_gguf.py`.

`convert(hf_dir, out_path, outtype)` reads config.json and the safetensors (no torch needed),
maps names, writes llama.cpp's metadata and tokenizer, and streams one tensor at a time into an
atomic GGUF writer. Architectures are registered in `registry.py` by their HF class name and
imported lazily: a new family is one module of converter classes and one row per class name there.
"""
from __future__ import annotations

from llmtk.converters.pipeline import convert, converter_class, parse_outtype, supported_architectures
from llmtk.converters.registry import ARCHITECTURES

__all__ = ["ARCHITECTURES", "convert", "converter_class", "parse_outtype", "supported_architectures"]
