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
    ("Qwen2MoeForCausalLM", "qwen:Qwen2MoeConverter"),
    ("OlmoeForCausalLM", "olmoe:OlmoeConverter"),
    ("PhiMoEForCausalLM", "phi3:PhiMoeConverter"),
    ("Dots1ForCausalLM", "dots1:Dots1Converter"),
    ("DeepseekV2ForCausalLM", "deepseek:DeepseekV2Converter"),
    ("DeepseekV3ForCausalLM", "deepseek:DeepseekV3Converter"),
    ("GptOssForCausalLM", "gpt_oss:GptOssConverter"),
    ("GraniteMoeForCausalLM", "granitemoe:GraniteMoeConverter"),
    ("Glm4MoeForCausalLM", "glm4moe:Glm4MoeConverter"),
    ("Ernie4_5_MoeForCausalLM", "ernie_moe:Ernie4_5MoeConverter"),
    ("Llama4ForCausalLM", "llama4:Llama4Converter"),
    ("Phi3ForCausalLM", "phi3:Phi3Converter"),
    ("Gemma3ForCausalLM", "gemma3:Gemma3Converter"),
    ("ArceeForCausalLM", "llama:ArceeConverter"),
    ("SmolLM3ForCausalLM", "llama:SmolLM3Converter"),
    ("ApertusForCausalLM", "llama:ApertusConverter"),
    ("GraniteForCausalLM", "llama:GraniteConverter"),
    ("SeedOssForCausalLM", "dense:SeedOssConverter"),
    ("Starcoder2ForCausalLM", "dense:Starcoder2Converter"),
    ("Olmo2ForCausalLM", "dense:Olmo2Converter"),
    ("Exaone4ForCausalLM", "dense:Exaone4Converter"),
    ("Glm4ForCausalLM", "dense:Glm4Converter"),
    ("Ernie4_5ForCausalLM", "dense:Ernie4_5Converter"),
    ("CohereForCausalLM", "cohere:CommandRConverter"),
    ("Cohere2ForCausalLM", "cohere:Cohere2Converter"),
    ("GemmaForCausalLM", "gemma:GemmaConverter"),
    ("Gemma2ForCausalLM", "gemma:Gemma2Converter"),
):
    ARCHITECTURES.add(_hf_arch, Lazy(f"llmtk.converters.{_target}"))
del _hf_arch, _target
