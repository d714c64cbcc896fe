"""The architecture registry and each family's tables, checked against gguf-py's tensor names."""
from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from llmtk.converters import ARCHITECTURES, converter_class
from llmtk.converters.kv import KVStore


@pytest.mark.parametrize("hf_arch", sorted(ARCHITECTURES))
def test_every_gguf_name_in_the_table_exists_for_the_arch(hf_arch: str) -> None:
    cls = converter_class(hf_arch)
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == cls.model_arch)
    known = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]}
    assert cls.tensor_map, hf_arch
    for hf_name, gguf_name in cls.tensor_map.items():
        assert gguf_name in known, f"{hf_arch}: {hf_name} -> {gguf_name} is not a {cls.model_arch} tensor"
        assert ("{bid}" in hf_name) == ("{bid}" in gguf_name)


def _kv(hf_arch: str, config: dict) -> dict:
    cls = converter_class(hf_arch)
    conv = cls(Path("/nonexistent"), cls.complete_hparams(config), hf_arch)
    kv = KVStore(conv.model_arch)
    conv.set_gguf_parameters(kv)
    return {k: v[0] for k, v in kv}


MINIMAL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def test_transformers_defaults_fill_a_sparse_config() -> None:
    llama = _kv("LlamaForCausalLM", MINIMAL)
    assert llama["llama.context_length"] == 2048 and llama["llama.rope.freq_base"] == 10000.0
    assert llama["llama.attention.layer_norm_rms_epsilon"] == 1e-6
    assert llama["llama.attention.head_count_kv"] == 4  # defaults to the head count
    assert llama["llama.attention.key_length"] == 16  # LlamaConfig derives head_dim
    assert llama["llama.vocab_size"] == 32000
    mistral = _kv("MistralForCausalLM", MINIMAL)
    assert "llama.attention.key_length" not in mistral  # MistralConfig leaves head_dim None
    assert mistral["llama.context_length"] == 131072
    qwen3 = _kv("Qwen3ForCausalLM", MINIMAL)
    assert qwen3["qwen3.attention.key_length"] == 128 and qwen3["qwen3.context_length"] == 32768
    gemma = _kv("Gemma3ForCausalLM", MINIMAL)
    assert gemma["gemma3.rope.freq_base_swa"] == 10000.0 and gemma["gemma3.attention.sliding_window"] == 4096
    moe = _kv("Qwen3MoeForCausalLM", MINIMAL)
    assert (moe["qwen3moe.expert_count"], moe["qwen3moe.expert_used_count"],
            moe["qwen3moe.expert_feed_forward_length"]) == (128, 8, 768)


def test_rope_scaling_keys() -> None:
    yarn = _kv("Qwen2ForCausalLM", {**MINIMAL, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                                 "original_max_position_embeddings": 32768}})
    assert yarn["qwen2.rope.scaling.type"] == "yarn" and yarn["qwen2.rope.scaling.factor"] == 4.0
    assert yarn["qwen2.rope.scaling.original_context_length"] == 32768
    linear = _kv("LlamaForCausalLM", {**MINIMAL, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert linear["llama.rope.scaling.type"] == "linear"


@pytest.mark.parametrize("hf_arch", sorted(ARCHITECTURES))
def test_every_row_means_what_gguf_py_maps_it_to(hf_arch: str) -> None:
    """Each HF spelling in a table goes where gguf-py's `TensorNameMap` for the arch sends it
    (where gguf-py knows the spelling): the shared dense table picks the right meaning of
    ambiguous names such as `post_attention_layernorm` per architecture."""
    cls = converter_class(hf_arch)
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == cls.model_arch)
    names = gguf.get_tensor_name_map(arch, 2)
    for hf_name, gguf_name in cls.tensor_map.items():
        if "{xid}" in hf_name:
            continue
        theirs = names.get_name(hf_name.format(bid=1))
        assert theirs in (None, gguf_name.format(bid=1)), f"{hf_arch}: {hf_name} -> {gguf_name}, gguf-py: {theirs}"
