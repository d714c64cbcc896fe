"""OLMoE: OlmoeForCausalLM -> GGUF arch `olmoe`.

llama.cpp's `OlmoeModel`: Qwen2-MoE's expert stacking (down, gate, up), Q/K RMS norms over the
whole projection (not per head), no shared expert, and the RMS epsilon written as 1e-5 whatever
config.json says.
"""
from __future__ import annotations

from .base import KA, ModelConverter
from .kv import KVStore
from .moe import DECODER_CORE, ExpertStacking, expert_rows

_LAYER = "model.layers.{bid}."
OLMOE_TENSORS: dict[str, str] = {
    **DECODER_CORE,
    _LAYER + "self_attn.q_norm": "blk.{bid}.attn_q_norm",
    _LAYER + "self_attn.k_norm": "blk.{bid}.attn_k_norm",
    _LAYER + "post_attention_layernorm": "blk.{bid}.ffn_norm",
    **expert_rows(),
}

# transformers' OlmoeConfig defaults llama.cpp reads
_OLMOE_DEFAULTS = {"vocab_size": 50304, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                   "rope_theta": 10000.0, "intermediate_size": 2048, "num_experts_per_tok": 8, "num_experts": 64}


class OlmoeConverter(ExpertStacking, ModelConverter):
    model_arch = "olmoe"
    tensor_map = OLMOE_TENSORS
    hparam_defaults = _OLMOE_DEFAULTS

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.f32(KA.LAYERNORM_RMS_EPS, 1e-5)
