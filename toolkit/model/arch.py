"""Architectures as data: one `ArchSpec` row per GGUF `general.architecture`, plus `HParams`.

Every supported architecture is the same pre-norm decoder; what differs is a handful of flags
(RoPE mode, activation, fused gate|up, q/k norms, gemma's extra norms and embedding scale,
sliding-window layers, MoE routing) read by `llmtk.model.model`. A new architecture is one row in
`ARCHS`, mirroring llama.cpp's `src/models/<arch>.cpp` graph builders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from llmtk.errors import UnsupportedError

# ggml rope modes: "normal" rotates adjacent pairs (x[2i], x[2i+1]) (llama: its q/k are permuted
# by the converter so this equals HF's rotate_half); "neox" rotates (x[i], x[i + n_rot/2]).
ROPE_NORMAL = "normal"
ROPE_NEOX = "neox"


@dataclass(frozen=True)
class ArchSpec:
    """How one GGUF architecture builds its graph (llama.cpp `src/models/<name>.cpp`)."""

    name: str
    rope_mode: str
    act: str = "silu"              # "silu" (SwiGLU) or "gelu_tanh" (GeGLU), ggml's LLM_FFN_SILU / LLM_FFN_GELU
    fused_gate_up: bool = False    # phi3: ffn_up holds gate | up (LLM_FFN_SWIGLU, sequential)
    qk_norm: bool = False          # qwen3, gemma3: RMS norm of each q/k head before RoPE
    post_norms: bool = False       # gemma3: post_attention_norm and post_ffw_norm around each block
    embed_scale: bool = False      # gemma3: embeddings times sqrt(n_embd)
    moe_norm_w: bool = True        # llama.cpp renormalises the top-k expert weights (build_moe_ffn norm_w)
    swa_pattern: int = 0           # default sliding-window pattern when the file has a window (gemma3: 6)
    swa_honoured: bool = True      # phi3: llama.cpp ignores the sliding window
    # hparams -> kq scale (None: 1/sqrt(head_dim))
    attn_scale: Callable[["HParams"], float] | None = None


def _gemma3_attn_scale(hp: "HParams") -> float:
    # gemma_pytorch: the 27B model (62 layers) scales by n_embd / n_head, the others by head_dim
    if hp.n_layer == 62:
        return 1.0 / math.sqrt(hp.n_embd / hp.n_head)
    return 1.0 / math.sqrt(hp.head_k)


ARCHS: dict[str, ArchSpec] = {a.name: a for a in (
    ArchSpec("llama", ROPE_NORMAL),                        # also mistral, smollm, mixtral (experts)
    ArchSpec("qwen2", ROPE_NEOX),                          # q/k/v biases are loaded when present
    ArchSpec("qwen3", ROPE_NEOX, qk_norm=True),
    ArchSpec("qwen3moe", ROPE_NEOX, qk_norm=True),
    ArchSpec("phi3", ROPE_NEOX, fused_gate_up=True, swa_honoured=False),
    ArchSpec("gemma3", ROPE_NEOX, act="gelu_tanh", qk_norm=True, post_norms=True, embed_scale=True,
             swa_pattern=6, attn_scale=_gemma3_attn_scale),
)}


def arch_spec(name: str) -> ArchSpec:
    """The spec of GGUF architecture `name`; unknown names list the supported ones."""
    try:
        return ARCHS[name]
    except KeyError:
        raise UnsupportedError(f"architecture {name!r} is not supported by llmtk.model; "
                               f"supported: {', '.join(sorted(ARCHS))}") from None


@dataclass
class HParams:
    """Hyper-parameters read from `<arch>.*` metadata, with llama.cpp's defaults."""

    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_k: int
    head_v: int
    n_rot: int
    eps: float
    rope_base: float = 10000.0
    rope_base_swa: float = 10000.0
    freq_scale: float = 1.0        # 1 / linear rope scaling factor
    rope_scaling: str = "linear"
    rope_attn_factor: float = 1.0
    n_ctx_train: int = 0
    n_ctx_orig: int = 0            # rope.scaling.original_context_length (longrope long/short switch)
    n_expert: int = 0
    n_expert_used: int = 0
    expert_weights_scale: float = 0.0
    n_swa: int = 0
    is_swa: list[bool] = field(default_factory=list)
    softcap: float = 0.0           # final logit soft-capping

    @classmethod
    def from_metadata(cls, kv: dict[str, Any], n_vocab: int, spec: ArchSpec) -> "HParams":
        a = spec.name

        def get(key: str, default: Any = None, required: bool = False) -> Any:
            full = f"{a}.{key}"
            if full not in kv:
                if required:
                    raise UnsupportedError(f"GGUF metadata lacks {full!r}, which a {a} model needs")
                return default
            return kv[full]

        def scalar(key: str, default: Any = None, required: bool = False) -> Any:
            v = get(key, default, required)
            if v is not None and not isinstance(v, (int, float, bool, str)):
                vals = {int(x) for x in v}  # per-layer arrays: accepted when uniform
                if len(vals) != 1:
                    raise UnsupportedError(f"{a}.{key} varies per layer ({sorted(vals)}), which llmtk.model does not support")
                v = vals.pop()
            return v

        n_embd = int(scalar("embedding_length", required=True))
        n_head = int(scalar("attention.head_count", required=True))
        n_head_kv = int(scalar("attention.head_count_kv", n_head))
        head_k = int(scalar("attention.key_length", n_embd // n_head))
        head_v = int(scalar("attention.value_length", n_embd // n_head))
        n_layer = int(scalar("block_count", required=True))
        n_ff = int(scalar("feed_forward_length", 0))
        n_expert = int(scalar("expert_count", 0))
        n_ff_exp = scalar("expert_feed_forward_length")
        if n_expert and n_ff_exp:
            n_ff = int(n_ff_exp)
        scale = float(get("rope.scaling.factor", 0.0) or get("rope.scale_linear", 0.0) or 0.0)
        n_ctx_train = int(get("context_length", 0))
        hp = cls(
            arch=a, n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head,
            n_head_kv=n_head_kv, head_k=head_k, head_v=head_v,
            n_rot=int(get("rope.dimension_count", head_k)),
            eps=float(get("attention.layer_norm_rms_epsilon", required=True)),
            rope_base=float(get("rope.freq_base", 10000.0)),
            rope_base_swa=float(get("rope.freq_base_swa", 10000.0)),
            freq_scale=1.0 if scale == 0.0 else 1.0 / scale,
            rope_scaling=str(get("rope.scaling.type", "linear")),
            rope_attn_factor=float(get("rope.scaling.attn_factor", 1.0)),
            n_ctx_train=n_ctx_train,
            n_ctx_orig=int(get("rope.scaling.original_context_length", n_ctx_train)),
            n_expert=n_expert, n_expert_used=int(scalar("expert_used_count", 0)),
            expert_weights_scale=float(get("expert_weights_scale", 0.0)),
            softcap=float(get("final_logit_softcapping", 0.0) or 0.0),
        )
        if hp.rope_scaling not in ("linear", "none", "longrope"):
            raise UnsupportedError(f"{a}.rope.scaling.type {hp.rope_scaling!r} is not supported "
                                   "(supported: none, linear, longrope)")
        if a == "llama" and hp.n_rot != hp.head_k:
            raise UnsupportedError(f"llama.rope.dimension_count {hp.n_rot} differs from head size {hp.head_k}")
        n_swa = int(get("attention.sliding_window", 0) or 0)
        if n_swa > 0 and spec.swa_honoured and spec.swa_pattern:
            pattern = get("attention.sliding_window_pattern", spec.swa_pattern)
            if isinstance(pattern, (int, float)):
                p = int(pattern)
                # llama_hparams::set_swa_pattern: every p-th layer is dense, the others slide
                hp.is_swa = [p == 0 or (il % p) < (p - 1) for il in range(n_layer)]
            else:
                hp.is_swa = [bool(x) for x in pattern]
            hp.n_swa = n_swa
        else:
            hp.is_swa = [False] * n_layer
        return hp

    @property
    def group(self) -> int:
        """Query heads per kv head (GQA)."""
        return self.n_head // self.n_head_kv
