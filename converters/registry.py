"""Which converter class handles which Hugging Face architecture (config.json's `architectures`).

One row per HF class name, imported lazily: a new family is one module with its converter classes
and one row here per class name it handles. The pipeline and the tests read this table; no module
of a family imports it, so there is no import cycle.
"""
from __future__ import annotations

from llmtk.registry import Lazy, Registry

ARCHITECTURES: Registry = Registry("Hugging Face architecture")
for _hf_arch, _target in (
    ("LlamaForCausalLM", "llama:LlamaConverter"),
    ("MistralForCausalLM", "llama:MistralConverter"),
    ("MixtralForCausalLM", "llama:MixtralConverter"),
    ("Qwen2ForCausalLM", "qwen:Qwen2Converter"),
    ("Qwen3ForCausalLM", "qwen:Qwen3Converter"),
    ("Qwen3MoeForCausalLM", "qwen:Qwen3MoeConverter"),
    ("Phi3ForCausalLM", "phi3:Phi3Converter"),
    ("Gemma3ForCausalLM", "gemma3:Gemma3Converter"),
):
    ARCHITECTURES.add(_hf_arch, Lazy(f"llmtk.converters.{_target}"))
del _hf_arch, _target
