"""dots.llm1: Dots1ForCausalLM -> GGUF arch `dots1`.

llama.cpp's `Dots1Model` is its Qwen2-MoE converter plus DeepSeek-V3-style routing metadata: the
first `first_k_dense_replace` layers are dense, routed experts (`n_routed_experts`) are scored by a
sigmoid with a correction bias (`e_score_correction_bias` -> `exp_probs_b`), and the shared experts
(`shared_experts`, plural) are one plain FFN.
"""
from __future__ import annotations

from typing import Any

from .base import KL
from .kv import KVStore
from .moe import DOWN_SHEXP, EXP_PROBS_B, GATE_SHEXP, UP_SHEXP
from .qwen import QWEN3_TENSORS, Qwen2MoeConverter, MOE_EXPERT_TENSORS

_LAYER = "model.layers.{bid}."
DOTS1_TENSORS: dict[str, str] = {
    **QWEN3_TENSORS,  # attention with Q/K norms, and the dense FFN of the leading layers
    **MOE_EXPERT_TENSORS,
    _LAYER + "mlp.gate.e_score_correction": EXP_PROBS_B,
    _LAYER + "mlp.shared_experts.gate_proj": GATE_SHEXP,
    _LAYER + "mlp.shared_experts.up_proj": UP_SHEXP,
    _LAYER + "mlp.shared_experts.down_proj": DOWN_SHEXP,
}

# transformers' Dots1Config defaults llama.cpp reads
_DOTS1_DEFAULTS = {"vocab_size": 152064, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                   "rope_theta": 10000.0, "intermediate_size": 10944, "moe_intermediate_size": 1408,
                   "n_routed_experts": 64, "n_shared_experts": None, "num_experts_per_tok": None,
                   "first_k_dense_replace": 0, "routed_scaling_factor": 1.0, "norm_topk_prob": False,
                   "n_group": 1, "topk_group": 1}


class Dots1Converter(Qwen2MoeConverter):
    model_arch = "dots1"
    tensor_map = DOTS1_TENSORS
    hparam_defaults = _DOTS1_DEFAULTS
    expert_count_keys = ("n_routed_experts",)

    @classmethod
    def complete_hparams(cls, config: dict[str, Any]) -> dict[str, Any]:
        hp = super().complete_hparams(config)
        hp["num_experts"] = hp.get("n_routed_experts")  # as llama.cpp's Dots1Model.__init__ sets it
        return hp

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        hp = self.hparams
        kv.u32(KL.LEADING_DENSE_BLOCK_COUNT, hp["first_k_dense_replace"])
        kv.u32(KL.EXPERT_SHARED_COUNT, self.find_hparam(["n_shared_experts"]))
        kv.f32(KL.EXPERT_WEIGHTS_SCALE, hp["routed_scaling_factor"])
        kv.bool(KL.EXPERT_WEIGHTS_NORM, bool(hp["norm_topk_prob"]))
