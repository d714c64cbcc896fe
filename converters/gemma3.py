"""Gemma 3 text: Gemma3ForCausalLM -> GGUF arch `gemma3`.

llama.cpp stores Gemma's RMSNorm weights with the `+1` its forward pass applies folded in, cuts
the embedding to the tokenizer's real size, and rewrites several generic hyperparameters with
Gemma 3's own defaults.
"""
from __future__ import annotations

import json
from typing import Iterator

import gguf

from llmtk.errors import UnsupportedError

from . import vocab as V
from .base import KA, KL, KR, ModelConverter
from .dense import dense_tensor_map
from .gemma import fold_gemma_norm
from .kv import KVStore
from .source import LazyTensor

GEMMA3_TENSORS = dense_tensor_map("output attn_norm attn_q_norm attn_k_norm post_attention_norm ffn_norm "
                                  "post_ffw_norm ffn_gate")

# transformers' Gemma3TextConfig defaults llama.cpp reads
_GEMMA3_DEFAULTS = {"vocab_size": 262208, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
                    "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "head_dim": 256,
                    "intermediate_size": 9216, "sliding_window": 4096, "num_attention_heads": 8,
                    "num_key_value_heads": 4, "final_logit_softcapping": None, "attn_logit_softcapping": None}


class Gemma3Converter(ModelConverter):
    model_arch = "gemma3"
    tensor_map = GEMMA3_TENSORS
    hparam_defaults = _GEMMA3_DEFAULTS

    def set_vocab(self, kv: KVStore) -> None:
        if (self.hf_dir / "tokenizer.model").is_file():
            V.write_sentencepiece_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))
            kv.bool(gguf.Keys.Tokenizer.ADD_PREFIX, False)
        else:
            V.write_gpt2_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        hp = self.hparams
        kv.u32(KL.CONTEXT_LENGTH, hp.get("max_position_embeddings", 131072))
        kv.u32(KA.HEAD_COUNT, hp.get("num_attention_heads", 8))
        kv.f32(KA.LAYERNORM_RMS_EPS, hp.get("rms_norm_eps", 1e-6))
        kv.u32(KA.KEY_LENGTH, hp.get("head_dim", 256))
        kv.u32(KA.VALUE_LENGTH, hp.get("head_dim", 256))
        kv.f32(KR.FREQ_BASE, self.rope_parameters.get("full_attention", self.rope_parameters)
               .get("rope_theta", 1_000_000.0))
        if hp.get("attn_logit_softcapping") is not None:
            raise UnsupportedError(f"{self.hf_dir}: attn_logit_softcapping is not used by Gemma 3")
        if hp.get("final_logit_softcapping"):
            kv.f32(KL.FINAL_LOGIT_SOFTCAPPING, hp["final_logit_softcapping"])
        if hp.get("sliding_window_pattern") != 1:
            kv.u32(KA.SLIDING_WINDOW, hp["sliding_window"])
        kv.u32(KA.HEAD_COUNT_KV, hp.get("num_key_value_heads", 4))

    def _n_vocab_real(self) -> int:
        if (self.hf_dir / "tokenizer.model").is_file():
            return len(V.sentencepiece_vocab(self.hf_dir, self.hparams.get("vocab_size"))[0])
        tj = json.loads((self.hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
        return len(tj["model"]["vocab"]) + len(tj["added_tokens"])

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if "embed_tokens.weight" in name:
            n = self._n_vocab_real()
            if n < t.shape[0]:
                t = t.map(lambda x: x[:n], (n, *t.shape[1:]))
        yield from super().modify_tensors(fold_gemma_norm(t, name), name, bid)

