"""Phi-3: Phi3ForCausalLM -> GGUF arch `phi3`; Phi-3.5-MoE: PhiMoEForCausalLM -> `phimoe`.

Fused `qkv_proj` and `gate_up_proj` are kept fused (`attn_qkv`, `ffn_up` of twice the width);
the hyperparameters are written in llama.cpp's own Phi-3 order, and LongRoPE checkpoints get
`rope_factors_long/short` tensors plus the attention factor.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable

import gguf
import numpy as np

from llmtk.errors import InputError, UnsupportedError

from . import vocab as V
from .base import KA, KL, KR, ModelConverter
from .kv import KVStore
from .moe import ExpertStacking
from .source import LazyTensor

_LAYER = "model.layers.{bid}."
PHI3_TENSORS: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "lm_head": "output",
    "model.norm": "output_norm",
    "rope_factors_long": "rope_factors_long",
    "rope_factors_short": "rope_factors_short",
    _LAYER + "input_layernorm": "blk.{bid}.attn_norm",
    _LAYER + "self_attn.qkv_proj": "blk.{bid}.attn_qkv",
    _LAYER + "self_attn.q_proj": "blk.{bid}.attn_q",
    _LAYER + "self_attn.k_proj": "blk.{bid}.attn_k",
    _LAYER + "self_attn.v_proj": "blk.{bid}.attn_v",
    _LAYER + "self_attn.o_proj": "blk.{bid}.attn_output",
    _LAYER + "post_attention_layernorm": "blk.{bid}.ffn_norm",
    _LAYER + "mlp.gate_up_proj": "blk.{bid}.ffn_up",
    _LAYER + "mlp.down_proj": "blk.{bid}.ffn_down",
}

# transformers' Phi3Config defaults llama.cpp reads
_PHI3_DEFAULTS = {"vocab_size": 32064, "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
                  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "partial_rotary_factor": 1.0,
                  "intermediate_size": 8192, "sliding_window": None}


class Phi3Converter(ModelConverter):
    model_arch = "phi3"
    tensor_map = PHI3_TENSORS
    hparam_defaults = _PHI3_DEFAULTS

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._attn_factor: float | None = None

    def _rope_dims(self) -> int:
        n_embd = self.find_hparam(["hidden_size", "n_embd"])
        n_head = self.find_hparam(["num_attention_heads", "n_head"])
        return int(self.rope_parameters.get("partial_rotary_factor", 1.0) * n_embd) // n_head

    def set_early_parameters(self, kv: KVStore) -> None:
        if self._attn_factor is not None:
            kv.f32(KR.SCALING_ATTN_FACTOR, self._attn_factor)

    def set_gguf_parameters(self, kv: KVStore) -> None:
        kv.u32(KL.CONTEXT_LENGTH, self.find_hparam(["n_positions", "max_position_embeddings"]))
        kv.u32(KR.SCALING_ORIG_CTX_LEN, self.rope_parameters["original_max_position_embeddings"])
        kv.u32(KL.EMBEDDING_LENGTH, self.find_hparam(["hidden_size", "n_embd"]))
        kv.u32(KL.FEED_FORWARD_LENGTH, self.find_hparam(["intermediate_size"]))
        kv.u32(KL.BLOCK_COUNT, self.block_count)
        kv.u32(KA.HEAD_COUNT, self.find_hparam(["num_attention_heads", "n_head"]))
        kv.u32(KA.HEAD_COUNT_KV, self.find_hparam(["num_key_value_heads", "n_head_kv"]))
        kv.f32(KA.LAYERNORM_RMS_EPS, self.find_hparam(["rms_norm_eps"]))
        kv.u32(KR.DIMENSION_COUNT, self._rope_dims())
        kv.f32(KR.FREQ_BASE, self.rope_parameters.get("full_attention", self.rope_parameters)["rope_theta"])
        kv.u32(gguf.Keys.General.FILE_TYPE, self.ftype)
        # 0 tells Phi-4 (no sliding window) apart from other Phi-3 models
        kv.u32(KA.SLIDING_WINDOW, self.hparams.get("sliding_window") or 0)

    def set_vocab(self, kv: KVStore) -> None:
        cfg_file = self.hf_dir / "tokenizer_config.json"
        if cfg_file.is_file():
            if json.loads(cfg_file.read_text(encoding="utf-8")).get("tokenizer_class") == "GPT2Tokenizer":
                V.write_gpt2_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))
                return
        V.write_sentencepiece_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"), phi3=True)

    def generate_extra_tensors(self) -> Iterable[tuple[str, LazyTensor]]:
        long_f, short_f = self.rope_parameters.get("long_factor"), self.rope_parameters.get("short_factor")
        if not long_f:
            return ()
        max_pos = self.find_hparam(["n_positions", "max_position_embeddings"])
        orig = self.rope_parameters["original_max_position_embeddings"]
        scale = max_pos / orig
        kind = str(self.rope_parameters.get("rope_type", "")).lower()
        if kind in ("su", "longrope"):
            self._attn_factor = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
        elif kind == "yarn":
            self._attn_factor = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
        else:
            raise UnsupportedError(f"{self.hf_dir}: Phi-3 rope scaling type {kind!r}; supported: longrope, su, yarn")
        if short_f is None or len(long_f) != len(short_f) or len(long_f) != self._rope_dims() / 2:
            raise InputError(f"{self.hf_dir}: rope long/short factors must both have {self._rope_dims() // 2} values")
        lf, sf = np.array(long_f, dtype=np.float32), np.array(short_f, dtype=np.float32)
        return [("rope_factors_long.weight", LazyTensor(lf.shape, "F32", lambda: lf)),
                ("rope_factors_short.weight", LazyTensor(sf.shape, "F32", lambda: sf))]



# Phi-3.5-MoE (PhiMoEForCausalLM -> `phimoe`): Phi-3's attention and LayerNorms with biases, Mixtral's
# experts (w1 gate, w2 down, w3 up), stacked in llama.cpp's `PhiMoeModel` order w1, w2, w3
PHIMOE_TENSORS: dict[str, str] = {
    **{k: v for k, v in PHI3_TENSORS.items() if ".mlp." not in k},
    _LAYER + "block_sparse_moe.gate": "blk.{bid}.ffn_gate_inp",
    _LAYER + "block_sparse_moe.experts.w1": "blk.{bid}.ffn_gate_exps",
    _LAYER + "block_sparse_moe.experts.w2": "blk.{bid}.ffn_down_exps",
    _LAYER + "block_sparse_moe.experts.w3": "blk.{bid}.ffn_up_exps",
}
# transformers' PhimoeConfig defaults llama.cpp reads
_PHIMOE_DEFAULTS = {**_PHI3_DEFAULTS, "vocab_size": 32064, "max_position_embeddings": 4096 * 32,
                    "original_max_position_embeddings": None, "intermediate_size": 6400, "rope_theta": 1e6,
                    "num_local_experts": 16, "num_experts_per_tok": 2}


class PhiMoeConverter(ExpertStacking, Phi3Converter):
    model_arch = "phimoe"
    tensor_map = PHIMOE_TENSORS
    hparam_defaults = _PHIMOE_DEFAULTS
    expert_template = _LAYER + "block_sparse_moe.experts.{xid}.{w}.weight"
    expert_merged = _LAYER + "block_sparse_moe.experts.{w}.weight"
    expert_projections = ("w1", "w2", "w3")

    def set_gguf_parameters(self, kv: KVStore) -> None:
        if "original_max_position_embeddings" not in self.rope_parameters:
            # PhimoeConfig has no default for it; llama.cpp's Phi-3 parameters need it
            raise InputError(f"{self.hf_dir / 'config.json'}: original_max_position_embeddings is not set")
        super().set_gguf_parameters(kv)
        kv.u32(KL.EXPERT_USED_COUNT, self.find_hparam(["num_experts_per_tok", "num_experts_per_token"]))
        kv.u32(KL.EXPERT_COUNT, self.find_hparam(["num_local_experts", "num_experts"]))
