"""Dense decoders llama.cpp converts with its plain `TextModel` hooks, and the tensor-name table they share.

`DENSE_TENSORS` holds every Hugging Face spelling of a dense decoder tensor once, with the GGUF
names it may stand for; `dense_tensor_map` picks, for one architecture, the rows whose GGUF name
the architecture has (llama.cpp's `TensorNameMap` restricted to the arch's `MODEL_TENSORS`). The
families here add only a few hooks on top:

- `seed_oss`, `starcoder2`: nothing beyond the generic hyperparameters;
- `olmo2`: post-norms (and Olmo3's sliding-window pattern when the config has one);
- `exaone4`: post-norms, the sliding/global layer pattern, Llama-3 RoPE factors;
- `glm4`: partial rotary dimension, GLM's special tokens, M-RoPE's Q/K reordering;
- `ernie4_5`: SentencePiece vocabulary, fused QKV and up/gate split apart.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Iterator

import gguf
import numpy as np

from llmtk.errors import InputError, ShapeError

from . import vocab as V
from .base import KA, KL, KR, ModelConverter
from .kv import KVStore
from .source import LazyTensor

_L = "model.layers.{bid}."
# HF spelling -> the GGUF names it may mean, most specific first: an architecture takes the first
# one it has (Gemma 2's and OLMo 2's `post_attention_layernorm` is a post-norm, Llama's the FFN norm)
DENSE_TENSORS: dict[str, tuple[str, ...]] = {
    "model.embed_tokens": ("token_embd",),
    "lm_head": ("output",),
    "model.norm": ("output_norm",),
    "rope_freqs": ("rope_freqs",),
    _L + "input_layernorm": ("blk.{bid}.attn_norm",),
    _L + "attention_layernorm": ("blk.{bid}.attn_norm",),                       # apertus
    _L + "self_attn.q_proj": ("blk.{bid}.attn_q",),
    _L + "self_attn.k_proj": ("blk.{bid}.attn_k",),
    _L + "self_attn.v_proj": ("blk.{bid}.attn_v",),
    _L + "self_attn.o_proj": ("blk.{bid}.attn_output",),
    _L + "self_attn.q_norm": ("blk.{bid}.attn_q_norm",),
    _L + "self_attn.k_norm": ("blk.{bid}.attn_k_norm",),
    _L + "post_attention_layernorm": ("blk.{bid}.post_attention_norm", "blk.{bid}.ffn_norm"),
    _L + "post_self_attn_layernorm": ("blk.{bid}.post_attention_norm",),        # glm4
    _L + "pre_feedforward_layernorm": ("blk.{bid}.ffn_norm",),                  # gemma2, gemma3
    _L + "feedforward_layernorm": ("blk.{bid}.ffn_norm",),                      # apertus
    _L + "post_feedforward_layernorm": ("blk.{bid}.post_ffw_norm",),
    _L + "post_mlp_layernorm": ("blk.{bid}.post_ffw_norm",),                    # glm4
    _L + "mlp.gate_proj": ("blk.{bid}.ffn_gate",),
    _L + "mlp.up_proj": ("blk.{bid}.ffn_up",),
    _L + "mlp.down_proj": ("blk.{bid}.ffn_down",),
    _L + "mlp.gate_up_proj": ("blk.{bid}.ffn_up",),                             # glm4: kept fused
    _L + "mlp.c_fc": ("blk.{bid}.ffn_up",),                                     # starcoder2
    _L + "mlp.c_proj": ("blk.{bid}.ffn_down",),
}

# the tensors every dense decoder here has (GGUF names, block ones without `blk.{bid}.`)
_CORE = "token_embd output_norm attn_q attn_k attn_v attn_output ffn_down ffn_up"


def dense_tensor_map(tensors: str, **forced: str) -> dict[str, str]:
    """HF name -> GGUF name for an architecture having the space-separated GGUF `tensors` (block
    tensors without `blk.{bid}.`; the `_CORE` set is always included): each `DENSE_TENSORS` row
    mapped to its first GGUF name the arch has, rows it has none of left out (so such a tensor in
    a checkpoint is an error, as in llama.cpp). `forced` sets block rows by their HF name without
    the `model.layers.{bid}.` prefix (`post_attention_layernorm="ffn_norm"`)."""
    have = set(_CORE.split()) | set(tensors.split())
    full = {n if n in ("token_embd", "output", "output_norm", "rope_freqs") else f"blk.{{bid}}.{n}" for n in have}
    out: dict[str, str] = {}
    for hf, candidates in DENSE_TENSORS.items():
        pick = next((c for c in candidates if c in full), None)
        if pick is not None:
            out[hf] = pick
    for key, gg in forced.items():
        out[_L + key] = f"blk.{{bid}}.{gg}"
    return out


def llama3_rope_factors(rope: dict[str, Any], dim: int, default_factor: float) -> np.ndarray:
    """Per-frequency divisors of Llama-3 RoPE scaling (llama.cpp's `generate_extra_tensors` of
    `LlamaModel` and `Exaone4Model`, which differ only in the default factor): high frequencies
    kept, low ones divided by `factor`, a smooth ramp between the two wavelength limits."""
    base = rope.get("rope_theta", 10000.0)
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope.get("factor", default_factor)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for f in freqs:  # float32 scalars, as llama.cpp's torch tensors
        wavelen = _torch_rdiv(2 * math.pi, f)
        if wavelen < high_wavelen:
            factors.append(1)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (_torch_rdiv(old_ctx, wavelen) - np.float32(low)) / np.float32(high - low)
            factors.append(_torch_rdiv(1, (np.float32(1) - smooth) / np.float32(factor) + smooth))
    return np.array(factors, dtype=np.float32)


def _torch_rdiv(num: float, x: np.float32) -> np.float32:
    """`num / x` for a float32 tensor `x` as torch computes it (`Tensor.__rtruediv__` is the
    reciprocal times `num`, two float32 roundings), which the factors' last bit depends on."""
    return np.float32(np.float32(1) / x) * np.float32(num)


def rope_freqs_tensor(factors: np.ndarray) -> tuple[str, LazyTensor]:
    return "rope_freqs.weight", LazyTensor(factors.shape, "F32", lambda: factors)


def sliding_window_pattern(hp: dict[str, Any], n_layers: int) -> list[bool] | None:
    """Which layers use sliding-window attention, from `layer_types` or an int/`"LLLG"`-string
    `sliding_window_pattern` (llama.cpp's `Exaone4Model.set_gguf_parameters`); None when neither
    gives one entry per layer."""
    if isinstance(hp.get("layer_types"), list):
        return [t == "sliding_attention" for t in hp["layer_types"]]
    pattern = hp.get("sliding_window_pattern")
    if isinstance(pattern, str) and pattern:
        out = [pattern[i % len(pattern)] == "L" for i in range(n_layers)]
    elif isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        out = [(i + 1) % pattern != 0 for i in range(n_layers)]
    else:
        return None
    return out if len(out) == n_layers else None


class SeedOssConverter(ModelConverter):
    """SeedOssForCausalLM: Q/K/V biases, a post-attention norm, no extra hyperparameters."""

    model_arch = "seed_oss"
    tensor_map = dense_tensor_map("output attn_norm post_attention_norm ffn_gate")
    hparam_defaults = {"vocab_size": 155136, "max_position_embeddings": 524288, "rms_norm_eps": 1e-6,
                       "rope_theta": 10000.0, "intermediate_size": 27648, "head_dim": 128}


class Starcoder2Converter(ModelConverter):
    """Starcoder2ForCausalLM: LayerNorm with bias, GELU MLP (`c_fc`/`c_proj`), biases everywhere."""

    model_arch = "starcoder2"
    tensor_map = dense_tensor_map("output rope_freqs attn_norm ffn_norm")
    hparam_defaults = {"vocab_size": 49152, "max_position_embeddings": 4096, "norm_epsilon": 1e-5,
                       "rope_theta": 10000.0, "intermediate_size": 12288}


class Olmo2Converter(ModelConverter):
    """Olmo2ForCausalLM: post-attention and post-FFN norms, Q/K norms over all heads."""

    model_arch = "olmo2"
    tensor_map = dense_tensor_map("output post_attention_norm attn_q_norm attn_k_norm post_ffw_norm ffn_gate")
    hparam_defaults = {"vocab_size": 50304, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
                       "rope_theta": 10000.0, "intermediate_size": 11008}

    def set_gguf_parameters(self, kv: KVStore) -> None:
        """llama.cpp's `Olmo2Model`: Olmo3's sliding window, every 4th layer global by default."""
        super().set_gguf_parameters(kv)
        if self.hparams.get("sliding_window") is not None:
            kv.u32(KA.SLIDING_WINDOW, self.hparams["sliding_window"])
            if isinstance(self.hparams.get("layer_types"), list):
                pattern = [t == "sliding_attention" for t in self.hparams["layer_types"]]
            else:
                pattern = [(i + 1) % 4 != 0 for i in range(self.block_count)]
            kv.bools(KA.SLIDING_WINDOW_PATTERN, pattern)


class Exaone4Converter(ModelConverter):
    """Exaone4ForCausalLM: post-norms, Q/K norms, sliding/global layers, Llama-3 RoPE factors."""

    model_arch = "exaone4"
    tensor_map = dense_tensor_map("output rope_freqs post_attention_norm attn_q_norm attn_k_norm post_ffw_norm "
                                  "ffn_gate")
    hparam_defaults = {"vocab_size": 102400, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
                       "rope_theta": 10000.0, "intermediate_size": 16384}

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.u32(KL.VOCAB_SIZE, self.hparams["vocab_size"])
        if self.hparams.get("sliding_window") is not None:
            kv.u32(KA.SLIDING_WINDOW, self.hparams["sliding_window"])
            if (pattern := sliding_window_pattern(self.hparams, self.block_count)) is not None:
                kv.bools(KA.SLIDING_WINDOW_PATTERN, pattern)

    def generate_extra_tensors(self) -> Iterable[tuple[str, LazyTensor]]:
        rope = self.rope_parameters.get("full_attention", self.rope_parameters)
        if str(rope.get("rope_type", "")).lower() != "llama3":
            return ()
        dim = self.hparams.get("head_dim") or self.hparams["hidden_size"] // self.hparams["num_attention_heads"]
        return [rope_freqs_tensor(llama3_rope_factors(rope, dim, 16.0))]


class Glm4Converter(ModelConverter):
    """Glm4ForCausalLM: fused gate/up kept as `ffn_up`, post-norms, rotary over part of each head."""

    model_arch = "glm4"
    tensor_map = dense_tensor_map("output rope_freqs attn_norm ffn_norm post_attention_norm post_ffw_norm",
                                  post_attention_layernorm="ffn_norm")
    hparam_defaults = {"vocab_size": 151552, "max_position_embeddings": 131072, "rms_norm_eps": 1.5625e-07,
                       "rope_theta": 10000.0, "intermediate_size": 13696, "partial_rotary_factor": 0.5, "head_dim": 128}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.partial_rotary_factor = self.rope_parameters.get("partial_rotary_factor", 0.5)
        self.use_mrope = "mrope_section" in self.rope_parameters

    def _head_dim(self) -> int:
        return self.hparams.get("head_dim") or self.hparams["hidden_size"] // self.hparams["num_attention_heads"]

    def set_gguf_parameters(self, kv: KVStore) -> None:
        super().set_gguf_parameters(kv)
        kv.u32(KR.DIMENSION_COUNT, int(self._head_dim() * self.partial_rotary_factor))

    def set_vocab(self, kv: KVStore) -> None:
        """llama.cpp's `Glm4Model.set_vocab`: the BPE vocabulary, then eos/eot/unk/bos from GLM's
        added tokens where tokenizer_config.json did not set them already."""
        added = V.added_vocab(self.hf_dir)
        for text in ("<|endoftext|>", "<|user|>"):
            if text not in added:
                raise InputError(f"{self.hf_dir}: the GLM-4 tokenizer has no added token {text!r}")
        V.write_gpt2_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"), [
            ("eos", added["<|endoftext|>"]), ("eot", added["<|user|>"]), ("unk", added["<|endoftext|>"]),
            ("bos", added["<|endoftext|>"])])

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if self.use_mrope and name.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")):
            head_dim, rot = self._head_dim(), int(self._head_dim() * self.partial_rotary_factor)
            if rot % 2 or not t.shape or t.shape[0] % head_dim:
                raise ShapeError(f"{self.hf_dir}: {name} rows {t.shape[:1]} do not split into heads of {head_dim} "
                                 f"with an even rotary part {rot}")
            t = t.map(lambda x: interleaved_to_neox(x, head_dim, rot))
        yield from super().modify_tensors(t, name, bid)


def interleaved_to_neox(w: np.ndarray, head_dim: int, rot: int) -> np.ndarray:
    """Per head, the rotary rows' even then odd entries, the rest unchanged (llama.cpp's
    `Glm4Model.normal_to_neox`: its M-RoPE kernel rotates NEOX-style halves)."""
    x = w.reshape(w.shape[0] // head_dim, head_dim, -1)  # (n_head, head_dim, cols)
    out = np.concatenate((x[:, 0:rot:2], x[:, 1:rot:2], x[:, rot:]), axis=1)
    return np.ascontiguousarray(out.reshape(w.shape))


class Ernie4_5Converter(ModelConverter):
    """Ernie4_5ForCausalLM: SentencePiece vocabulary; fused `qkv_proj` / `up_gate_proj` split."""

    model_arch = "ernie4_5"
    tensor_map = dense_tensor_map("output attn_norm ffn_norm ffn_gate")
    hparam_defaults = {"vocab_size": 103424, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                       "rope_theta": 500000.0, "intermediate_size": 3072, "head_dim": 128}

    def set_vocab(self, kv: KVStore) -> None:
        V.write_sentencepiece_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))
        cfg_file = self.hf_dir / "tokenizer_config.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            if "add_prefix_space" in cfg:
                kv.bool(gguf.Keys.Tokenizer.ADD_PREFIX, cfg["add_prefix_space"])

    def filter_tensors(self, name: str) -> str | None:
        return super().filter_tensors(name.replace("ernie.", "model."))

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        if "qkv_proj" in name or "up_gate_proj" in name:
            n_head, n_kv = self.hparams["num_attention_heads"], self.hparams["num_key_value_heads"]
            head_dim = self.hparams.get("head_dim") or self.hparams["hidden_size"] // n_head
            if "qkv_proj" in name:
                parts = [("q_proj", n_head * head_dim), ("k_proj", n_kv * head_dim), ("v_proj", n_kv * head_dim)]
                fused = "qkv_proj"
            else:  # gate first, as llama.cpp splits it
                half = t.shape[0] // 2 if t.shape else 0
                parts, fused = [("gate_proj", half), ("up_proj", half)], "up_gate_proj"
            if not t.shape or sum(n for _, n in parts) != t.shape[0]:
                raise ShapeError(f"{self.hf_dir}: {name} has {t.shape[:1]} rows, expected "
                                 f"{' + '.join(str(n) for _, n in parts)} (config.json)")
            start = 0
            for part, n in parts:
                yield from super().modify_tensors(
                    t.map(lambda x, a=start, b=start + n: np.ascontiguousarray(x[a:b]), (n, *t.shape[1:])),
                    name.replace(fused, part), bid)
                start += n
            return
        yield from super().modify_tensors(t, name, bid)
