"""Qwen family: Qwen2ForCausalLM (`qwen2`), Qwen3ForCausalLM (`qwen3`), Qwen2MoeForCausalLM
(`qwen2moe`), Qwen3MoeForCausalLM (`qwen3moe`).

No RoPE permutation (Qwen checkpoints use the layout GGUF's NEOX rope expects). Qwen2 has Q/K/V
biases, Qwen3 per-head Q/K RMS norms. The MoE ones stack per-expert down/gate/up into 3-D tensors
(llama.cpp's `Qwen2MoeModel` order: down, gate, up) and write the expert FFN width; Qwen2-MoE adds
a shared expert with its own sigmoid gate (`ffn_gate_inp_shexp`, one row).
"""
from __future__ import annotations

from typing import Iterator

from . import vocab as V
from .base import KL, ModelConverter
from .kv import KVStore
from .moe import DECODER_CORE, ExpertStacking, expert_rows, split_fused_rows
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
QWEN2_TENSORS: dict[str, str] = {
    **DECODER_CORE,
    _LAYER + "post_attention_layernorm": "blk.{bid}.ffn_norm",
    _LAYER + "mlp.gate_proj": "blk.{bid}.ffn_gate",
    _LAYER + "mlp.up_proj": "blk.{bid}.ffn_up",
    _LAYER + "mlp.down_proj": "blk.{bid}.ffn_down",
}
QWEN3_TENSORS: dict[str, str] = {
    **QWEN2_TENSORS,
    _LAYER + "self_attn.q_norm": "blk.{bid}.attn_q_norm",
    _LAYER + "self_attn.k_norm": "blk.{bid}.attn_k_norm",
}
MOE_EXPERT_TENSORS: dict[str, str] = expert_rows()
# llama.cpp's qwen3moe has no dense or shared-expert FFN: such checkpoints fail to map, as there
QWEN3MOE_TENSORS: dict[str, str] = {
    **{k: v for k, v in QWEN3_TENSORS.items() if ".mlp." not in k},
    **MOE_EXPERT_TENSORS,
}
QWEN2MOE_TENSORS: dict[str, str] = {
    **{k: v for k, v in QWEN2_TENSORS.items() if ".mlp." not in k},
    **expert_rows(shared="shared_expert"),
    _LAYER + "mlp.shared_expert_gate": "blk.{bid}.ffn_gate_inp_shexp",
}

# transformers' Qwen2Config / Qwen3Config / Qwen3MoeConfig defaults llama.cpp reads
_QWEN2_DEFAULTS = {"vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                   "rope_theta": 10000.0, "intermediate_size": 22016}
_QWEN3_DEFAULTS = {**_QWEN2_DEFAULTS, "head_dim": 128}
_QWEN3MOE_DEFAULTS = {**_QWEN2_DEFAULTS, "intermediate_size": 6144, "moe_intermediate_size": 768,
                      "num_experts_per_tok": 8, "num_experts": 128}
_QWEN2MOE_DEFAULTS = {**_QWEN2_DEFAULTS, "intermediate_size": 5632, "moe_intermediate_size": 1408,
                      "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4, "num_experts": 60}


class Qwen2Converter(ModelConverter):
    model_arch = "qwen2"
    tensor_map = QWEN2_TENSORS
    hparam_defaults = _QWEN2_DEFAULTS

    def set_vocab(self, kv: KVStore) -> None:
        if (self.hf_dir / "tokenizer.model").is_file():
            V.write_sentencepiece_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))
        else:
            V.write_gpt2_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))


class Qwen3Converter(Qwen2Converter):
    model_arch = "qwen3"
    tensor_map = QWEN3_TENSORS
    hparam_defaults = _QWEN3_DEFAULTS


class Qwen2MoeConverter(ExpertStacking, Qwen2Converter):
    model_arch = "qwen2moe"
    tensor_map = QWEN2MOE_TENSORS
    hparam_defaults = _QWEN2MOE_DEFAULTS

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        if (n := self.hparams.get("moe_intermediate_size")) is not None:
            kv.u32(KL.EXPERT_FEED_FORWARD_LENGTH, n)
        if (n := self.hparams.get("shared_expert_intermediate_size")) is not None:
            kv.u32(KL.EXPERT_SHARED_FEED_FORWARD_LENGTH, n)

    def set_vocab(self, kv: KVStore) -> None:
        # llama.cpp's Qwen2MoeModel keeps TextModel's BPE vocabulary, never SentencePiece
        V.write_gpt2_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        base = name.removesuffix(".weight")
        if base.endswith("mlp.experts.gate_up_proj"):
            # fused experts (n_expert, 2 * n_ff, n_embd): split on the middle axis into gate, up
            gate, up = split_fused_rows(t, t.shape[-2] // 2)
            stem = base.removesuffix(".gate_up_proj")
            yield self.map_tensor_name(stem + ".gate_proj.weight"), gate
            yield self.map_tensor_name(stem + ".up_proj.weight"), up
            return
        if base.endswith("mlp.experts.down_proj"):
            yield self.map_tensor_name(base + ".weight"), t
            return
        yield from super().modify_tensors(t, name, bid)


class Qwen3MoeConverter(Qwen2MoeConverter):
    model_arch = "qwen3moe"
    tensor_map = QWEN3MOE_TENSORS
    hparam_defaults = _QWEN3MOE_DEFAULTS
