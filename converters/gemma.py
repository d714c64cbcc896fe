"""Gemma and Gemma 2: GemmaForCausalLM (`gemma`), Gemma2ForCausalLM (`gemma2`), and the Gemma-style
norm folding Gemma 3 shares.

Gemma's RMSNorm multiplies by `1 + weight`; llama.cpp stores the weight with that `+1` folded in
(`fold_gemma_norm`). Both write a short hyperparameter list of their own (no RoPE keys), a
SentencePiece vocabulary without a space prefix, and drop an `lm_head` (the output is tied).
Gemma 2 adds attention and final-logit soft-capping and the sliding window.
"""
from __future__ import annotations

from typing import Iterator

import gguf

from . import vocab as V
from .base import KA, KL, ModelConverter
from .dense import dense_tensor_map
from .kv import KVStore
from .source import LazyTensor


def fold_gemma_norm(t: LazyTensor, name: str) -> LazyTensor:
    """`weight + 1` for every `*norm.weight` (Gemma's zero-centred RMSNorm), added in the working
    dtype as llama.cpp's `GemmaModel.modify_tensors` does; other tensors unchanged."""
    if name.endswith("norm.weight"):
        return t.map(lambda x: x + x.dtype.type(1))
    return t


# transformers' GemmaConfig / Gemma2Config defaults llama.cpp reads
_GEMMA_DEFAULTS = {"vocab_size": 256000, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
                   "intermediate_size": 24576, "head_dim": 256, "num_attention_heads": 16, "num_key_value_heads": 16}
_GEMMA2_DEFAULTS = {**_GEMMA_DEFAULTS, "intermediate_size": 9216, "num_attention_heads": 8, "num_key_value_heads": 4,
                    "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "sliding_window": 4096}


class GemmaConverter(ModelConverter):
    """llama.cpp's `GemmaModel`."""

    model_arch = "gemma"
    tensor_map = dense_tensor_map("attn_norm ffn_norm ffn_gate")
    hparam_defaults = _GEMMA_DEFAULTS

    def filter_tensors(self, name: str) -> str | None:
        # llama.cpp never uses Gemma's lm_head (some quantizers store a copy of the embedding)
        return None if name == "lm_head.weight" else super().filter_tensors(name)

    def set_gguf_parameters(self, kv: KVStore) -> None:
        hp = self.hparams
        kv.u32(KL.CONTEXT_LENGTH, hp["max_position_embeddings"])
        kv.u32(KL.EMBEDDING_LENGTH, hp["hidden_size"])
        kv.u32(KL.BLOCK_COUNT, self.block_count)
        kv.u32(KL.FEED_FORWARD_LENGTH, hp["intermediate_size"])
        kv.u32(KA.HEAD_COUNT, hp["num_attention_heads"])
        kv.u32(KA.HEAD_COUNT_KV, hp["num_key_value_heads"])
        kv.f32(KA.LAYERNORM_RMS_EPS, hp["rms_norm_eps"])
        kv.u32(KA.KEY_LENGTH, hp["head_dim"])
        kv.u32(KA.VALUE_LENGTH, hp["head_dim"])
        kv.u32(gguf.Keys.General.FILE_TYPE, self.ftype)

    def set_vocab(self, kv: KVStore) -> None:
        """SentencePiece, then CodeGemma's end-of-turn id 107; its FIM ids (67-70) have no key in
        this llama.cpp's writer, which skips them."""
        V.write_sentencepiece_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))
        special = V.SpecialVocab(self.hf_dir, types=("eot",))
        special.add.clear()  # bos/eos flags are not this vocab's types: llama.cpp writes them once
        special.chat_template = None
        special.set_id("eot", 107)
        special.write(kv)
        kv.bool(gguf.Keys.Tokenizer.ADD_PREFIX, False)

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        yield from super().modify_tensors(fold_gemma_norm(t, name), name, bid)


class Gemma2Converter(GemmaConverter):
    """llama.cpp's `Gemma2Model`: Gemma plus soft-capping, the sliding window and post-norms."""

    model_arch = "gemma2"
    tensor_map = dense_tensor_map("attn_norm ffn_norm ffn_gate post_attention_norm post_ffw_norm")
    hparam_defaults = _GEMMA2_DEFAULTS

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.f32(KL.ATTN_LOGIT_SOFTCAPPING, self.hparams["attn_logit_softcapping"])
        kv.f32(KL.FINAL_LOGIT_SOFTCAPPING, self.hparams["final_logit_softcapping"])
        kv.u32(KA.SLIDING_WINDOW, self.hparams["sliding_window"])

    def set_vocab(self, kv: KVStore) -> None:
        V.write_sentencepiece_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))
        kv.bool(gguf.Keys.Tokenizer.ADD_PREFIX, False)
