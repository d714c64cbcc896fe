"""Qwen family: Qwen2ForCausalLM (`qwen2`), Qwen3ForCausalLM (`qwen3`), Qwen3MoeForCausalLM (`qwen3moe`).

No RoPE permutation (Qwen checkpoints use the layout GGUF's NEOX rope expects). Qwen2 has Q/K/V
biases, Qwen3 per-head Q/K RMS norms, Qwen3-MoE per-expert down/gate/up stacked into 3-D tensors
(llama.cpp's `Qwen2MoeModel` order: down, gate, up) plus the expert FFN width.
"""
from __future__ import annotations

from typing import Any, Iterator

from . import vocab as V
from .base import KL, ModelConverter
from .kv import KVStore
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
QWEN2_TENSORS: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "lm_head": "output",
    "model.norm": "output_norm",
    _LAYER + "input_layernorm": "blk.{bid}.attn_norm",
    _LAYER + "self_attn.q_proj": "blk.{bid}.attn_q",
    _LAYER + "self_attn.k_proj": "blk.{bid}.attn_k",
    _LAYER + "self_attn.v_proj": "blk.{bid}.attn_v",
    _LAYER + "self_attn.o_proj": "blk.{bid}.attn_output",
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
# llama.cpp's qwen3moe has no dense or shared-expert FFN: such checkpoints fail to map, as there
QWEN3MOE_TENSORS: dict[str, str] = {
    **{k: v for k, v in QWEN3_TENSORS.items() if ".mlp." not in k},
    _LAYER + "mlp.gate": "blk.{bid}.ffn_gate_inp",
    _LAYER + "mlp.experts.gate_proj": "blk.{bid}.ffn_gate_exps",
    _LAYER + "mlp.experts.up_proj": "blk.{bid}.ffn_up_exps",
    _LAYER + "mlp.experts.down_proj": "blk.{bid}.ffn_down_exps",
}

# transformers' Qwen2Config / Qwen3Config / Qwen3MoeConfig defaults llama.cpp reads
_QWEN2_DEFAULTS = {"vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                   "rope_theta": 10000.0, "intermediate_size": 22016}
_QWEN3_DEFAULTS = {**_QWEN2_DEFAULTS, "head_dim": 128}
_QWEN3MOE_DEFAULTS = {**_QWEN2_DEFAULTS, "intermediate_size": 6144, "moe_intermediate_size": 768,
                      "num_experts_per_tok": 8, "num_experts": 128}


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


class Qwen3MoeConverter(Qwen2Converter):
    model_arch = "qwen3moe"
    tensor_map = QWEN3MOE_TENSORS
    hparam_defaults = _QWEN3MOE_DEFAULTS

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._experts: dict[int, dict[str, LazyTensor]] = {}

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        if (n := self.hparams.get("moe_intermediate_size")) is not None:
            kv.u32(KL.EXPERT_FEED_FORWARD_LENGTH, n)
        if (n := self.hparams.get("shared_expert_intermediate_size")) is not None:
            kv.u32(KL.EXPERT_SHARED_FEED_FORWARD_LENGTH, n)

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        base = name.removesuffix(".weight")
        if base.endswith("mlp.experts.gate_up_proj"):
            # fused experts (n_expert, 2 * n_ff, n_embd): split on the middle axis into gate, up
            n_ff = t.shape[-2] // 2
            half = (*t.shape[:-2], n_ff, t.shape[-1])
            stem = base.removesuffix(".gate_up_proj")
            yield self.map_tensor_name(stem + ".gate_proj.weight"), t.map(lambda x: x[..., :n_ff, :], half)
            yield self.map_tensor_name(stem + ".up_proj.weight"), t.map(lambda x: x[..., n_ff:, :], half)
            return
        if base.endswith("mlp.experts.down_proj"):
            yield self.map_tensor_name(base + ".weight"), t
            return
        if ".experts." in name:
            assert bid is not None
            n_experts = self.find_hparam(["num_local_experts", "num_experts"])
            yield from self.stack_experts(
                self._experts, bid, name, t, n_experts,
                [(f"model.layers.{{bid}}.mlp.experts.{{xid}}.{w}.weight", f"model.layers.{{bid}}.mlp.experts.{w}.weight")
                 for w in ("down_proj", "gate_proj", "up_proj")])
            return
        yield from super().modify_tensors(t, name, bid)

    def finish_tensors(self) -> None:
        self.check_buffers_empty(self._experts)

