"""llama-quantize's choice of a ggml type for every tensor of a model.

A file type (`Q4_K_M`, `IQ2_XS`, ...) names a default ggml type; its *mix* then gives some
tensors more (or fewer) bits by role and layer, and a shape fallback replaces types whose block
does not divide a row. This module holds those rules as data, read from llama.cpp's
`src/llama-quant.cpp` (`llama_tensor_get_type`, `llama_tensor_get_type_impl`,
`tensor_type_fallback`, `tensor_allows_quantization`, `tensor_requires_imatrix`) and
`tools/quantize/quantize.cpp` (`QUANT_OPTIONS`):

- `FILE_TYPES`: every type llama-quantize accepts, with its `general.file_type` and default type;
- `MIX_RULES`: one table, read top to bottom, first matching row of a (group, role) wins, which
  is exactly llama.cpp's chain of `else if`s;
- `SHAPE_FALLBACK`: the type used when a row is not a multiple of the block size;
- `plan_types()`: walks the tensors in llama.cpp's order with its per-role counters and returns
  one `TensorChoice` per tensor.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from llmtk.errors import InputError, UnsupportedError
from llmtk.ggufio.constants import GGML_TYPE_TRAITS, GGMLType, Key, LlamaFileType

T = GGMLType
F = LlamaFileType


# ---------------------------------------------------------------------------------------------
# File types, as llama-quantize lists them (QUANT_OPTIONS): name -> (general.file_type, default)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileType:
    """One quantization type llama-quantize offers on its command line."""

    name: str
    ftype: LlamaFileType
    default: GGMLType          # the type most tensors get (llama_ftype_get_default_type)
    desc: str


FILE_TYPES: dict[str, FileType] = {ft.name: ft for ft in (
    FileType("Q1_0", F.MOSTLY_Q1_0, T.Q1_0, " 1.125 bpw quantization"),
    FileType("Q2_0", F.MOSTLY_Q2_0, T.Q2_0, " 2.25 bpw quantization (group 64)"),
    FileType("Q4_0", F.MOSTLY_Q4_0, T.Q4_0, " 4.34G, +0.4685 ppl @ Llama-3-8B"),
    FileType("Q4_1", F.MOSTLY_Q4_1, T.Q4_1, " 4.78G, +0.4511 ppl @ Llama-3-8B"),
    FileType("MXFP4_MOE", F.MOSTLY_MXFP4_MOE, T.MXFP4, " MXFP4 MoE"),
    FileType("Q5_0", F.MOSTLY_Q5_0, T.Q5_0, " 5.21G, +0.1316 ppl @ Llama-3-8B"),
    FileType("Q5_1", F.MOSTLY_Q5_1, T.Q5_1, " 5.65G, +0.1062 ppl @ Llama-3-8B"),
    FileType("IQ2_XXS", F.MOSTLY_IQ2_XXS, T.IQ2_XXS, " 2.06 bpw quantization"),
    FileType("IQ2_XS", F.MOSTLY_IQ2_XS, T.IQ2_XS, " 2.31 bpw quantization"),
    FileType("IQ2_S", F.MOSTLY_IQ2_S, T.IQ2_XS, " 2.5  bpw quantization"),
    FileType("IQ2_M", F.MOSTLY_IQ2_M, T.IQ2_S, " 2.7  bpw quantization"),
    FileType("IQ1_S", F.MOSTLY_IQ1_S, T.IQ1_S, " 1.56 bpw quantization"),
    FileType("IQ1_M", F.MOSTLY_IQ1_M, T.IQ1_M, " 1.75 bpw quantization"),
    FileType("TQ1_0", F.MOSTLY_TQ1_0, T.TQ1_0, " 1.69 bpw ternarization"),
    FileType("TQ2_0", F.MOSTLY_TQ2_0, T.TQ2_0, " 2.06 bpw ternarization"),
    FileType("Q2_K", F.MOSTLY_Q2_K, T.Q2_K, " 2.96G, +3.5199 ppl @ Llama-3-8B"),
    FileType("Q2_K_S", F.MOSTLY_Q2_K_S, T.Q2_K, " 2.96G, +3.1836 ppl @ Llama-3-8B"),
    FileType("IQ3_XXS", F.MOSTLY_IQ3_XXS, T.IQ3_XXS, " 3.06 bpw quantization"),
    FileType("IQ3_S", F.MOSTLY_IQ3_S, T.IQ3_S, " 3.44 bpw quantization"),
    FileType("IQ3_M", F.MOSTLY_IQ3_M, T.IQ3_S, " 3.66 bpw quantization mix"),
    FileType("Q3_K", F.MOSTLY_Q3_K_M, T.Q3_K, "alias for Q3_K_M"),
    FileType("IQ3_XS", F.MOSTLY_IQ3_XS, T.IQ3_S, " 3.3 bpw quantization"),
    FileType("Q3_K_S", F.MOSTLY_Q3_K_S, T.Q3_K, " 3.41G, +1.6321 ppl @ Llama-3-8B"),
    FileType("Q3_K_M", F.MOSTLY_Q3_K_M, T.Q3_K, " 3.74G, +0.6569 ppl @ Llama-3-8B"),
    FileType("Q3_K_L", F.MOSTLY_Q3_K_L, T.Q3_K, " 4.03G, +0.5562 ppl @ Llama-3-8B"),
    FileType("IQ4_NL", F.MOSTLY_IQ4_NL, T.IQ4_NL, " 4.50 bpw non-linear quantization"),
    FileType("IQ4_XS", F.MOSTLY_IQ4_XS, T.IQ4_XS, " 4.25 bpw non-linear quantization"),
    FileType("Q4_K", F.MOSTLY_Q4_K_M, T.Q4_K, "alias for Q4_K_M"),
    FileType("Q4_K_S", F.MOSTLY_Q4_K_S, T.Q4_K, " 4.37G, +0.2689 ppl @ Llama-3-8B"),
    FileType("Q4_K_M", F.MOSTLY_Q4_K_M, T.Q4_K, " 4.58G, +0.1754 ppl @ Llama-3-8B"),
    FileType("Q5_K", F.MOSTLY_Q5_K_M, T.Q5_K, "alias for Q5_K_M"),
    FileType("Q5_K_S", F.MOSTLY_Q5_K_S, T.Q5_K, " 5.21G, +0.1049 ppl @ Llama-3-8B"),
    FileType("Q5_K_M", F.MOSTLY_Q5_K_M, T.Q5_K, " 5.33G, +0.0569 ppl @ Llama-3-8B"),
    FileType("Q6_K", F.MOSTLY_Q6_K, T.Q6_K, " 6.14G, +0.0217 ppl @ Llama-3-8B"),
    FileType("Q8_0", F.MOSTLY_Q8_0, T.Q8_0, " 7.96G, +0.0026 ppl @ Llama-3-8B"),
    FileType("F16", F.MOSTLY_F16, T.F16, "14.00G, +0.0020 ppl @ Mistral-7B"),
    FileType("BF16", F.MOSTLY_BF16, T.BF16, "14.00G, -0.0050 ppl @ Mistral-7B"),
    FileType("F32", F.ALL_F32, T.F32, "26.00G              @ 7B"),
    FileType("COPY", F.ALL_F32, T.F32, "only copy tensors, no quantizing"),  # after F32: id 0 is F32
)}


def parse_file_type(text: str) -> FileType | None:
    """A type name (any case) or `general.file_type` number -> FileType, as llama-quantize parses
    it (`try_parse_ftype`: names first, then the first option with that number); None if neither."""
    up = text.upper()
    if up in FILE_TYPES:
        return FILE_TYPES[up]
    try:
        num = int(text)
    except ValueError:
        return None
    return next((ft for ft in FILE_TYPES.values() if int(ft.ftype) == num), None)


def file_type(text: str) -> FileType:
    """Like `parse_file_type`, but an unknown name is an error listing the valid ones."""
    ft = parse_file_type(text)
    if ft is None:
        raise InputError(f"unknown quantization type {text!r}; valid: {', '.join(FILE_TYPES)}")
    return ft


def file_type_names() -> dict[int, str]:
    """general.file_type -> llama-quantize's name; aliases (Q4_K, COPY) give way to Q4_K_M, F32."""
    return {int(f.ftype): n for n, f in FILE_TYPES.items() if n != "COPY"}


def canonical_name(text: str) -> str:
    """llama-quantize's main spelling of a type (`q4_k` -> `Q4_K_M`, `17` -> `Q5_K_M`)."""
    ft = file_type(text)
    return file_type_names().get(int(ft.ftype), ft.name) if ft.name != "COPY" else ft.name


def ggml_type_name(qtype: GGMLType) -> str:
    """ggml's spelling of a type in logs (`q4_K`, `iq3_s`, `f16`)."""
    return qtype.name.lower().replace("_k", "_K")


# ---------------------------------------------------------------------------------------------
# Tensor roles (tensor_get_category): broad categories by name, first match wins
# ---------------------------------------------------------------------------------------------

TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")
OUTPUT_NAME = "output.weight"

# (substring, role); attn_qkv and attn_kv_b count as attn_v (they hold the values)
_ROLE_BY_SUBSTRING = (
    ("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"),
)


def tensor_role(name: str) -> str:
    """`output`, `token_embd`, `attn_v`, `attn_k`, `attn_q`, `attn_output`, `ffn_up`, `ffn_gate`,
    `ffn_down` or `other`."""
    if name == OUTPUT_NAME:
        return "output"
    if name in TOKEN_EMBD_NAMES:
        return "token_embd"
    return next((role for sub, role in _ROLE_BY_SUBSTRING if sub in name), "other")


# Substrings of weights that are never quantized: small, positional or routing tensors.
_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
    *(f"time_mix_{w}.weight" for w in ("first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2",
                                       "g1", "g2", "decay_w1", "decay_w2", "lerp_fused")),
)
_NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")
_NEVER_QUANTIZED_GLM5_NEXT = (
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
    "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight",
)


def allows_quantization(name: str, n_dims: int, arch: str = "", *, quantize_output: bool = True,
                        only_copy: bool = False) -> bool:
    """Whether llama-quantize may change this tensor's type (2D/3D weights, not norms etc.)."""
    if only_copy or n_dims < 2 or not name.endswith("weight"):
        return False
    if not quantize_output and name == OUTPUT_NAME:
        return False
    if name in _NEVER_QUANTIZED_NAMES or any(s in name for s in _NEVER_QUANTIZED):
        return False
    if arch == "glm5-next" and any(s in name for s in _NEVER_QUANTIZED_GLM5_NEXT):
        return False
    return True


# ggml types that need an importance matrix to be usable (tensor_requires_imatrix)
_IMATRIX_TYPES = frozenset({T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S})


def requires_imatrix(name: str, qtype: GGMLType, ftype: LlamaFileType) -> bool:
    """llama-quantize refuses to make these without an imatrix (token embedding and output excepted);
    Q2_K needs one only inside a Q2_K_S file."""
    if name in TOKEN_EMBD_NAMES or name == OUTPUT_NAME:
        return False
    return qtype in _IMATRIX_TYPES or (qtype == T.Q2_K and ftype == F.MOSTLY_Q2_K_S)


# ---------------------------------------------------------------------------------------------
# The mixes
# ---------------------------------------------------------------------------------------------

@dataclass
class MixContext:
    """What a mix rule may look at for one tensor."""

    ftype: LlamaFileType
    arch: str
    n_gqa: int                 # n_head / n_head_kv of layer 0 (0 when n_head_kv is 0)
    n_expert: int
    has_imatrix: bool
    default: GGMLType          # the file type's default (or a tensor's incoming) type
    n_cols: int                # ne[0], the row length
    n_rows_3d: int             # ne[2]: > 1 for stacked expert tensors
    i_layer: int = 0           # layer of an ffn tensor (counter, or parsed from the name for MoE)
    n_layer: int = 1
    i_ffn_down: int = 0        # raw ffn_down counter (the low-bit mixes use it even for MoE)
    i_attention_wv: int = 0
    n_attention_wv: int = 0
    is_70b: bool = False       # LLaMA-2-70B-like: 80 layers with grouped-query attention


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The first and last eighth of the layers and every third one between get more bits."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


Pred = Callable[[MixContext], bool]


def ALWAYS(c: MixContext) -> bool:
    return True


def gqa4(c: MixContext) -> bool:
    return c.n_gqa >= 4


def no_imatrix(c: MixContext) -> bool:
    return not c.has_imatrix


def first_8th(c: MixContext) -> bool:
    return c.i_layer < c.n_layer // 8


def middle(c: MixContext) -> bool:             # not in the first or last eighth
    return c.n_layer // 8 <= c.i_layer < 7 * c.n_layer // 8


def more_bits(c: MixContext) -> bool:
    return use_more_bits(c.i_layer, c.n_layer)


def wv_more_bits(c: MixContext) -> bool:
    return use_more_bits(c.i_attention_wv, c.n_attention_wv)


def falcon(c: MixContext) -> bool:
    return c.arch == "falcon"


def moe8(c: MixContext) -> bool:
    return c.n_expert == 8


def _all(*preds: Pred) -> Pred:
    return lambda c: all(p(c) for p in preds)


def _not(pred: Pred) -> Pred:
    return lambda c: not pred(c)


@dataclass(frozen=True)
class Rule:
    group: str                 # which branch of llama.cpp's chain (see `_group`)
    role: str                  # tensor role, or "*" for any
    ftypes: frozenset | None   # file types the row is for; None: any
    when: Pred
    qtype: GGMLType


def _fs(*names: str) -> frozenset:
    return frozenset(F[f"MOSTLY_{n}"] for n in names)


# File types whose rules live in the "low_bit" group of the chain.
LOW_BIT = _fs("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
_IQ2SM = _fs("IQ2_S", "IQ2_M")
_ANY = None


def _rows(group: str, role: str, rows: Iterable[tuple]) -> list[Rule]:
    return [Rule(group, role, fts, when, qt) for fts, when, qt in rows]


MIX_RULES: list[Rule] = [
    # output.weight, and the token embedding when it doubles as the output (tied embeddings)
    *_rows("output", "*", [
        (_fs("MXFP4_MOE"), ALWAYS, T.Q8_0),
        (_ANY, lambda c: falcon(c) or c.n_cols % GGML_TYPE_TRAITS[c.default].block_size != 0, T.Q8_0),
        (LOW_BIT | _fs("IQ3_XXS"), ALWAYS, T.Q5_K),
        (_ANY, lambda c: c.default != T.Q8_0, T.Q6_K),
    ]),
    # MXFP4_MOE: stacked expert tensors to MXFP4, everything else to Q8_0
    *_rows("mxfp4_moe", "*", [
        (_ANY, lambda c: c.n_rows_3d > 1 and c.arch != "bailingmoe3", T.MXFP4),
        (_ANY, ALWAYS, T.Q8_0),
    ]),
    *_rows("mxfp4_moe", "ffn_up", [(_ANY, lambda c: c.n_rows_3d > 1, T.MXFP4), (_ANY, ALWAYS, T.Q8_0)]),
    *_rows("mxfp4_moe", "ffn_gate", [(_ANY, lambda c: c.n_rows_3d > 1, T.MXFP4), (_ANY, ALWAYS, T.Q8_0)]),
    *_rows("mxfp4_moe", "ffn_down", [(_ANY, lambda c: c.n_rows_3d > 1, T.MXFP4), (_ANY, ALWAYS, T.Q8_0)]),
    # an untied token embedding
    *_rows("token_embd", "token_embd", [
        (_fs("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"), ALWAYS, T.Q2_K),
        (_fs("IQ2_S", "IQ2_M", "IQ3_XXS"), ALWAYS, T.IQ3_S),
        (_fs("TQ1_0", "TQ2_0", "Q2_0"), ALWAYS, T.Q4_K),
    ]),
    # the 1.5-2.7 bpw i-quant mixes
    *_rows("low_bit", "attn_v", [
        (_ANY, lambda c: c.n_gqa >= 4 or c.n_expert >= 4, T.Q4_K),
        (_IQ2SM, ALWAYS, T.IQ3_S),
        (_ANY, ALWAYS, T.Q2_K),
    ]),
    *_rows("low_bit", "attn_k", [(_ANY, moe8, T.Q4_K)]),
    *_rows("low_bit", "ffn_down", [
        (_IQ2SM, lambda c: c.i_ffn_down < c.n_layer // 8, T.IQ3_S),
        (_ANY, lambda c: c.i_ffn_down < c.n_layer // 8, T.Q2_K),
    ]),
    *_rows("low_bit", "attn_output", [
        (_ANY, moe8, T.Q5_K),
        (_fs("IQ1_S", "IQ1_M"), ALWAYS, T.IQ2_XXS),
        (_IQ2SM, ALWAYS, T.IQ3_S),
    ]),
    # every other mix
    *_rows("mix", "attn_v", [
        (_ANY, moe8, T.Q8_0),
        (_fs("Q2_K"), gqa4, T.Q4_K),
        (_fs("Q2_K"), ALWAYS, T.Q3_K),
        (_fs("Q2_K_S"), gqa4, T.Q4_K),
        (_fs("IQ3_XXS"), gqa4, T.Q4_K),
        (_fs("IQ3_XXS"), no_imatrix, T.IQ3_S),
        (_fs("IQ3_XS", "IQ3_S"), gqa4, T.Q4_K),
        (_fs("IQ3_M"), ALWAYS, T.Q4_K),
        (_fs("Q3_K_M"), lambda c: c.i_attention_wv < 2, T.Q5_K),
        (_fs("Q3_K_M"), ALWAYS, T.Q4_K),
        (_fs("Q3_K_L"), ALWAYS, T.Q5_K),
        (_fs("IQ4_NL", "IQ4_XS"), gqa4, T.Q5_K),
        (_fs("Q4_K_M", "Q5_K_M"), wv_more_bits, T.Q6_K),
        (_fs("Q4_K_S"), lambda c: c.i_attention_wv < 4, T.Q5_K),
    ]),
    *_rows("mix", "attn_k", [
        (_ANY, moe8, T.Q8_0),
        (_fs("IQ3_XS"), ALWAYS, T.IQ3_XXS),
        (_fs("IQ3_XXS"), ALWAYS, T.IQ2_S),
    ]),
    *_rows("mix", "attn_q", [
        (_fs("IQ3_XS"), ALWAYS, T.IQ3_XXS),
        (_fs("IQ3_XXS"), ALWAYS, T.IQ2_S),
    ]),
    *_rows("mix", "ffn_down", [
        (_fs("Q2_K"), ALWAYS, T.Q3_K),
        (_fs("Q2_K_S"), first_8th, T.Q4_K),
        (_fs("IQ3_XXS"), _all(no_imatrix, first_8th), T.Q4_K),
        (_fs("IQ3_XXS"), no_imatrix, T.Q3_K),
        (_fs("Q3_K_M"), lambda c: c.i_layer < c.n_layer // 16, T.Q5_K),
        (_fs("Q3_K_M"), lambda c: not falcon(c) or more_bits(c), T.Q4_K),
        (_fs("Q3_K_M"), ALWAYS, T.Q3_K),
        (_fs("IQ3_M"), lambda c: first_8th(c) or (moe8(c) and more_bits(c)), T.Q4_K),
        (_fs("Q3_K_L"), falcon, T.Q4_K),
        (_fs("Q3_K_L"), ALWAYS, T.Q5_K),
        (_fs("Q4_K_M"), _all(falcon, lambda c: c.i_layer < c.n_layer // 16), T.Q6_K),
        (_fs("Q4_K_M"), _all(falcon, more_bits), T.Q5_K),
        (_fs("Q4_K_M"), _all(_not(falcon), more_bits), T.Q6_K),
        (_fs("IQ4_NL", "IQ4_XS"), _all(first_8th, no_imatrix), T.Q5_K),
        (_fs("Q5_K_M"), more_bits, T.Q6_K),
        (_fs("Q4_K_S"), _all(_not(falcon), first_8th), T.Q5_K),
        # guards the first ffn_down layers of Q4_0/Q5_0, only with an imatrix so that plain
        # quantization stays what it always was
        (_fs("Q4_0"), lambda c: c.has_imatrix and first_8th(c), T.Q4_1),
        (_fs("Q5_0"), lambda c: c.has_imatrix and first_8th(c), T.Q5_1),
    ]),
    *_rows("mix", "attn_output", [
        (_fs("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
             "IQ3_M", "IQ4_XS"), _all(_not(falcon), moe8), T.Q5_K),
        (_fs("Q2_K"), _all(_not(falcon), _not(moe8)), T.Q3_K),
        (_fs("IQ3_XXS"), _all(_not(falcon), _not(moe8)), T.IQ3_S),
        (_fs("Q3_K_M"), _all(_not(falcon), _not(moe8)), T.Q4_K),
        (_fs("Q3_K_L"), _all(_not(falcon), _not(moe8)), T.Q5_K),
        (_fs("IQ3_M"), _all(_not(falcon), _not(moe8)), T.Q4_K),
        (_fs("Q3_K_L"), falcon, T.Q4_K),
    ]),
    *_rows("mix", "ffn_gate", [(_fs("IQ3_XS"), middle, T.IQ3_XXS)]),
    *_rows("mix", "ffn_up", [(_fs("IQ3_XS"), middle, T.IQ3_XXS)]),
]
_RULES_BY_KEY: dict[tuple[str, str], list[Rule]] = {}
for _r in MIX_RULES:
    _RULES_BY_KEY.setdefault((_r.group, _r.role), []).append(_r)

# A type whose block does not divide the row falls back to a 32-block type of about the same
# size (tensor_type_fallback); 32-block types that still do not fit become F16.
SHAPE_FALLBACK: dict[GGMLType, GGMLType] = {
    **{t: T.IQ4_NL for t in (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS)},
    **{t: T.Q4_0 for t in (T.Q2_0, T.Q2_K, T.Q3_K, T.TQ1_0, T.TQ2_0)},
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
}


def _group(role: str, ftype: LlamaFileType, tied: bool) -> str:
    """Which branch of llama.cpp's chain handles this tensor (the branches are tried in this order)."""
    if role == "output" or (tied and role == "token_embd"):
        return "output"
    if ftype == F.MOSTLY_MXFP4_MOE:
        return "mxfp4_moe"
    if role == "token_embd":
        return "token_embd"
    return "low_bit" if ftype in LOW_BIT else "mix"


def mix_type(role: str, ctx: MixContext, *, tied: bool, name: str = "") -> GGMLType:
    """The mix's type for one tensor (llama_tensor_get_type_impl), before the shape fallback."""
    if ctx.arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
        return T.Q8_0  # never below Q8_0 for these
    group = _group(role, ctx.ftype, tied)
    rules = _RULES_BY_KEY.get((group, role)) or _RULES_BY_KEY.get((group, "*"), [])
    new = next((r.qtype for r in rules if (r.ftypes is None or ctx.ftype in r.ftypes) and r.when(ctx)),
               ctx.default)
    if group == "mix" and role == "attn_v" and ctx.is_70b and new in (T.Q3_K, T.Q4_K):
        new = T.Q5_K  # 70B: attn_v is 8x smaller than attn_q, more bits cost almost nothing
    return new


# ---------------------------------------------------------------------------------------------
# Planning a whole model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    """The hyperparameters the rules read, from GGUF metadata."""

    arch: str
    n_layer: int
    n_gqa: int
    n_expert: int
    is_70b: bool = False

    @classmethod
    def from_kv(cls, kv: dict[str, Any]) -> "ModelInfo":
        arch = str(kv.get(Key.ARCHITECTURE, ""))

        def first(key: str, default: int) -> int:
            v = kv.get(f"{arch}.{key}", default)
            if hasattr(v, "__len__") and not isinstance(v, str):
                v = v[0] if len(v) else default
            return int(v)

        n_layer = first("block_count", 0)
        n_head = first("attention.head_count", 0)
        n_head_kv = first("attention.head_count_kv", n_head)
        n_gqa = n_head // n_head_kv if n_head_kv else 0
        is_70b = arch == "llama" and n_layer == 80 and n_head != n_head_kv
        return cls(arch, n_layer, n_gqa, first("expert_count", 0), is_70b)


@dataclass
class MixOptions:
    """llama-quantize's options that change the per-tensor types."""

    pure: bool = False
    output_tensor_type: GGMLType | None = None
    token_embedding_type: GGMLType | None = None
    tensor_types: list[tuple[str, GGMLType]] = field(default_factory=list)  # (regex, type)
    quantize_output: bool = True       # False: --leave-output-tensor
    only_copy: bool = False            # COPY


@dataclass
class TensorChoice:
    """The plan for one tensor: its incoming and chosen type and why."""

    name: str
    ne: tuple[int, ...]                # GGUF order: ne[0] is the row length
    src_type: GGMLType
    dst_type: GGMLType
    allows_quantization: bool
    requires_imatrix: bool
    fallback: str | None = None        # llama.cpp's warning line when a shape fallback was taken
    override: str | None = None        # the manual --tensor-type override line, if any


def layer_of(name: str) -> int:
    """The block number of `blk.N.` names, -1 for others (as llama.cpp's sscanf does)."""
    m = re.match(r"blk\.([+-]?\d+)", name)
    return int(m.group(1)) if m else -1


def llama_order(names: Iterable[str]) -> list[str]:
    """Tensors in the order llama-quantize walks and writes them: by layer (non-layer first), then name."""
    return sorted(names, key=lambda n: (layer_of(n), n.encode()))


def shape_fallback(name: str, n_cols: int, qtype: GGMLType) -> tuple[GGMLType, str | None]:
    """Replace a type whose block does not divide `n_cols`; returns (type, warning or None)."""
    qk = GGML_TYPE_TRAITS[qtype].block_size
    if n_cols % qk == 0:
        return qtype, None
    msg = (f"warning: {name:<36} - ncols {n_cols:6d} not divisible by {qk:3d} "
           f"(required for type {ggml_type_name(qtype):>7}) ")
    if qtype in SHAPE_FALLBACK:
        new = SHAPE_FALLBACK[qtype]
    elif qk <= 32:
        new = qtype
    else:
        raise UnsupportedError(f"{name}: row of {n_cols} is not a multiple of {qtype.name} block size "
                               f"{qk}, and no tensor type fallback is defined for type {qtype.name}")
    if n_cols % GGML_TYPE_TRAITS[new].block_size:
        msg += "(WARNING: must use F16 due to unusual shape) "
        new = T.F16
    return new, msg + f"-> falling back to {ggml_type_name(new):>7}"


def plan_types(tensors: Sequence[tuple[str, tuple[int, ...], GGMLType]], model: ModelInfo,
               ftype: FileType, options: MixOptions | None = None, *,
               has_imatrix: bool = False) -> list[TensorChoice]:
    """Choose every tensor's type as llama-quantize does (its preliminary pass).

    `tensors` are (name, ne in GGUF order, current type) in llama-quantize's order
    (`llama_order`); the per-role counters follow that order.
    """
    opts = options or MixOptions()
    fid = ftype.ftype
    default = ftype.default
    patterns = [(re.compile(p), t) for p, t in opts.tensor_types]
    tied = not any(name == OUTPUT_NAME for name, _, _ in tensors)
    n_attention_wv = sum(tensor_role(name) == "attn_v" for name, _, _ in tensors)
    counters = {"attn_v": 0, "ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}
    quantized_default = GGML_TYPE_TRAITS[default].is_quantized

    plan: list[TensorChoice] = []
    for name, ne, src in tensors:
        allowed = allows_quantization(name, len(ggml_dims(ne)), model.arch,
                                      quantize_output=opts.quantize_output, only_copy=opts.only_copy)
        choice = TensorChoice(name, tuple(ne), src, src, allowed, False)
        if allowed:
            choice.dst_type = _choose(choice, tensor_role(name), model, fid, default, opts,
                                      patterns, tied, counters, n_attention_wv, has_imatrix,
                                      quantized_default)
        choice.requires_imatrix = requires_imatrix(name, choice.dst_type, fid)
        plan.append(choice)
    return plan


def _trailing_ones(ne: Sequence[int]) -> int:
    """ggml_n_dims ignores trailing dimensions of size 1 (a 1-D tensor may be stored as [n, 1])."""
    k = 0
    for v in reversed(ne[1:]):
        if v != 1:
            break
        k += 1
    return k


def ggml_dims(ne: Sequence[int]) -> tuple[int, ...]:
    """`ne` without its trailing dimensions of 1, as gguf writes a tensor (`ggml_n_dims`): a
    converter's [256, 1] gate comes out of llama-quantize as [256]."""
    return tuple(ne[:len(ne) - _trailing_ones(ne)])


def _choose(choice: TensorChoice, role: str, model: ModelInfo, fid: LlamaFileType,
            default: GGMLType, opts: MixOptions, patterns: list, tied: bool, counters: dict,
            n_attention_wv: int, has_imatrix: bool, quantized_default: bool) -> GGMLType:
    """llama_tensor_get_type for one quantizable tensor; advances the role counters."""
    name = choice.name
    if opts.token_embedding_type is not None and role == "token_embd":
        # per_layer_token_embd may still be named by an explicit --tensor-type
        if not (name == "per_layer_token_embd.weight" and any(p.search(name) for p, _ in patterns)):
            return opts.token_embedding_type
    if opts.output_tensor_type is not None and role == "output":
        return opts.output_tensor_type
    if not quantized_default:
        return default

    new = default
    manual = next(((p, t) for p, t in patterns if p.search(name)), None)
    if manual is not None:
        if manual[1] != new:
            choice.override = (f"llama_tensor_get_type: {name:<36} - applying manual override: "
                               f"{ggml_type_name(new)} -> {ggml_type_name(manual[1])}")
        new = manual[1]
    elif not opts.pure:
        if (role == "output" or (tied and role == "token_embd")) and opts.output_tensor_type is not None:
            new = opts.output_tensor_type
        else:
            ne = choice.ne
            i_layer = counters.get(role, 0)
            if model.n_expert > 1 and role in ("ffn_down", "ffn_gate", "ffn_up"):
                i_layer = layer_of(name)
                if not 0 <= i_layer < model.n_layer:
                    raise InputError(f"bad layer {i_layer} for tensor {name}: must be in [0, {model.n_layer})")
            ctx = MixContext(fid, model.arch, model.n_gqa, model.n_expert, has_imatrix, new, ne[0],
                             ne[2] if len(ne) > 2 else 1, i_layer, model.n_layer,
                             counters["ffn_down"], counters["attn_v"], n_attention_wv, model.is_70b)
            new = mix_type(role, ctx, tied=tied, name=name)
        if role in counters:
            counters[role] += 1
    new, msg = shape_fallback(name, choice.ne[0], new)
    choice.fallback = msg
    return new
