"""The converter base class: the hooks an architecture overrides, and their llama.cpp defaults.

An architecture module subclasses `ModelConverter`, sets `model_arch` (the GGUF name), its
tensor-name table `tensor_map` (one HF spelling per row, `{bid}` for the block) and the config
defaults transformers would fill in, and overrides a few hooks as llama.cpp's converter does:
`set_gguf_parameters(kv)`, `set_vocab(kv)`, `modify_tensors(t, name, bid)` (a generator over
lazy tensors) and `generate_extra_tensors()`.

`pipeline.py` drives them: it plans every output tensor from the checkpoint headers alone
(names, shapes, types, byte sizes), writes the GGUF header, then computes and writes one tensor
at a time.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import gguf
import numpy as np

from llmtk.ggufio.constants import GGML_TYPE_TRAITS, GGMLType, LlamaFileType, row_size
from llmtk.errors import InputError, ShapeError, UnsupportedError
from llmtk.ggufio.reader import escape_control

from . import vocab as V
from .kv import KVStore
from .source import LazyTensor

logger = logging.getLogger(__name__)
KL = gguf.Keys.LLM
KA = gguf.Keys.Attention
KR = gguf.Keys.Rope

# GGUF base names (without .weight) that stay F32 whatever the outtype (llama.cpp's list of
# routing, positional and recurrent tensors)
ALWAYS_F32 = ("blk.{bid}.ffn_gate_inp", "blk.{bid}.ffn_gate_inp_shexp", "position_embd", "token_types",
              "blk.{bid}.ssm_conv1d", "blk.{bid}.shortconv.conv", "blk.{bid}.time_mix_first",
              "blk.{bid}.time_mix_w1", "blk.{bid}.time_mix_w2", "blk.{bid}.time_mix_decay_w1",
              "blk.{bid}.time_mix_decay_w2", "blk.{bid}.time_mix_lerp_fused")

# tensors llama.cpp drops by name suffix (attention masks, rotary caches)
SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


# ---------------------------------------------------------------------------------------------
# config.json schema: what the converters read, with types and ranges. Counts are bounded so a
# hostile config cannot make the converter loop or allocate without end (a 1e9-layer tensor map,
# 2^63 pad tokens); f32 values must be finite and fit a float32.
# ---------------------------------------------------------------------------------------------

MAX_LAYERS = 1 << 12      # no published model comes near; the tensor map grows with it
MAX_VOCAB = 1 << 20       # pad tokens are appended up to vocab_size
MAX_WIDTH = 1 << 20       # hidden, FFN and head sizes
MAX_HEADS = 1 << 14
MAX_EXPERTS = 1 << 12
U32_MAX = (1 << 32) - 1
F32_MAX = 3.4028234663852886e38

# config keys naming the expert router's score function, and gguf-py's ExpertGatingFuncType values
SCORE_FUNCTION_KEYS = ("score_function", "scoring_func", "score_func", "moe_router_activation",
                       "moe_router_activation_func", "expert_selection_fn")
EXPERT_GATING_FUNCS = {"softmax": 1, "sigmoid": 2, "sqrtsoftplus": 4}

# key -> (kind, low, high); kind "int" (not bool), "float" (int or float), "bool", "str",
# "object", "list"; None values are always accepted (transformers' "unset").
CONFIG_SCHEMA: dict[str, tuple[str, float, float]] = {
    **{k: ("int", 1, MAX_LAYERS) for k in ("n_layers", "num_hidden_layers", "n_layer", "num_layers")},
    **{k: ("int", 1, MAX_WIDTH) for k in ("hidden_size", "n_embd", "dim", "head_dim")},
    **{k: ("int", 0, MAX_WIDTH) for k in ("intermediate_size", "prefix_dense_intermediate_size",
                                          "dense_intermediate_size", "n_inner", "hidden_dim",
                                          "moe_intermediate_size", "shared_expert_intermediate_size")},
    **{k: ("int", 1, MAX_HEADS) for k in ("num_attention_heads", "n_head", "n_heads", "num_key_value_heads",
                                          "n_kv_heads", "n_head_kv")},
    "vocab_size": ("int", 1, MAX_VOCAB),
    **{k: ("int", 0, U32_MAX) for k in ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                        "max_sequence_length", "model_max_length",
                                        "original_max_position_embeddings", "sliding_window")},
    # (`sliding_window_pattern` is an int or an "LLLG" string: dense.sliding_window_pattern checks it)
    **{k: ("int", 0, MAX_EXPERTS) for k in ("num_local_experts", "num_experts", "n_routed_experts",
                                            "num_experts_per_tok", "num_experts_per_token", "top_k_experts")},
    **{k: ("float", 0, F32_MAX) for k in ("rms_norm_eps", "norm_eps", "layer_norm_eps", "layer_norm_epsilon",
                                          "norm_epsilon", "final_logit_softcapping", "attn_logit_softcapping")},
    **{k: ("float", 0, F32_MAX) for k in ("global_rope_theta", "rope_global_theta", "rope_theta_global",
                                          "rope_theta", "rotary_emb_base", "local_rope_theta", "rope_local_theta",
                                          "rope_theta_local", "swa_rope_theta", "rope_local_base_freq")},
    **{k: ("float", 0, 1) for k in ("partial_rotary_factor", "rope_pct", "rope_percent")},
    **{k: ("object", 0, 0) for k in ("rope_scaling", "rope_parameters", "text_config")},
    "tie_word_embeddings": ("bool", 0, 0),
    "is_causal": ("bool", 0, 0),
    **{k: ("float", -F32_MAX, F32_MAX) for k in ("logit_scale", "logits_scaling", "attention_multiplier",
                                                 "embedding_multiplier", "residual_multiplier")},
    "rotary_pct": ("float", 0, 1),
    **{k: ("str", 0, 0) for k in SCORE_FUNCTION_KEYS},
    **{k: ("int", 0, MAX_EXPERTS) for k in ("n_group", "topk_group")},
    # MoE and MLA hyperparameters the MoE converters read
    **{k: ("int", 0, MAX_EXPERTS) for k in ("moe_num_experts", "moe_k", "moe_num_shared_experts", "n_shared_experts",
                                            "interleave_moe_layer_step", "moe_layer_interval")},
    **{k: ("int", 0, MAX_LAYERS) for k in ("first_k_dense_replace", "moe_layer_start_index",
                                           "num_nextn_predict_layers")},
    **{k: ("int", 0, MAX_WIDTH) for k in ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                                          "v_head_dim", "intermediate_size_mlp", "shared_intermediate_size")},
    "routed_scaling_factor": ("float", 0, F32_MAX),
    "norm_topk_prob": ("bool", 0, 0),
}
# inside rope_scaling / rope_parameters (and their full_attention / sliding_attention parts)
ROPE_SCHEMA: dict[str, tuple[str, float, float]] = {
    "rope_type": ("str", 0, 0), "type": ("str", 0, 0),
    "factor": ("float", 0, F32_MAX), "rope_theta": ("float", 0, F32_MAX),
    "partial_rotary_factor": ("float", 0, 1),
    "original_max_position_embeddings": ("int", 1, U32_MAX),
    **{k: ("float", -F32_MAX, F32_MAX) for k in ("extrapolation_factor", "attention_factor", "attn_factor",
                                                 "beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor")},
    "long_factor": ("list", 0, 0), "short_factor": ("list", 0, 0),
    "full_attention": ("object", 0, 0), "sliding_attention": ("object", 0, 0),
}
_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "object": "an object", "list": "a list"}


def _check_value(where: str, key: str, v: Any, kind: str, lo: float, hi: float) -> None:
    ok = {"int": lambda: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda: isinstance(v, bool), "str": lambda: isinstance(v, str),
          "object": lambda: isinstance(v, dict), "list": lambda: isinstance(v, list)}[kind]()
    shown = escape_control(repr(v))[:60]
    if not ok:
        raise InputError(f"{where}: '{escape_control(key)}' is {shown}, expected {_KIND_NAMES[kind]}")
    if kind in ("int", "float"):
        if kind == "float" and not math.isfinite(v):
            raise InputError(f"{where}: '{escape_control(key)}' is {shown}, expected a finite number")
        if not lo <= v <= hi:
            raise InputError(f"{where}: '{escape_control(key)}' is {shown}, expected {lo:g}..{hi:g}")
    if kind == "list":
        for x in v:
            if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) or abs(x) > F32_MAX:
                raise InputError(f"{where}: '{escape_control(key)}' holds {escape_control(repr(x))[:40]}, "
                                 "expected finite numbers")


def _check_rope(where: str, key: str, rope: dict[str, Any], depth: int = 0) -> None:
    for k, v in rope.items():
        if k in ROPE_SCHEMA and v is not None:
            _check_value(where, f"{key}.{k}", v, *ROPE_SCHEMA[k])
            if isinstance(v, dict) and depth == 0:
                _check_rope(where, f"{key}.{k}", v, depth + 1)


def validate_config(config: Any, where: str) -> None:
    """Check config.json (and its `text_config`) against `CONFIG_SCHEMA`: every key the converters
    read has the right type and a plausible range; `where` names the file in messages."""
    if not isinstance(config, dict):
        raise InputError(f"{where}: is a JSON {type(config).__name__}, expected an object")
    for part, cfg in (("", config), ("text_config.", config.get("text_config"))):
        if not isinstance(cfg, dict):
            continue
        for key, (kind, lo, hi) in CONFIG_SCHEMA.items():
            v = cfg.get(key)
            if v is not None:
                _check_value(where, part + key, v, kind, lo, hi)
        for key in ("rope_scaling", "rope_parameters"):
            if isinstance(cfg.get(key), dict):
                _check_rope(where, part + key, cfg[key])


@dataclass
class PlannedTensor:
    """One output tensor: its GGUF name, lazy data, the type it is written as."""

    name: str
    data: LazyTensor
    qtype: GGMLType
    src_name: str
    bid: int | None

    @property
    def n_bytes(self) -> int:
        shape = self.data.shape
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        return rows * row_size(self.qtype, shape[-1]) if shape else GGML_TYPE_TRAITS[self.qtype].type_size


class ModelConverter:
    """Base of all architecture converters (llama.cpp's `TextModel`)."""

    model_arch: ClassVar[str]
    # HF tensor name without .weight/.bias -> GGUF name without suffix; `{bid}` marks the block
    tensor_map: ClassVar[dict[str, str]] = {}
    # config values transformers' config class would supply when config.json omits them
    hparam_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, hf_dir: Path, hparams: dict[str, Any], hf_arch: str):
        self.hf_dir = hf_dir
        self.hf_arch = hf_arch
        self.hparams = hparams
        self.ftype = LlamaFileType.MOSTLY_F16
        self.block_count = int(self.find_hparam(["n_layers", "num_hidden_layers", "n_layer", "num_layers"]))
        self.check_hparams()
        self._names = self._expand_tensor_map()
        # the checkpoint's tensors by name, set by the pipeline before `generate_extra_tensors`
        # (for hooks that read ahead, as llama.cpp's call `get_tensors()` there)
        self.source_tensors: dict[str, LazyTensor] = {}
        rp = self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {}
        if not isinstance(rp, dict):
            raise InputError(f"{self.hf_dir / 'config.json'}: rope_scaling is {escape_control(repr(rp))[:40]}, "
                             "expected an object")
        self.rope_parameters: dict[str, Any] = dict(rp)
        theta = self.find_hparam(["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                                  "rotary_emb_base"], optional=True)
        local = self.find_hparam(["local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                                  "rope_local_base_freq"], optional=True)
        partial = self.find_hparam(["partial_rotary_factor", "rope_pct", "rope_percent"], optional=True)
        orig_ctx = self.find_hparam(["original_max_position_embeddings"], optional=True)
        r = self.rope_parameters
        if "full_attention" not in r and "sliding_attention" not in r:
            if local is not None:
                r["sliding_attention"] = {"rope_theta": local}
            if "rope_theta" not in r and theta is not None:
                r["rope_theta"] = theta
            if "rope_type" not in r and r.get("type") is not None:
                r["rope_type"] = r["type"]
            if "partial_rotary_factor" not in r and partial is not None:
                r["partial_rotary_factor"] = partial
            if "original_max_position_embeddings" not in r and orig_ctx is not None:
                r["original_max_position_embeddings"] = orig_ctx

    # -- config ---------------------------------------------------------------------------------

    @classmethod
    def complete_hparams(cls, config: dict[str, Any]) -> dict[str, Any]:
        """config.json with transformers' defaults for what it omits (llama.cpp reads
        `AutoConfig.to_dict()`); subclasses add derived values."""
        hp = {**cls.hparam_defaults, **config}
        if isinstance(hp.get("text_config"), dict):
            hp = {**hp, **hp["text_config"]}
        if hp.get("num_key_value_heads") is None and hp.get("num_attention_heads") is not None:
            hp["num_key_value_heads"] = hp["num_attention_heads"]
        return hp

    def check_hparams(self) -> None:
        """The completed hparams are consistent: the head count divides the width, kv heads
        divide heads, and the values the converter writes are present."""
        where = str(self.hf_dir / "config.json")
        n_embd = self.find_hparam(["hidden_size", "n_embd", "dim"])
        n_head = self.find_hparam(["num_attention_heads", "n_head", "n_heads"])
        n_kv = self.find_hparam(["num_key_value_heads", "n_kv_heads", "n_head_kv"], optional=True)
        if self.hparams.get("head_dim") is None and n_embd % n_head:
            raise InputError(f"{where}: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
        if n_kv is not None and n_head % n_kv:
            raise InputError(f"{where}: num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")

    def find_hparam(self, keys: Iterable[str], optional: bool = False) -> Any:
        keys = list(keys)
        for k in keys:
            if self.hparams.get(k) is not None:  # a JSON null counts as not set
                return self.hparams[k]
        if optional:
            return None
        raise InputError(f"{self.hf_dir / 'config.json'}: none of {keys} is set")

    # -- names ------------------------------------------------------------------------------------

    def _expand_tensor_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for hf, gg in self.tensor_map.items():
            if "{bid}" in hf:
                for bid in range(self.block_count):
                    out[hf.format(bid=bid)] = gg.format(bid=bid)
            else:
                out[hf] = gg
        return out

    def map_tensor_name(self, name: str, suffixes: tuple[str, ...] = (".weight", ".bias")) -> str:
        """GGUF name of an HF tensor; an unmappable tensor is an error, never dropped."""
        if name in self._names:
            return self._names[name]
        for suffix in suffixes:
            if name.endswith(suffix) and (base := name[: -len(suffix)]) in self._names:
                return self._names[base] + suffix
        raise UnsupportedError(f"{self.hf_dir}: cannot map tensor {name!r} of {self.hf_arch} to a GGUF name "
                               f"(the {self.model_arch} converter knows "
                               f"{', '.join(sorted({h.replace('{bid}', 'N') for h in self.tensor_map}))})")

    def gguf_name(self, template: str, bid: int | None = None, suffix: str = ".weight") -> str:
        return template.format(bid=bid) + suffix

    # -- hooks ------------------------------------------------------------------------------------

    def filter_tensors(self, name: str) -> str | None:
        """Rename or drop (None) a checkpoint tensor before conversion; text models skip
        multimodal towers as llama.cpp does."""
        if name.startswith(("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.")) or any(
                s in name for s in ("visual.", "vision.", "audio.", "vision_", "audio_", "projector.",
                                    "multi_modal_projector", "patch_embed")):
            return None
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        return name.replace("language_model.", "")

    def modify_tensors(self, t: LazyTensor, name: str, bid: int | None) -> Iterator[tuple[str, LazyTensor]]:
        yield self.map_tensor_name(name), t

    def generate_extra_tensors(self) -> Iterable[tuple[str, LazyTensor]]:
        return ()

    def finish_tensors(self) -> None:
        """Called after the last tensor: buffered (expert) tensors left over are an error."""

    def written_file_type(self, ftype: LlamaFileType) -> LlamaFileType:
        """`general.file_type` for a float outtype: llama.cpp's `prepare_metadata` calls the output
        of an MXFP4 checkpoint (`quantization_config.quant_method` "mxfp4") MXFP4_MOE, since its
        expert tensors keep their MXFP4 blocks."""
        qc = self.hparams.get("quantization_config")
        if isinstance(qc, dict) and qc.get("quant_method") == "mxfp4" and ftype in (
                LlamaFileType.ALL_F32, LlamaFileType.MOSTLY_F16, LlamaFileType.MOSTLY_BF16):
            return LlamaFileType.MOSTLY_MXFP4_MOE
        return ftype

    def set_early_parameters(self, kv: KVStore) -> None:
        """Keys llama.cpp adds while preparing tensors, so they land right after the architecture."""

    def set_gguf_parameters(self, kv: KVStore) -> None:
        """The generic `<arch>.*` hyperparameters (llama.cpp's `TextModel.set_gguf_parameters`)."""
        kv.u32(KL.BLOCK_COUNT, self.block_count)
        if (n_ctx := self.find_hparam(["max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                       "max_sequence_length", "model_max_length"], optional=True)) is not None:
            kv.u32(KL.CONTEXT_LENGTH, n_ctx)
        if (n_embd := self.find_hparam(["hidden_size", "n_embd", "dim"], optional=True)) is not None:
            kv.u32(KL.EMBEDDING_LENGTH, n_embd)
        if (n_ff := self.find_hparam(["prefix_dense_intermediate_size", "dense_intermediate_size",
                                      "intermediate_size", "n_inner", "hidden_dim"], optional=True)) is not None:
            kv.u32(KL.FEED_FORWARD_LENGTH, n_ff)
        if (n_head := self.find_hparam(["num_attention_heads", "n_head", "n_heads"], optional=True)) is not None:
            kv.u32(KA.HEAD_COUNT, n_head)
        if (n_head_kv := self.find_hparam(["num_key_value_heads", "n_kv_heads"], optional=True)) is not None:
            kv.u32(KA.HEAD_COUNT_KV, n_head_kv)
        if self.hparams.get("is_causal") is False:
            kv.bool(KA.CAUSAL, False)
        rope = self.rope_parameters.get("full_attention", self.rope_parameters)
        if (rope_type := rope.get("rope_type")) is not None:
            factor = rope.get("factor")
            if rope_type == "linear" and factor is not None:
                kv.str(KR.SCALING_TYPE, "linear")
                kv.f32(KR.SCALING_FACTOR, factor)
            elif rope_type == "yarn" and factor is not None:
                kv.str(KR.SCALING_TYPE, "yarn")
                kv.f32(KR.SCALING_FACTOR, factor)
                kv.u32(KR.SCALING_ORIG_CTX_LEN, rope["original_max_position_embeddings"])
                for key, names in ((KR.SCALING_YARN_EXT_FACTOR, ("extrapolation_factor",)),
                                   (KR.SCALING_YARN_ATTN_FACTOR, ("attention_factor", "attn_factor")),
                                   (KR.SCALING_YARN_BETA_FAST, ("beta_fast",)),
                                   (KR.SCALING_YARN_BETA_SLOW, ("beta_slow",))):
                    v = next((rope[n] for n in names if rope.get(n) is not None), None)
                    if v is not None:
                        kv.f32(key, v)
            elif rope_type in ("su", "longrope"):
                kv.str(KR.SCALING_TYPE, "longrope")
            elif rope_type not in ("dynamic", "default") and rope_type.lower() != "llama3":
                logger.warning("unknown RoPE type %r ignored", rope_type)
        if (theta := rope.get("rope_theta")) is not None:
            kv.f32(KR.FREQ_BASE, theta)
        if (local := self.rope_parameters.get("sliding_attention", {}).get("rope_theta")) is not None:
            kv.f32(KR.FREQ_BASE_SWA, local)
        if (eps := self.find_hparam(["rms_norm_eps", "norm_eps"], optional=True)) is not None:
            kv.f32(KA.LAYERNORM_RMS_EPS, eps)
        if (eps := self.find_hparam(["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"],
                                    optional=True)) is not None:
            kv.f32(KA.LAYERNORM_EPS, eps)
        if (n := self.find_hparam(["num_local_experts", "num_experts", "n_routed_experts"],
                                  optional=True)) is not None:
            kv.u32(KL.EXPERT_COUNT, n)
        if (n := self.find_hparam(["num_experts_per_tok", "num_experts_per_token", "top_k_experts"],
                                  optional=True)) is not None:
            kv.u32(KL.EXPERT_USED_COUNT, n)
        if (n := self.hparams.get("n_group")) is not None:
            kv.u32(KL.EXPERT_GROUP_COUNT, n)
        if (n := self.hparams.get("topk_group")) is not None:
            kv.u32(KL.EXPERT_GROUP_USED_COUNT, n)
        if (score := self.find_hparam(SCORE_FUNCTION_KEYS, optional=True)) is not None:
            if score not in EXPERT_GATING_FUNCS:
                raise UnsupportedError(f"{self.hf_dir}: expert gating function {score!r}; supported: "
                                       f"{', '.join(EXPERT_GATING_FUNCS)}")
            kv.u32(KL.EXPERT_GATING_FUNC, EXPERT_GATING_FUNCS[score])
        if (head_dim := self.hparams.get("head_dim")) is not None:
            kv.u32(KA.KEY_LENGTH, head_dim)
            kv.u32(KA.VALUE_LENGTH, head_dim)
        kv.u32(gguf.Keys.General.FILE_TYPE, self.ftype)

    def set_vocab(self, kv: KVStore) -> None:
        V.write_gpt2_vocab(kv, self.hf_dir, self.hparams.get("vocab_size"))

    # -- helpers for subclasses -----------------------------------------------------------------

    def stack_experts(self, buffers: dict[int, dict[str, LazyTensor]], bid: int, name: str, t: LazyTensor,
                      n_experts: int, names: Iterable[tuple[str, str]]) -> Iterator[tuple[str, LazyTensor]]:
        """Buffer per-expert tensors of block `bid`; once all `len(names) * n_experts` arrived,
        yield one stacked tensor per (HF template with {xid}, merged HF name) in `names` order."""
        names = list(names)
        if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
            raise InputError(f"{self.hf_dir / 'config.json'}: the number of experts is {n_experts!r}, "
                             f"but tensor {escape_control(name)} is an expert's")
        layer = buffers.setdefault(bid, {})
        layer[name] = t
        if len(layer) < n_experts * len(names):
            return
        for template, merged in names:
            try:
                parts = [layer.pop(template.format(bid=bid, xid=x)) for x in range(n_experts)]
            except KeyError as e:
                raise InputError(f"{self.hf_dir}: expert tensor {e} of block {bid} is missing "
                                 f"({n_experts} experts in config.json)") from None
            try:
                stacked = LazyTensor.stack(parts)
            except ShapeError as e:
                raise ShapeError(f"{self.hf_dir}: {merged.format(bid=bid)}: {e}") from None
            yield self.map_tensor_name(merged.format(bid=bid)), stacked

    def check_buffers_empty(self, buffers: dict[int, dict[str, LazyTensor]]) -> None:
        left = [k for d in buffers.values() for k in d]
        if left:
            raise InputError(f"{self.hf_dir}: expert tensors left unmerged (an expert is missing?): {left[:6]}")
