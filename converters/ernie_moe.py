"""ERNIE-4.5 MoE: Ernie4_5_MoeForCausalLM -> GGUF arch `ernie4_5-moe`.

llama.cpp's `Ernie4_5MoeModel`, on top of the dense ERNIE-4.5 converter (SentencePiece vocabulary,
`ernie.` prefix): per-expert tensors stacked in the order gate, up, down; every other tensor
mapped as it is (the dense converter's fused QKV / up-gate split is not applied to the MoE model);
multi-token-prediction tensors (`model.mtp_*`) dropped. The shared experts' width is written as
`intermediate_size // num_key_value_heads`, llama.cpp's rule.
"""
from __future__ import annotations

import re
from typing import Iterator

from .base import KL, ModelConverter
from .dense import Ernie4_5Converter
from .kv import KVStore
from .moe import ExpertStacking, expert_rows
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
ERNIE4_5_MOE_TENSORS: dict[str, str] = {
    **Ernie4_5Converter.tensor_map,  # attention and the dense FFN of the leading layers
    **expert_rows(shared="shared_experts", bias="moe_statics.e_score_correction"),
}
_MTP = re.compile(r"model\.(mtp_block|mtp_emb_norm|mtp_hidden_norm|mtp_linear_proj)\.\d+")

# transformers' Ernie4_5_MoeConfig defaults llama.cpp reads
_ERNIE4_5_MOE_DEFAULTS = {"vocab_size": 103424, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                          "rope_theta": 500000.0, "intermediate_size": 12288, "moe_intermediate_size": 1536,
                          "moe_k": 6, "moe_num_experts": 64, "moe_num_shared_experts": 2,
                          "moe_layer_start_index": 1, "moe_layer_interval": 1}


class Ernie4_5MoeConverter(ExpertStacking, Ernie4_5Converter):
    model_arch = "ernie4_5-moe"
    tensor_map = ERNIE4_5_MOE_TENSORS
    hparam_defaults = _ERNIE4_5_MOE_DEFAULTS
    expert_projections = ("gate_proj", "up_proj", "down_proj")
    expert_count_keys = ("moe_num_experts",)

    def filter_tensors(self, name: str) -> str | None:
        if _MTP.match(name):
            return None
        return super().filter_tensors(name)

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if bid is not None and self.is_expert_tensor(name):
            yield from super().modify_tensors(t, name, bid)
            return
        yield from ModelConverter.modify_tensors(self, t, name, bid)

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        hp = self.hparams
        kv.u32(KL.EXPERT_COUNT, hp["moe_num_experts"])
        kv.u32(KL.EXPERT_USED_COUNT, hp["moe_k"])
        kv.u32(KL.INTERLEAVE_MOE_LAYER_STEP, hp["moe_layer_interval"])
        kv.u32(KL.LEADING_DENSE_BLOCK_COUNT, hp["moe_layer_start_index"])
        if hp.get("moe_intermediate_size") is not None:
            kv.u32(KL.EXPERT_FEED_FORWARD_LENGTH, hp["moe_intermediate_size"])
        if (n_shared := hp.get("moe_num_shared_experts")) is not None:
            kv.u32(KL.EXPERT_SHARED_COUNT, n_shared)
            if n_shared > 0 and hp.get("intermediate_size") is not None and hp.get("num_key_value_heads"):
                kv.u32(KL.EXPERT_SHARED_FEED_FORWARD_LENGTH, hp["intermediate_size"] // hp["num_key_value_heads"])
