"""Llama family: LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM -> GGUF arch `llama`.

llama.cpp's `LlamaModel`: Q and K rows are permuted from HF's rotate-half layout back to the
interleaved RoPE layout GGUF expects, Mixtral's per-expert w1/w2/w3 are stacked into 3-D
`ffn_{gate,down,up}_exps`, Llama-3 RoPE scaling becomes a `rope_freqs` tensor.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Iterator

import gguf
import numpy as np

from llmtk.errors import ShapeError

from . import vocab as V
from .base import KL, KR, ModelConverter
from .kv import KVStore
from .source import LazyTensor

LLAMA_TENSORS: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "lm_head": "output",
    "model.norm": "output_norm",
    "rope_freqs": "rope_freqs",
    "model.layers.{bid}.input_layernorm": "blk.{bid}.attn_norm",
    "model.layers.{bid}.self_attn.q_proj": "blk.{bid}.attn_q",
    "model.layers.{bid}.self_attn.k_proj": "blk.{bid}.attn_k",
    "model.layers.{bid}.self_attn.v_proj": "blk.{bid}.attn_v",
    "model.layers.{bid}.self_attn.o_proj": "blk.{bid}.attn_output",
    "model.layers.{bid}.post_attention_layernorm": "blk.{bid}.ffn_norm",
    "model.layers.{bid}.mlp.gate_proj": "blk.{bid}.ffn_gate",
    "model.layers.{bid}.mlp.up_proj": "blk.{bid}.ffn_up",
    "model.layers.{bid}.mlp.down_proj": "blk.{bid}.ffn_down",
    # Mixtral: router and the stacked experts (llama.cpp's merged names)
    "model.layers.{bid}.block_sparse_moe.gate": "blk.{bid}.ffn_gate_inp",
    "layers.{bid}.feed_forward.experts.w1": "blk.{bid}.ffn_gate_exps",
    "layers.{bid}.feed_forward.experts.w2": "blk.{bid}.ffn_down_exps",
    "layers.{bid}.feed_forward.experts.w3": "blk.{bid}.ffn_up_exps",
}

# transformers' config defaults that llama.cpp reads (LlamaConfig, MistralConfig, MixtralConfig)
_LLAMA_DEFAULTS = {"vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                   "rope_theta": 10000.0, "intermediate_size": 11008, "tie_word_embeddings": False}
_MISTRAL_DEFAULTS = {"vocab_size": 32000, "max_position_embeddings": 4096 * 32, "rms_norm_eps": 1e-6,
                     "rope_theta": 10000.0, "intermediate_size": 14336, "head_dim": None}
_MIXTRAL_DEFAULTS = {**_MISTRAL_DEFAULTS, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "num_local_experts": 8,
                     "num_experts_per_tok": 2}


def permute_rope(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """HF rotate-half rows -> interleaved pairs per head (llama.cpp's `LlamaModel.permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = w.shape
    # (n_head, 2, head_dim/2, ...) -> (n_head, head_dim/2, 2, ...)
    return np.ascontiguousarray(w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2)
                                .reshape(shape))


class LlamaConverter(ModelConverter):
    model_arch = "llama"
    tensor_map = LLAMA_TENSORS
    hparam_defaults = _LLAMA_DEFAULTS
    undo_permute = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._experts: dict[int, dict[str, LazyTensor]] = {}

    @classmethod
    def complete_hparams(cls, config: dict[str, Any]) -> dict[str, Any]:
        hp = super().complete_hparams(config)
        if cls.hparam_defaults is _LLAMA_DEFAULTS and hp.get("head_dim") is None and \
                hp.get("hidden_size") is not None and hp.get("num_attention_heads"):
            # LlamaConfig derives head_dim; Mistral's and Mixtral's configs leave it None
            hp["head_dim"] = hp["hidden_size"] // hp["num_attention_heads"]
        return hp

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.u32(KL.VOCAB_SIZE, self.hparams["vocab_size"])
        rope_dim = self.hparams.get("head_dim") or self.hparams["hidden_size"] // self.hparams["num_attention_heads"]
        kv.u32(KR.DIMENSION_COUNT, rope_dim)

    def set_vocab(self, kv: KVStore) -> None:
        cfg_file = self.hf_dir / "tokenizer_config.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            if (prefix := cfg.get("add_prefix_space")) is not None:
                kv.bool(gguf.Keys.Tokenizer.ADD_PREFIX, prefix)
        vocab_size = self.hparams.get("vocab_size")
        if (self.hf_dir / "tokenizer.model").is_file():
            V.write_sentencepiece_vocab(kv, self.hf_dir, vocab_size)
        elif V.is_llama_hf_bpe(self.hf_dir):
            V.write_llama_hf_vocab(kv, self.hf_dir)
        else:
            V.write_gpt2_vocab(kv, self.hf_dir, vocab_size)
        if vocab_size == 32016:  # CodeLlama's infill tokens
            sv = V.SpecialVocab(self.hf_dir, types=("prefix", "suffix", "middle", "eot"))
            for typ, tid in (("prefix", 32007), ("suffix", 32008), ("middle", 32009), ("eot", 32010)):
                sv.set_id(typ, tid)
            sv.write(kv)
        if vocab_size == 49152:  # llama.cpp's rule for small Granite/SmolLM vocabularies
            kv.bool(gguf.Keys.Tokenizer.ADD_BOS, False)

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        n_head = self.find_hparam(["n_heads", "num_attention_heads"])
        n_kv = self.find_hparam(["n_kv_heads", "num_key_value_heads"])
        if self.undo_permute and name.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")):
            heads = n_head if "q_proj" in name or n_kv is None or n_head == n_kv else n_kv
            if not t.shape or t.shape[0] % (2 * heads):
                raise ShapeError(f"{self.hf_dir}: {name} has {t.shape[0] if t.shape else 0} rows, not a multiple of "
                                 f"2 x {heads} heads (config.json)")
        if self.undo_permute:
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                t = t.map(lambda x: permute_rope(x, n_head, n_head))
            if name.endswith(("k_proj.weight", "k_proj.bias")):
                t = t.map(lambda x: permute_rope(x, n_head, n_kv))
        if "block_sparse_moe.experts" in name:
            assert bid is not None
            yield from self.stack_experts(
                self._experts, bid, name, t, self.hparams["num_local_experts"],
                [(f"model.layers.{{bid}}.block_sparse_moe.experts.{{xid}}.{w}.weight",
                  f"layers.{{bid}}.feed_forward.experts.{w}.weight") for w in ("w1", "w2", "w3")])
            return
        yield from super().modify_tensors(t, name, bid)

    def finish_tensors(self) -> None:
        self.check_buffers_empty(self._experts)

    def generate_extra_tensors(self) -> Iterable[tuple[str, LazyTensor]]:
        rope = self.rope_parameters.get("full_attention", self.rope_parameters)
        if not rope or str(rope.get("rope_type", "")).lower() != "llama3":
            return ()
        base = rope.get("rope_theta", 10000.0)
        dim = self.hparams.get("head_dim") or self.hparams["hidden_size"] // self.hparams["num_attention_heads"]
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        factor = rope.get("factor", 8.0)
        low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
        old_ctx = rope.get("original_max_position_embeddings", 8192)
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        factors = []
        for f in freqs:
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                factors.append(1)
            elif wavelen > low_wavelen:
                factors.append(factor)
            else:
                smooth = (old_ctx / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        arr = np.array(factors, dtype=np.float32)
        return [("rope_freqs.weight", LazyTensor(arr.shape, "F32", lambda: arr))]


class MistralConverter(LlamaConverter):
    hparam_defaults = _MISTRAL_DEFAULTS


class MixtralConverter(LlamaConverter):
    hparam_defaults = _MIXTRAL_DEFAULTS

