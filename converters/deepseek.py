"""DeepSeek-V2/V3: DeepseekV2ForCausalLM and DeepseekV3ForCausalLM -> GGUF arch `deepseek2`.

llama.cpp's `DeepseekV2Model` (one converter for both): Multi-head Latent Attention written as
MQA over the compressed KV (`head_count_kv` 1, key length `kv_lora_rank + qk_rope_head_dim`,
value length `kv_lora_rank`, the per-head sizes as `*_length_mla`), the KV up-projection
`kv_b_proj` split per head into `attn_k_b` (transposed, for the absorbed K) and `attn_v_b`, the
first `first_k_dense_replace` layers dense, routed experts stacked down/gate/up, shared experts as
one FFN, V3's expert-score correction bias as `exp_probs_b`, multi-token-prediction layers (past
`num_hidden_layers`) dropped, and YaRN's `mscale_all_dim` as `0.1 * mscale_all_dim`.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from llmtk.errors import ShapeError

from .base import KA, KL, KR, ModelConverter
from .kv import KVStore
from .moe import ExpertStacking, expert_rows
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
_ATTN = _LAYER + "self_attn."
DEEPSEEK2_TENSORS: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "lm_head": "output",
    "model.norm": "output_norm",
    _LAYER + "input_layernorm": "blk.{bid}.attn_norm",
    _ATTN + "q_proj": "blk.{bid}.attn_q",  # V2-Lite: no query compression
    _ATTN + "q_a_proj": "blk.{bid}.attn_q_a",
    _ATTN + "q_a_layernorm": "blk.{bid}.attn_q_a_norm",
    _ATTN + "q_b_proj": "blk.{bid}.attn_q_b",
    _ATTN + "kv_a_proj_with_mqa": "blk.{bid}.attn_kv_a_mqa",
    _ATTN + "kv_a_layernorm": "blk.{bid}.attn_kv_a_norm",
    _ATTN + "k_b_proj": "blk.{bid}.attn_k_b",
    _ATTN + "v_b_proj": "blk.{bid}.attn_v_b",
    _ATTN + "o_proj": "blk.{bid}.attn_output",
    _LAYER + "post_attention_layernorm": "blk.{bid}.ffn_norm",
    _LAYER + "mlp.gate_proj": "blk.{bid}.ffn_gate",
    _LAYER + "mlp.up_proj": "blk.{bid}.ffn_up",
    _LAYER + "mlp.down_proj": "blk.{bid}.ffn_down",
    **expert_rows(shared="shared_experts", bias="gate.e_score_correction"),
}

# transformers' DeepseekV2Config / DeepseekV3Config defaults llama.cpp reads
_DEEPSEEK2_DEFAULTS = {"vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                       "rope_theta": 10000.0, "intermediate_size": 11008, "moe_intermediate_size": 1407,
                       "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                       "v_head_dim": 128, "n_routed_experts": 64, "n_shared_experts": 2,
                       "num_experts_per_tok": None, "first_k_dense_replace": 0, "routed_scaling_factor": 1.0,
                       "norm_topk_prob": False, "n_group": None, "topk_group": None, "tie_word_embeddings": False}
_DEEPSEEK3_DEFAULTS = {**_DEEPSEEK2_DEFAULTS, "vocab_size": 129280, "max_position_embeddings": 4096,
                       "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256,
                       "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
                       "routed_scaling_factor": 2.5, "norm_topk_prob": True, "n_group": 8, "topk_group": 4}


class DeepseekV2Converter(ExpertStacking, ModelConverter):
    model_arch = "deepseek2"
    tensor_map = DEEPSEEK2_TENSORS
    hparam_defaults = _DEEPSEEK2_DEFAULTS
    expert_count_keys = ("n_routed_experts",)

    def set_gguf_parameters(self, kv: KVStore) -> None:
        hp = self.hparams
        super().set_gguf_parameters(kv)
        # MLA is written as MQA over the compressed KV: one KV head (at the generic key's place)
        kv.u32(KA.HEAD_COUNT_KV, 1)
        n_dense = hp.get("first_k_dense_replace")
        if n_dense is None:  # no MoE: every layer dense
            n_dense = self.block_count if hp.get("n_routed_experts") is None else 0
        kv.u32(KL.LEADING_DENSE_BLOCK_COUNT, n_dense)
        kv_lora = hp["kv_lora_rank"] if hp.get("kv_lora_rank") is not None else 512
        kv.u32(KL.VOCAB_SIZE, hp["vocab_size"])
        if hp.get("q_lora_rank") is not None:
            kv.u32(KA.Q_LORA_RANK, hp["q_lora_rank"])
        kv.u32(KA.KV_LORA_RANK, kv_lora)
        kv.u32(KA.KEY_LENGTH, kv_lora + hp["qk_rope_head_dim"])
        kv.u32(KA.VALUE_LENGTH, kv_lora)
        kv.u32(KA.KEY_LENGTH_MLA, hp["qk_nope_head_dim"] + hp["qk_rope_head_dim"])
        kv.u32(KA.VALUE_LENGTH_MLA, hp["v_head_dim"])
        kv.u32(KL.EXPERT_FEED_FORWARD_LENGTH, self.find_hparam(["moe_intermediate_size", "intermediate_size"]))
        if hp.get("n_routed_experts") is not None:
            kv.u32(KL.EXPERT_COUNT, hp["n_routed_experts"])
        kv.u32(KL.EXPERT_SHARED_COUNT, hp.get("n_shared_experts") or 0)
        if hp.get("routed_scaling_factor") is not None:
            kv.f32(KL.EXPERT_WEIGHTS_SCALE, hp["routed_scaling_factor"])
        if hp.get("norm_topk_prob"):
            kv.bool(KL.EXPERT_WEIGHTS_NORM, True)
        kv.u32(KR.DIMENSION_COUNT, hp["qk_rope_head_dim"])
        if (mscale_all := self.rope_parameters.get("mscale_all_dim")) is not None:
            # llama.cpp's deepseek2 keeps 0.1 * mscale_all_dim here (TAG_DEEPSEEK2_YARN_LOG_MUL_FIX)
            kv.f32(KR.SCALING_YARN_LOG_MUL, 0.1 * mscale_all)

    @classmethod
    def complete_hparams(cls, config: dict[str, Any]) -> dict[str, Any]:
        hp = super().complete_hparams(config)
        if hp.get("rms_norm_eps") is None:
            hp["rms_norm_eps"] = 1e-6
        if hp.get("head_dim") is None and hp.get("qk_rope_head_dim") is not None:
            hp["head_dim"] = hp["qk_rope_head_dim"]  # as transformers' DeepseekV2Config/V3Config derive it
        return hp

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        hp = self.hparams
        if hp.get("tie_word_embeddings") and name in ("lm_head.weight", "model.lm_head.weight"):
            return
        if bid is not None and name.startswith("model.layers.") and bid >= hp["num_hidden_layers"]:
            return  # multi-token prediction layers: llama.cpp's deepseek2 has none
        if name.endswith("kv_b_proj.weight"):
            yield from self._split_kv_b(t, name)
            return
        yield from super().modify_tensors(t, name, bid)

    def _split_kv_b(self, t: LazyTensor, name: str) -> Iterator[tuple[str, LazyTensor]]:
        """kv_b_proj (n_head_kv * (nope + v), kv_lora) -> k_b (n_head_kv, kv_lora, nope), transposed
        for the absorbed attention, and v_b (n_head_kv, v, kv_lora)."""
        n_head_kv = self.hparams["num_key_value_heads"]
        nope, v = self.hparams["qk_nope_head_dim"], self.hparams["v_head_dim"]
        if t.ndim != 2 or t.shape[0] != n_head_kv * (nope + v):
            raise ShapeError(f"{self.hf_dir}: {name} has shape {list(t.shape)}, expected "
                             f"[{n_head_kv} x ({nope} + {v}), kv_lora_rank] (config.json)")
        kv_lora = t.shape[1]

        def heads(x: np.ndarray) -> np.ndarray:  # (n_head_kv, nope + v, kv_lora)
            return x.reshape(n_head_kv, nope + v, kv_lora)

        k_b = t.map(lambda x: heads(x)[:, :nope, :].transpose(0, 2, 1), (n_head_kv, kv_lora, nope))
        v_b = t.map(lambda x: heads(x)[:, nope:, :], (n_head_kv, v, kv_lora))
        yield self.map_tensor_name(name.replace("kv_b_proj", "k_b_proj")), k_b
        yield self.map_tensor_name(name.replace("kv_b_proj", "v_b_proj")), v_b


class DeepseekV3Converter(DeepseekV2Converter):
    hparam_defaults = _DEEPSEEK3_DEFAULTS
