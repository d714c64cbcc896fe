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

import numpy as np

from llmtk.errors import UnsupportedError
from llmtk.ggufio.reader import escape_control
from llmtk.registry import Registry

# bounds on hyperparameters read from GGUF metadata (far above any published model)
MAX_LAYERS = 1 << 12
MAX_WIDTH = 1 << 20
MAX_HEADS = 1 << 14
MAX_EXPERTS = 1 << 12
U32_MAX = (1 << 32) - 1
F32_MAX = 3.4028234663852886e38

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


ARCHS: Registry[ArchSpec] = Registry("GGUF architecture (llmtk.model)")
for _spec in (
    ArchSpec("llama", ROPE_NORMAL),                        # also mistral, smollm, mixtral (experts)
    ArchSpec("qwen2", ROPE_NEOX),                          # q/k/v biases are loaded when present
    ArchSpec("qwen3", ROPE_NEOX, qk_norm=True),
    ArchSpec("qwen3moe", ROPE_NEOX, qk_norm=True),
    ArchSpec("phi3", ROPE_NEOX, fused_gate_up=True, swa_honoured=False),
    ArchSpec("gemma3", ROPE_NEOX, act="gelu_tanh", qk_norm=True, post_norms=True, embed_scale=True,
             swa_pattern=6, attn_scale=_gemma3_attn_scale),
):
    ARCHS.add(_spec.name, _spec)
del _spec


def arch_spec(name: str) -> ArchSpec:
    """The spec of GGUF architecture `name`; unknown names list the supported ones."""
    return ARCHS[name]


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
    def from_metadata(cls, kv: dict[str, Any], n_vocab: int, spec: ArchSpec, *,
                      max_layers: int = MAX_LAYERS) -> "HParams":
        """Read and check `<arch>.*` metadata: every value of the type llama.cpp reads, in a
        plausible range, and consistent with the others (heads divide, n_rot fits the head);
        `max_layers` bounds block_count (the caller passes what the file's tensors can hold)."""
        a = spec.name

        def get(key: str, default: Any = None, required: bool = False) -> Any:
            full = f"{a}.{key}"
            if full not in kv:
                if required:
                    raise UnsupportedError(f"GGUF metadata lacks {full!r}, which a {a} model needs")
                return default
            return kv[full]

        def bad(key: str, v: Any, want: str) -> UnsupportedError:
            return UnsupportedError(f"GGUF metadata {a}.{key} is {escape_control(repr(v))[:60]}, expected {want}")

        def integer(key: str, default: Any = None, required: bool = False, lo: int = 0,
                    hi: int = U32_MAX) -> int:
            v = get(key, default, required)
            if isinstance(v, (list, tuple)):
                v = np.asarray(v)
            if isinstance(v, np.ndarray):  # per-layer arrays: accepted when uniform
                if v.ndim != 1 or not v.size or not np.issubdtype(v.dtype, np.integer):
                    raise bad(key, v, "an integer or a per-layer array of integers")
                vals = {int(x) for x in v}
                if len(vals) != 1:
                    raise UnsupportedError(f"{a}.{key} varies per layer ({sorted(vals)[:8]}), which llmtk.model "
                                           "does not support")
                v = vals.pop()
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise bad(key, v, "an integer")
            if not lo <= v <= hi:
                raise bad(key, v, f"{lo}..{hi}")
            return int(v)

        def real(key: str, default: float, required: bool = False, lo: float = -F32_MAX,
                 hi: float = F32_MAX) -> float:
            v = get(key, default, required)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise bad(key, v, "a number")
            if not (math.isfinite(v) and lo <= v <= hi):
                raise bad(key, v, f"a finite number in {lo:g}..{hi:g}")
            return float(v)

        def text(key: str, default: str) -> str:
            v = get(key, default)
            if not isinstance(v, str):
                raise bad(key, v, "a string")
            return v

        n_embd = integer("embedding_length", required=True, lo=1, hi=MAX_WIDTH)
        n_head = integer("attention.head_count", required=True, lo=1, hi=MAX_HEADS)
        n_head_kv = integer("attention.head_count_kv", n_head, lo=1, hi=n_head)
        if n_head % n_head_kv:
            raise UnsupportedError(f"GGUF metadata {a}.attention.head_count {n_head} is not a multiple of "
                                   f"head_count_kv {n_head_kv}")
        head_k = integer("attention.key_length", n_embd // n_head, lo=1, hi=MAX_WIDTH)
        head_v = integer("attention.value_length", n_embd // n_head, lo=1, hi=MAX_WIDTH)
        n_layer = integer("block_count", required=True, lo=1, hi=max_layers)
        n_ff = integer("feed_forward_length", 0, hi=MAX_WIDTH * 16)
        n_expert = integer("expert_count", 0, hi=MAX_EXPERTS)
        n_expert_used = integer("expert_used_count", 0, hi=n_expert)
        if n_expert and not n_expert_used:
            raise bad("expert_used_count", n_expert_used, f"1..{n_expert} for a model of {n_expert} experts")
        n_ff_exp = integer("expert_feed_forward_length", 0, hi=MAX_WIDTH * 16)
        if n_expert and n_ff_exp:
            n_ff = n_ff_exp
        scale = real("rope.scaling.factor", 0.0, lo=0.0) or real("rope.scale_linear", 0.0, lo=0.0)
        n_ctx_train = integer("context_length", 0)
        n_rot = integer("rope.dimension_count", head_k, lo=2, hi=head_k)
        if n_rot % 2:
            raise bad("rope.dimension_count", n_rot, "an even number")
        hp = cls(
            arch=a, n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head,
            n_head_kv=n_head_kv, head_k=head_k, head_v=head_v,
            n_rot=n_rot,
            eps=real("attention.layer_norm_rms_epsilon", 0.0, required=True, lo=float(np.finfo(np.float32).tiny), hi=1.0),  # > 0: an all-zero row divides by it
            rope_base=real("rope.freq_base", 10000.0, lo=1e-30),
            rope_base_swa=real("rope.freq_base_swa", 10000.0, lo=1e-30),
            freq_scale=1.0 if scale == 0.0 else 1.0 / scale,
            rope_scaling=text("rope.scaling.type", "linear"),
            rope_attn_factor=real("rope.scaling.attn_factor", 1.0),
            n_ctx_train=n_ctx_train,
            n_ctx_orig=integer("rope.scaling.original_context_length", n_ctx_train),
            n_expert=n_expert, n_expert_used=n_expert_used,
            expert_weights_scale=real("expert_weights_scale", 0.0),
            softcap=real("final_logit_softcapping", 0.0, lo=0.0),
        )
        if hp.rope_scaling not in ("linear", "none", "longrope"):
            raise UnsupportedError(f"{a}.rope.scaling.type {escape_control(hp.rope_scaling)!r} is not supported "
                                   "(supported: none, linear, longrope)")
        if a == "llama" and hp.n_rot != hp.head_k:
            raise UnsupportedError(f"llama.rope.dimension_count {hp.n_rot} differs from head size {hp.head_k}")
        n_swa = integer("attention.sliding_window", 0)
        if n_swa > 0 and spec.swa_honoured and spec.swa_pattern:
            pattern = get("attention.sliding_window_pattern", spec.swa_pattern)
            if isinstance(pattern, (int, np.integer)) and not isinstance(pattern, bool):
                p = integer("attention.sliding_window_pattern", spec.swa_pattern, hi=U32_MAX)
                # llama_hparams::set_swa_pattern: every p-th layer is dense, the others slide
                hp.is_swa = [p == 0 or (il % p) < (p - 1) for il in range(n_layer)]
            elif isinstance(pattern, (list, tuple, np.ndarray)) and len(pattern) == n_layer and \
                    np.asarray(pattern).ndim == 1 and np.asarray(pattern).dtype.kind in "bui":
                hp.is_swa = [bool(x) for x in pattern]
            else:
                raise bad("attention.sliding_window_pattern", pattern,
                          f"an integer or {n_layer} booleans (one per layer)")
            hp.n_swa = n_swa
        else:
            hp.is_swa = [False] * n_layer
        return hp

    @property
    def group(self) -> int:
        """Query heads per kv head (GQA)."""
        return self.n_head // self.n_head_kv
