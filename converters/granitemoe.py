"""Granite MoE: GraniteMoeForCausalLM -> GGUF arch `granitemoe`.

llama.cpp's `GraniteMoeModel`: Granite's multipliers and Llama's RoPE permutation, with JetMoE-style
experts already stacked in 3-D. `input_linear` (n_expert, 2 * n_ff, n_embd) holds gate then up and
is split in two; `output_linear` is the stacked down projection; `router.layer` the router. The
shared variant's `shared_mlp` (gate and up fused the same way), when present, becomes the shared expert.
"""
from __future__ import annotations

from typing import Iterator

from llmtk.errors import ShapeError, UnsupportedError

from .base import KL
from .kv import KVStore
from .llama import GraniteConverter
from .moe import DOWN_EXPS, DOWN_SHEXP, GATE_EXPS, GATE_SHEXP, ROUTER, UP_EXPS, UP_SHEXP, split_fused_rows
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
GRANITEMOE_TENSORS: dict[str, str] = {
    **{k: v for k, v in GraniteConverter.tensor_map.items() if ".mlp." not in k},
    _LAYER + "block_sparse_moe.router.layer": ROUTER,
    _LAYER + "block_sparse_moe.experts.gate_proj": GATE_EXPS,  # the halves of input_linear
    _LAYER + "block_sparse_moe.experts.up_proj": UP_EXPS,
    _LAYER + "block_sparse_moe.output_linear": DOWN_EXPS,
    _LAYER + "shared_mlp.gate_proj": GATE_SHEXP,
    _LAYER + "shared_mlp.up_proj": UP_SHEXP,
    _LAYER + "shared_mlp.output_linear": DOWN_SHEXP,
}

# transformers' GraniteMoeConfig defaults llama.cpp reads
_GRANITEMOE_DEFAULTS = {**GraniteConverter.hparam_defaults, "vocab_size": 32000, "max_position_embeddings": 2048,
                        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "intermediate_size": 11008,
                        "num_local_experts": 8, "num_experts_per_tok": 2, "embedding_multiplier": 1.0,
                        "logits_scaling": 1.0, "residual_multiplier": 1.0, "attention_multiplier": 1.0}


class GraniteMoeConverter(GraniteConverter):
    model_arch = "granitemoe"
    tensor_map = GRANITEMOE_TENSORS
    hparam_defaults = _GRANITEMOE_DEFAULTS

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        if n := self.hparams.get("shared_intermediate_size"):
            kv.u32(KL.EXPERT_SHARED_FEED_FORWARD_LENGTH, n)

    def _split_gate_up(self, t: LazyTensor, name: str, n_ff: int, stem: str) -> Iterator[tuple[str, LazyTensor]]:
        if t.ndim < 2 or t.shape[-2] != 2 * n_ff:
            raise ShapeError(f"{self.hf_dir}: {name} has shape {list(t.shape)}, expected 2 x {n_ff} rows "
                             "(gate and up, config.json)")
        gate, up = split_fused_rows(t, n_ff)
        yield self.map_tensor_name(stem + ".gate_proj.weight"), gate
        yield self.map_tensor_name(stem + ".up_proj.weight"), up

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if name.endswith("block_sparse_moe.input_linear.weight"):
            stem = name.removesuffix(".input_linear.weight") + ".experts"
            yield from self._split_gate_up(t, name, self.hparams["intermediate_size"], stem)
            return
        if name.endswith("shared_mlp.input_linear.weight"):
            if not self.hparams.get("num_local_experts"):
                # without experts llama.cpp writes the shared MLP as the dense FFN, which granitemoe lacks
                raise UnsupportedError(f"{self.hf_dir}: {name} without experts (num_local_experts 0) is not a "
                                       "granitemoe model")
            stem = name.removesuffix(".input_linear.weight")
            yield from self._split_gate_up(t, name, self.hparams["shared_intermediate_size"], stem)
            return
        yield from super().modify_tensors(t, name, bid)
