"""Architectures as data: one `ArchSpec` row per GGUF `general.architecture`, plus `HParams`.

Every supported architecture is the same decoder; what differs is a handful of flags (RoPE mode
and NoPE layers, RMS norm or LayerNorm, pre- and/or post-norms, parallel attention and FFN,
activation, gated/fused/plain FFN, q/k norms, embedding and logit scales, soft-capping,
sliding-window layers, MoE routing) read by `llmtk.model.model`, plus at most one hook per arch for
what its `load_arch_hparams` reads beyond the common keys (`read_hparams`) or its kq scale
(`attn_scale`). A new architecture is one row in `ARCHS`, mirroring llama.cpp's
`src/models/<arch>.cpp` graph builders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np

from llmtk.errors import UnsupportedError
from llmtk.ggufio.constants import Key
from llmtk.ggufio.reader import escape_control
from llmtk.registry import Registry

from .moe import GATING_FUNCS, MoeSpec

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

NORM_RMS = "rms"
NORM_LAYER = "layer"


@dataclass(frozen=True)
class ArchSpec:
    """How one GGUF architecture builds its graph (llama.cpp `src/models/<name>.cpp`)."""

    name: str
    rope_mode: str
    act: str = "silu"              # "silu" (SwiGLU) or "gelu_tanh" (GeGLU), ggml's LLM_FFN_SILU / LLM_FFN_GELU
    fused_gate_up: bool = False    # phi3: ffn_up holds gate | up (LLM_FFN_SWIGLU, sequential)
    qk_norm: bool | str = False    # qwen3, gemma3: RMS norm of each q/k head before RoPE; "optional": when the file has them
    post_norms: bool = False       # gemma3: post_attention_norm and post_ffw_norm around each block
    embed_scale: bool = False      # gemma3: embeddings times sqrt(n_embd)
    moe: MoeSpec = MoeSpec()       # expert routing (llmtk.model.moe); MoE blocks are those with ffn_gate_inp
    mla: bool = False              # deepseek2: multi-head latent attention (llmtk.model.mla)
    ffn_norm: str = "ffn_norm"     # the FFN's pre-norm tensor (glm4moe, gpt-oss: post_attention_norm)
    swa_rope_same: bool = False    # gpt-oss, llama4: sliding layers rope with the full layers' base and scale
    swa_pattern: int = 0           # default sliding-window pattern when the file has a window (gemma3: 6)
    swa_honoured: bool = True      # phi3: llama.cpp ignores the sliding window
    swa_window: int = 0            # gemma2: the window when the file names none, the arch always slides
    # build_norm's kind: NORM_RMS (LLM_NORM_RMS) or NORM_LAYER (LLM_NORM, LayerNorm plus `<name>.bias`
    # where the file has one; its epsilon is attention.layer_norm_epsilon)
    norm: str = NORM_RMS
    pre_norms: bool = True         # olmo2, exaone4: no attn_norm/ffn_norm, only the post_norms
    parallel: bool = False         # command-r, cohere2: attention and FFN both read attn_norm's output
    ffn_gated: bool = True         # False: up -> act -> down (starcoder2, arcee, apertus; `act` names it)
    nope_every: int = 0            # smollm3: every n-th layer has no RoPE (llama_hparams n_no_rope_layer_step)
    rope_swa_only: bool = False    # cohere2, exaone4: when layers slide, only the sliding ones get RoPE
    attn_softcap: float = 0.0      # gemma2: attention logits soft-capped at the file's value, this by default
    final_softcap: float = 0.0     # gemma2: final logits soft-capped at the file's value, this by default
    # hparams -> kq scale (None: 1/sqrt(head_dim))
    attn_scale: Callable[["HParams"], float] | None = None
    # (hparams, metadata) -> None: what an arch's load_arch_hparams reads beyond the common keys
    read_hparams: Callable[["HParams", "Meta"], None] | None = None


def _gemma3_attn_scale(hp: "HParams") -> float:
    # gemma_pytorch: the 27B model (62 layers) scales by n_embd / n_head, the others by head_dim
    if hp.n_layer == 62:
        return 1.0 / math.sqrt(hp.n_embd / hp.n_head)
    return 1.0 / math.sqrt(hp.head_k)


def _gemma2_attn_scale(hp: "HParams") -> float:
    # llama_model_gemma2::load_arch_hparams: the 27B model (46 layers) scales by n_embd / n_head
    # (integer division), the others by head_dim
    if hp.n_layer == 46:
        return 1.0 / math.sqrt(float(hp.n_embd // hp.n_head))
    return 1.0 / math.sqrt(hp.head_k)


def granite_hparams(hp: "HParams", meta: "Meta") -> None:
    """The granite family's multipliers (llama_model_granite/granite_moe::load_arch_hparams):
    logits divided by logit_scale (required), embeddings and each block's attention and FFN
    outputs scaled, the kq scale replaced, where the file says."""
    hp.logit_scale = float(np.float32(1.0) / np.float32(meta.real("logit_scale", 0.0, required=True,
                                                                   lo=float(np.finfo(np.float32).tiny))))
    hp.residual_scale = meta.real("residual_scale", 0.0)
    hp.embedding_scale = meta.real("embedding_scale", 0.0)
    hp.attention_scale = meta.real("attention.scale", 0.0)


def _granite_hparams(hp: "HParams", meta: "Meta") -> None:
    # granite's multipliers, and rope.scaling.finetuned as its RoPE switch (true by default)
    granite_hparams(hp, meta)
    finetuned = meta.get("rope.scaling.finetuned", True)
    if not isinstance(finetuned, (bool, np.bool_)):
        raise meta.bad("rope.scaling.finetuned", finetuned, "a boolean")
    if not finetuned:
        hp.use_rope = [False] * hp.n_layer


def _cohere_hparams(hp: "HParams", meta: "Meta", *, sliding: bool) -> None:
    # llama_model_command_r / llama_model_cohere2::load_arch_hparams: logits times logit_scale
    # (cohere2 requires it and a sliding window); the graphs rope with the global base and scale
    v = meta.real("logit_scale", 0.0, required=sliding)
    hp.logit_scale = v if v else 1.0
    if sliding:
        meta.integer("attention.sliding_window", required=True, lo=1)
        hp.rope_base_swa = hp.rope_base


def _olmo2_hparams(hp: "HParams", meta: "Meta") -> None:
    # olmo2.cpp: sliding layers (OLMo-3) rope with the global base and a scale of 1
    hp.rope_base_swa = hp.rope_base


def _exaone4_hparams(hp: "HParams", meta: "Meta") -> None:
    # llama_model_exaone4::load_arch_hparams slides only in the 64-layer (32B) model, with the
    # global base; otherwise every layer is dense and ropes
    if hp.n_layer != 64:
        hp.n_swa, hp.is_swa = 0, [False] * hp.n_layer
    hp.rope_base_swa = hp.rope_base


def _glm4_hparams(hp: "HParams", meta: "Meta") -> None:
    # llama_model_glm4: rope.dimension_sections (GLM-4.1V and later) switch the graph to M-RoPE
    sections = meta.get("rope.dimension_sections", None)
    if sections is not None and np.any(np.asarray(sections) != 0):
        raise UnsupportedError(f"{meta.arch}.rope.dimension_sections is set: M-RoPE (a vision GLM) is not "
                               "supported by llmtk.model")


def _apertus_hparams(hp: "HParams", meta: "Meta") -> None:
    # llama_model_apertus::load_arch_hparams (get_key_or_arr: one value or one per layer) and
    # ggml_xielu's effective parameters: alpha_n = beta + softplus(alpha_n), alpha_p = softplus(alpha_p)
    from .ops import softplus

    vals = [meta.per_layer(key) for key in (Key.XIELU_ALPHA_N, Key.XIELU_ALPHA_P, Key.XIELU_BETA, Key.XIELU_EPS)]
    hp.xielu = [(float(np.float32(b) + softplus(an)), float(softplus(ap)), b, e)
                for an, ap, b, e in zip(*vals)]


def _llama4_hparams(hp: "HParams", meta: "Meta") -> None:
    """llama_model_llama4::load_arch_hparams: unless the file says sliding_window 0, layers slide
    in chunks of 8192 (whatever window it names) on the pattern 3 chunked, 1 full, every 4th layer
    has no RoPE and scales q by the attention temperature; otherwise only the last layer is NoPE
    (n_no_rope_layer_step = n_layer). q/k are L2-normalised after RoPE except in the 128-expert model."""
    window = meta.get("attention.sliding_window", None)
    if window is not None and window == 0:
        step = hp.n_layer
        hp.n_swa, hp.is_swa = 0, [False] * hp.n_layer
    else:
        step = 4
        hp.n_swa, hp.swa_chunked = 8192, True
        hp.attn_temp_floor, hp.attn_temp_scale, hp.attn_temp_offset = 8192, 0.1, 1.0
    hp.use_rope = [u and (il + 1) % step != 0 for il, u in enumerate(hp.use_rope)]
    hp.kq_l2_norm = hp.n_expert != 128


ARCHS: Registry[ArchSpec] = Registry("GGUF architecture (llmtk.model)")
for _spec in (
    ArchSpec("llama", ROPE_NORMAL),                        # also mistral, smollm, mixtral (experts)
    ArchSpec("qwen2", ROPE_NEOX),                          # q/k/v biases are loaded when present
    ArchSpec("qwen3", ROPE_NEOX, qk_norm=True),
    ArchSpec("qwen3moe", ROPE_NEOX, qk_norm=True),
    # MoE / MLA architectures (llama.cpp src/models/<arch>.cpp; routing per build_moe_ffn's arguments)
    ArchSpec("qwen2moe", ROPE_NEOX, moe=MoeSpec(norm_w=False)),
    ArchSpec("olmoe", ROPE_NEOX, qk_norm=True, moe=MoeSpec(norm_w=False)),
    ArchSpec("granitemoe", ROPE_NORMAL, read_hparams=granite_hparams),   # softmax, renormalised; shared experts
    ArchSpec("phimoe", ROPE_NEOX),
    ArchSpec("ernie4_5-moe", ROPE_NORMAL),
    ArchSpec("dots1", ROPE_NEOX, qk_norm=True, moe=MoeSpec(gating=None, norm_w=False, reads_keys=True)),
    ArchSpec("glm4moe", ROPE_NEOX, qk_norm="optional", ffn_norm="post_attention_norm",
             moe=MoeSpec(gating="sigmoid", norm_w=False, reads_keys=True)),
    ArchSpec("gpt-oss", ROPE_NEOX, ffn_norm="post_attention_norm", swa_pattern=2, swa_rope_same=True,
             moe=MoeSpec(gating="softmax_weight", norm_w=False, act="swiglu_oai")),
    ArchSpec("llama4", ROPE_NORMAL, swa_pattern=4, swa_window=8192, swa_rope_same=True, read_hparams=_llama4_hparams,
             moe=MoeSpec(gating="sigmoid", norm_w=False, select_on_logits=True, weight_before_ffn=True)),
    ArchSpec("deepseek2", ROPE_NORMAL, mla=True, moe=MoeSpec(gating="softmax", norm_w=False, reads_keys=True)),
    ArchSpec("phi3", ROPE_NEOX, fused_gate_up=True, swa_honoured=False),
    ArchSpec("gemma3", ROPE_NEOX, act="gelu_tanh", qk_norm=True, post_norms=True, embed_scale=True,
             swa_pattern=6, attn_scale=_gemma3_attn_scale),
    # dense architectures of llama.cpp's src/models/<arch>.cpp
    ArchSpec("gemma", ROPE_NEOX, act="gelu_tanh", embed_scale=True),
    ArchSpec("gemma2", ROPE_NEOX, act="gelu_tanh", post_norms=True, embed_scale=True, swa_pattern=2,
             swa_window=4096, swa_rope_same=True, attn_softcap=50.0, final_softcap=30.0,
             attn_scale=_gemma2_attn_scale),
    ArchSpec("granite", ROPE_NORMAL, read_hparams=_granite_hparams),
    ArchSpec("olmo2", ROPE_NEOX, pre_norms=False, post_norms=True, qk_norm=True, swa_pattern=4,
             read_hparams=_olmo2_hparams),              # q/k norms span all heads (n_head * head_k wide)
    ArchSpec("command-r", ROPE_NORMAL, norm=NORM_LAYER, parallel=True, qk_norm="optional",
             read_hparams=partial(_cohere_hparams, sliding=False)),
    ArchSpec("cohere2", ROPE_NORMAL, norm=NORM_LAYER, parallel=True, swa_pattern=4, swa_rope_same=True,
             rope_swa_only=True, read_hparams=partial(_cohere_hparams, sliding=True)),
    ArchSpec("starcoder2", ROPE_NEOX, norm=NORM_LAYER, ffn_gated=False, act="gelu_tanh"),
    ArchSpec("smollm3", ROPE_NORMAL, nope_every=4),
    ArchSpec("exaone4", ROPE_NEOX, pre_norms=False, post_norms=True, qk_norm=True, swa_pattern=4,
             swa_window=4096, swa_rope_same=True, rope_swa_only=True, read_hparams=_exaone4_hparams),
    ArchSpec("ernie4_5", ROPE_NORMAL),
    ArchSpec("seed_oss", ROPE_NEOX, ffn_norm="post_attention_norm"),
    ArchSpec("glm4", ROPE_NORMAL, fused_gate_up=True, post_norms=True, read_hparams=_glm4_hparams),
    ArchSpec("apertus", ROPE_NEOX, qk_norm=True, ffn_gated=False, act="xielu", read_hparams=_apertus_hparams),
    ArchSpec("arcee", ROPE_NORMAL, ffn_gated=False, act="relu_sqr"),
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
    expert_weights_norm: bool = True   # build_moe_ffn's norm_w (the arch's, or the file's with MoeSpec.reads_keys)
    expert_gating: str = "softmax"     # build_moe_ffn's gating_op
    n_expert_groups: int = 0           # group-limited routing (DeepSeek-V3): groups, and how many are kept
    n_group_used: int = 0
    yarn_beta_fast: float = 32.0       # llama_hparams' defaults; no arch here reads them from the file
    yarn_beta_slow: float = 1.0
    yarn_log_mul: float = 0.0          # deepseek2: rope.scaling.yarn_log_multiplier / 0.1
    n_lora_q: int = 0                  # deepseek2 MLA: q and kv LoRA ranks, per-head k/v sizes
    n_lora_kv: int = 0
    head_k_mla: int = 0
    head_v_mla: int = 0
    swa_chunked: bool = False          # llama4: sliding layers attend within chunks of n_swa (LLAMA_SWA_TYPE_CHUNKED)
    kq_l2_norm: bool = False           # llama4: q and k RMS-normalised (no weight) after RoPE in roped layers
    # llama4 attention temperature on NoPE layers: q *= log(floor((pos + offset) / floor) + 1) * scale + 1
    attn_temp_floor: int = 0
    attn_temp_scale: float = 0.0
    attn_temp_offset: float = 0.0
    n_swa: int = 0
    is_swa: list[bool] = field(default_factory=list)
    softcap: float = 0.0           # final logit soft-capping
    attn_softcap: float = 0.0      # attention logit soft-capping (gemma2)
    # llama_hparams' f_embedding_scale, f_residual_scale, f_attention_scale (granite family; 0: unused)
    embedding_scale: float = 0.0   # embeddings times this
    residual_scale: float = 0.0    # each block's attention and FFN outputs times this before the residual add
    attention_scale: float = 0.0   # the kq scale instead of 1/sqrt(head_k)
    logit_scale: float = 1.0       # logits times this (granite: 1/logit_scale, cohere: logit_scale)
    use_rope: list[bool] = field(default_factory=list)  # per layer: RoPE on q/k (False: NoPE)
    xielu: list[tuple[float, float, float, float]] = field(default_factory=list)  # per layer: xIELU's
    # effective alpha_n, alpha_p, beta, eps (apertus)

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
        # NextN/MTP blocks (glm4moe, deepseek2) come after the trunk, which is all a forward pass runs
        n_layer -= integer("nextn_predict_layers", 0, hi=n_layer - 1)
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
            # > 0: an all-zero row divides by it
            eps=real("attention.layer_norm_epsilon" if spec.norm == NORM_LAYER else "attention.layer_norm_rms_epsilon",
                     0.0, required=True, lo=float(np.finfo(np.float32).tiny), hi=1.0),
            rope_base=real("rope.freq_base", 10000.0, lo=1e-30),
            rope_base_swa=real("rope.freq_base_swa", real("rope.freq_base", 10000.0, lo=1e-30)
                               if spec.swa_rope_same else 10000.0, lo=1e-30),
            freq_scale=1.0 if scale == 0.0 else 1.0 / scale,
            rope_scaling=text("rope.scaling.type", "linear"),
            rope_attn_factor=real("rope.scaling.attn_factor", 1.0),
            n_ctx_train=n_ctx_train,
            n_ctx_orig=integer("rope.scaling.original_context_length", n_ctx_train),
            n_expert=n_expert, n_expert_used=n_expert_used,
            expert_weights_scale=real("expert_weights_scale", 0.0),
            softcap=real("final_logit_softcapping", spec.final_softcap, lo=0.0),
            attn_softcap=real("attn_logit_softcapping", spec.attn_softcap, lo=0.0) if spec.attn_softcap else 0.0,
        )
        if hp.rope_scaling not in ("linear", "none", "longrope", "yarn"):
            raise UnsupportedError(f"{a}.rope.scaling.type {escape_control(hp.rope_scaling)!r} is not supported "
                                   "(supported: none, linear, longrope, yarn)")
        if hp.rope_scaling == "yarn" and hp.freq_scale != 1.0 and hp.n_ctx_orig <= 0:
            raise bad("rope.scaling.original_context_length", hp.n_ctx_orig, "a positive context length for YaRN")
        if n_expert:
            _read_moe(hp, spec, integer, get, bad)
        if spec.mla:
            # llama_model_deepseek2::load_arch_hparams; the converter stores 0.1 * mscale_all_dim
            log_mul = real("rope.scaling.yarn_log_multiplier", 0.0)
            hp.yarn_log_mul = float(np.float32(log_mul) / np.float32(0.1))
            hp.n_lora_q = integer("attention.q_lora_rank", 0, hi=MAX_WIDTH)
            hp.n_lora_kv = integer("attention.kv_lora_rank", required=True, lo=1, hi=MAX_WIDTH)
            hp.head_k_mla = integer("attention.key_length_mla", 0, hi=MAX_WIDTH)
            hp.head_v_mla = integer("attention.value_length_mla", 0, hi=MAX_WIDTH)
            from .mla import check_hparams
            check_hparams(hp)
        if a == "llama" and hp.n_rot != hp.head_k:
            raise UnsupportedError(f"llama.rope.dimension_count {hp.n_rot} differs from head size {hp.head_k}")
        n_swa = integer("attention.sliding_window", spec.swa_window)
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
        hp.use_rope = [True] * n_layer
        if spec.read_hparams is not None:
            spec.read_hparams(hp, Meta(kv, a, n_layer, get, bad, integer, real))
        if spec.nope_every:
            # smollm3.cpp: layer il ropes unless (il + 1) is a multiple of n_no_rope_layer_step
            hp.use_rope = [u and (il + 1) % spec.nope_every != 0 for il, u in enumerate(hp.use_rope)]
        if spec.rope_swa_only and any(hp.is_swa):
            hp.use_rope = [u and s for u, s in zip(hp.use_rope, hp.is_swa)]
        return hp

    @property
    def swa_rope_scale(self) -> float:
        """freq_scale of sliding-window layers (llama_model::get_rope_freq_scale)."""
        return self.freq_scale if ARCHS[self.arch].swa_rope_same else 1.0

    @property
    def group(self) -> int:
        """Query heads per kv head (GQA)."""
        return self.n_head // self.n_head_kv


@dataclass(frozen=True)
class Meta:
    """The checked metadata readers `HParams.from_metadata` hands an arch's `read_hparams` hook:
    `get`/`integer`/`real` take keys relative to `<arch>.`, `bad` builds the one-line error."""

    kv: dict[str, Any]
    arch: str
    n_layer: int
    get: Callable[..., Any]
    bad: Callable[[str, Any, str], UnsupportedError]
    integer: Callable[..., int]
    real: Callable[..., float]

    def per_layer(self, key: str) -> list[float]:
        """A float metadata value under its full name `key`, one per layer: an array of n_layer
        numbers, or one number for all (llama_model_loader::get_key_or_arr); required."""
        if key not in self.kv:
            raise UnsupportedError(f"GGUF metadata lacks {key!r}, which a {self.arch} model needs")
        v = self.kv[key]
        arr = np.asarray(v) if isinstance(v, (list, tuple, np.ndarray)) else None
        if arr is None:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise UnsupportedError(f"GGUF metadata {key} is {escape_control(repr(v))[:60]}, expected a number")
            arr = np.full(self.n_layer, v, dtype=np.float64)
        if arr.ndim != 1 or arr.dtype.kind not in "iuf" or arr.size < self.n_layer or \
                not np.all(np.isfinite(arr.astype(np.float64))) or np.any(np.abs(arr.astype(np.float64)) > F32_MAX):
            raise UnsupportedError(f"GGUF metadata {key} is {escape_control(repr(v))[:60]}, expected a finite "
                                   f"number or {self.n_layer} finite numbers (one per layer)")
        return [float(np.float32(x)) for x in arr[:self.n_layer]]


def _read_moe(hp: HParams, spec: ArchSpec, integer: Callable[..., int], get: Callable[..., Any],
              bad: Callable[..., Exception]) -> None:
    """Routing hparams: expert groups (llama_model_base::load_hparams' checks) and, for archs whose
    loaders read them, the file's gating function and weight normalisation."""
    groups = integer("expert_group_count", 0, hi=MAX_EXPERTS)
    if groups >= hp.n_expert:
        raise bad("expert_group_count", groups, f"fewer than the {hp.n_expert} experts")
    if groups > 1:
        if hp.n_expert % groups:
            raise bad("expert_group_count", groups, f"a divisor of the {hp.n_expert} experts")
        used = integer("expert_group_used_count", 0, hi=U32_MAX)
        if not 0 < used < groups:
            raise bad("expert_group_used_count", used, f"1..{groups - 1} of {groups} expert groups")
        if hp.n_expert // groups < 2:
            raise bad("expert_group_count", groups, "groups of at least 2 experts (each is scored by its best two)")
        if used * (hp.n_expert // groups) < hp.n_expert_used:
            raise bad("expert_group_used_count", used, f"enough groups to hold {hp.n_expert_used} used experts")
        hp.n_expert_groups, hp.n_group_used = groups, used
    gating, norm_w = spec.moe.gating, spec.moe.norm_w
    if spec.moe.reads_keys:
        code = integer("expert_gating_func", 0, hi=U32_MAX)
        if code:
            if code not in GATING_FUNCS:
                raise UnsupportedError(f"{spec.name}.expert_gating_func {code} is not supported (supported: "
                                       + ", ".join(f"{c} ({n})" for c, n in GATING_FUNCS.items()) + ")")
            gating = GATING_FUNCS[code]
        w = get("expert_weights_norm", norm_w)
        if not isinstance(w, (bool, np.bool_)):
            raise bad("expert_weights_norm", w, "a boolean")
        norm_w = bool(w)
    if gating is None:
        raise UnsupportedError(f"GGUF metadata lacks {spec.name}.expert_gating_func, which a {spec.name} model needs")
    hp.expert_gating, hp.expert_weights_norm = gating, norm_w
