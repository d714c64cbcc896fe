"""Llama family: LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM -> GGUF arch `llama`,
and the architectures llama.cpp converts as `LlamaModel` subclasses: Arcee, SmolLM3, Apertus, Granite.

llama.cpp's `LlamaModel`: Q and K rows are permuted from HF's rotate-half layout back to the
interleaved RoPE layout GGUF expects, Mixtral's per-expert w1/w2/w3 are stacked into 3-D
`ffn_{gate,down,up}_exps`, Llama-3 RoPE scaling becomes a `rope_freqs` tensor. The subclasses
change the arch name and tensor set, plus Apertus's xIELU parameters (per-layer scalars turned
into metadata) and Granite's multipliers.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Iterator

import gguf
import numpy as np

from llmtk.errors import ShapeError

from . import vocab as V
from .base import KA, KL, KR, ModelConverter
from .dense import dense_tensor_map, llama3_rope_factors, rope_freqs_tensor
from .kv import KVStore
from .source import LazyTensor

logger = logging.getLogger(__name__)

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
        dim = self.hparams.get("head_dim") or self.hparams["hidden_size"] // self.hparams["num_attention_heads"]
        return [rope_freqs_tensor(llama3_rope_factors(rope, dim, 8.0))]


class MistralConverter(LlamaConverter):
    hparam_defaults = _MISTRAL_DEFAULTS


class MixtralConverter(LlamaConverter):
    hparam_defaults = _MIXTRAL_DEFAULTS


class ArceeConverter(LlamaConverter):
    """ArceeForCausalLM: Llama with a ReLU^2 MLP and no gate projection."""

    model_arch = "arcee"
    tensor_map = dense_tensor_map("output rope_freqs attn_norm ffn_norm")
    hparam_defaults = {**_LLAMA_DEFAULTS, "vocab_size": 32000, "max_position_embeddings": 4096,
                       "intermediate_size": 18432, "rms_norm_eps": 1e-5}


class SmolLM3Converter(LlamaConverter):
    """SmolLM3ForCausalLM: Llama whose NoPE layers llama.cpp fixes by its own rule (every 4th)."""

    model_arch = "smollm3"
    tensor_map = dense_tensor_map("output rope_freqs attn_norm ffn_norm ffn_gate")
    hparam_defaults = {**_LLAMA_DEFAULTS, "vocab_size": 128256, "max_position_embeddings": 32768,
                       "rope_theta": 2_000_000.0, "intermediate_size": 11008, "tie_word_embeddings": True}


class ApertusConverter(LlamaConverter):
    """ApertusForCausalLM: no RoPE permutation, Q/K norms, an xIELU MLP whose four per-layer
    scalars become `xielu.*` arrays (llama.cpp's `ApertusModel.modify_tensors`)."""

    model_arch = "apertus"
    undo_permute = False
    tensor_map = dense_tensor_map("output rope_freqs attn_norm ffn_norm attn_q_norm attn_k_norm")
    hparam_defaults = {**_LLAMA_DEFAULTS, "vocab_size": 131072, "max_position_embeddings": 65536,
                       "rms_norm_eps": 1e-5, "rope_theta": 12_000_000.0, "intermediate_size": 14336}
    XIELU = (("alpha_n", gguf.Keys.xIELU.ALPHA_N), ("alpha_p", gguf.Keys.xIELU.ALPHA_P),
             ("beta", gguf.Keys.xIELU.BETA), ("eps", gguf.Keys.xIELU.EPS))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._xielu: dict[str, dict[int, float]] = {p: {} for p, _ in self.XIELU}

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        for param, _ in self.XIELU:
            if name.endswith(f".act_fn.{param}"):
                if bid is None or int(np.prod(t.shape)) != 1:
                    raise ShapeError(f"{self.hf_dir}: {name} should be one scalar of a layer, "
                                     f"has shape {list(t.shape)}")
                self._xielu[param][bid] = float(np.float32(t.numpy().reshape(())))
                return
        yield from super().modify_tensors(t, name, bid)

    def set_early_parameters(self, kv: KVStore) -> None:
        for param, key in self.XIELU:
            values = self._xielu[param]
            if len(values) == self.block_count:
                kv.f32s(key, [values[b] for b in sorted(values)])


class GraniteConverter(LlamaConverter):
    """GraniteForCausalLM: Llama with embedding, residual, attention and logit multipliers; the
    config's head_dim is ignored (llama.cpp's `GraniteModel.set_gguf_parameters`)."""

    model_arch = "granite"
    tensor_map = dense_tensor_map("output attn_norm ffn_norm ffn_gate")
    hparam_defaults = {**_LLAMA_DEFAULTS, "vocab_size": 32000, "rms_norm_eps": 1e-6}
    MULTIPLIERS = (("attention_multiplier", KA.SCALE), ("embedding_multiplier", KL.EMBEDDING_SCALE),
                   ("residual_multiplier", KL.RESIDUAL_SCALE), ("logits_scaling", KL.LOGIT_SCALE))

    def set_gguf_parameters(self, kv: KVStore) -> None:
        if head_dim := self.hparams.pop("head_dim", None):
            logger.warning("ignoring head_dim (%s) from config.json for Granite", head_dim)
        super().set_gguf_parameters(kv)
        for hp_key, key in self.MULTIPLIERS:
            if value := self.hparams.get(hp_key):
                kv.f32(key, value)
