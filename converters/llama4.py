"""Llama 4 text: Llama4ForCausalLM -> GGUF arch `llama4`.

llama.cpp's `Llama4Model`, a `LlamaModel` without the RoPE permutation and with the GPT-2 BPE
vocabulary. The config's `intermediate_size` is the experts' width and `intermediate_size_mlp`
the dense FFN's, so the two are swapped before the generic keys are written. Experts come stacked
for `x @ W`: `gate_up_proj` (n_expert, n_embd, 2 * n_ff) is transposed and cut in half (gate, then
up), `down_proj` transposed. The interleaving of MoE layers is written; NoPE layers, chunked
attention and attention temperature are fixed by llama.cpp's loader, not by metadata.
"""
from __future__ import annotations

from typing import Any, Iterator

from llmtk.errors import ShapeError

from . import vocab as V
from .base import KA, KL
from .kv import KVStore
from .llama import LlamaConverter
from .moe import expert_rows, per_expert
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
LLAMA4_TENSORS: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "lm_head": "output",
    "model.norm": "output_norm",
    "rope_freqs": "rope_freqs",
    _LAYER + "input_layernorm": "blk.{bid}.attn_norm",
    _LAYER + "self_attn.q_proj": "blk.{bid}.attn_q",
    _LAYER + "self_attn.k_proj": "blk.{bid}.attn_k",
    _LAYER + "self_attn.v_proj": "blk.{bid}.attn_v",
    _LAYER + "self_attn.o_proj": "blk.{bid}.attn_output",
    _LAYER + "post_attention_layernorm": "blk.{bid}.ffn_norm",
    _LAYER + "feed_forward.gate_proj": "blk.{bid}.ffn_gate",  # dense layers between MoE ones
    _LAYER + "feed_forward.up_proj": "blk.{bid}.ffn_up",
    _LAYER + "feed_forward.down_proj": "blk.{bid}.ffn_down",
    **expert_rows("feed_forward", router="router", shared="shared_expert"),
}

# transformers' Llama4TextConfig defaults llama.cpp reads
_LLAMA4_DEFAULTS = {"vocab_size": 202048, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                    "rope_theta": 500000.0, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
                    "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1,
                    "interleave_moe_layer_step": 1, "tie_word_embeddings": False}


class Llama4Converter(LlamaConverter):
    model_arch = "llama4"
    tensor_map = LLAMA4_TENSORS
    hparam_defaults = _LLAMA4_DEFAULTS
    undo_permute = False

    @classmethod
    def complete_hparams(cls, config: dict[str, Any]) -> dict[str, Any]:
        hp = super().complete_hparams(config)
        # as llama.cpp's Llama4Model.__init__: the generic FFN width is the dense MLP's
        hp["intermediate_size_moe"] = hp.get("intermediate_size")
        hp["intermediate_size"] = hp.get("intermediate_size_mlp")
        return hp

    def set_vocab(self, kv: KVStore) -> None:
        V.write_gpt2_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.u32(KL.INTERLEAVE_MOE_LAYER_STEP, self.hparams["interleave_moe_layer_step"])
        kv.u32(KL.EXPERT_FEED_FORWARD_LENGTH, self.hparams["intermediate_size_moe"])
        layer_types = self.hparams.get("layer_types")
        if isinstance(layer_types, list) and all(lt == "full_attention" for lt in layer_types):
            kv.u32(KA.SLIDING_WINDOW, 0)  # no chunked layers at all (MobileLLM): llama.cpp disables it

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if "gate_up_proj" in name:  # (n_expert, n_embd, 2 * n_ff): transposed, gate half then up half
            if t.ndim != 3 or t.shape[-1] % 2:
                raise ShapeError(f"{self.hf_dir}: {name} has shape {list(t.shape)}, expected "
                                 "(n_expert, n_embd, 2 * n_ff)")
            n_ff = t.shape[-1] // 2
            half = (t.shape[0], n_ff, t.shape[1])
            yield from super().modify_tensors(per_expert(t, lambda x: x.T[:n_ff], half),
                                              name.replace("gate_up_proj", "gate_proj.weight"), bid)
            yield from super().modify_tensors(per_expert(t, lambda x: x.T[n_ff:], half),
                                              name.replace("gate_up_proj", "up_proj.weight"), bid)
            return
        if name.endswith("down_proj"):  # stacked experts (n_expert, n_ff, n_embd), transposed
            if t.ndim != 3:
                raise ShapeError(f"{self.hf_dir}: {name} has shape {list(t.shape)}, expected (n_expert, n_ff, n_embd)")
            t = per_expert(t, lambda x: x.T, (t.shape[0], t.shape[2], t.shape[1]))
            name += ".weight"
        yield from super().modify_tensors(t, name, bid)
