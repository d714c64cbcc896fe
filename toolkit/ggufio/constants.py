"""Every format fact of GGUF and ggml in one place: type ids, block and type sizes, file types.

Type sizes are written as the sum of the C struct fields in ggml's `ggml-common.h`, so each line
can be read against the struct it describes. The `gguf` package on the index stops at id 41 and
lacks Q2_0, which is why llmtk keeps its own table (ids 0..42).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32
GGUF_KEY_ALIGNMENT = "general.alignment"
GGML_QUANTIZATION_VERSION = 2
GGML_MAX_DIMS = 4    # ggml.h: tensors have at most 4 dimensions
GGML_MAX_NAME = 64   # ggml.h: a tensor name is shorter than this many bytes

QK_K = 256
K_SCALE_SIZE = 12
F16 = 2  # sizeof(ggml_half)


class GGMLType(enum.IntEnum):
    """ggml tensor types, numbered as in `ggml.h` (`enum ggml_type`)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41
    Q2_0 = 42


# Ids ggml once used and has since removed from GGUF files: known, but never valid in a file.
GGML_REMOVED_TYPES: dict[int, str] = {
    4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
    36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8",
}
GGML_TYPE_COUNT = 43


@dataclass(frozen=True)
class TypeTraits:
    """Block geometry of one ggml type: `block_size` values are stored in `type_size` bytes."""

    qtype: GGMLType
    block_size: int
    type_size: int
    is_quantized: bool

    @property
    def name(self) -> str:
        return self.qtype.name

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size


def _t(qtype: GGMLType, block_size: int, type_size: int, quantized: bool = True) -> TypeTraits:
    return TypeTraits(qtype, block_size, type_size, quantized)


T = GGMLType
GGML_TYPE_TRAITS: dict[GGMLType, TypeTraits] = {t.qtype: t for t in (
    _t(T.F32, 1, 4, False),
    _t(T.F16, 1, 2, False),
    _t(T.BF16, 1, 2, False),
    _t(T.F64, 1, 8, False),
    _t(T.I8, 1, 1, False),
    _t(T.I16, 1, 2, False),
    _t(T.I32, 1, 4, False),
    _t(T.I64, 1, 8, False),
    _t(T.Q4_0, 32, F16 + 32 // 2),                    # d, qs[16]
    _t(T.Q4_1, 32, 2 * F16 + 32 // 2),                # d, m, qs[16]
    _t(T.Q5_0, 32, F16 + 4 + 32 // 2),                # d, qh[4], qs[16]
    _t(T.Q5_1, 32, 2 * F16 + 4 + 32 // 2),            # d, m, qh[4], qs[16]
    _t(T.Q8_0, 32, F16 + 32),                         # d, qs[32]
    _t(T.Q8_1, 32, 2 * F16 + 32),                     # d, s, qs[32]
    _t(T.Q2_K, QK_K, 2 * F16 + QK_K // 16 + QK_K // 4),             # scales, qs, d, dmin
    _t(T.Q3_K, QK_K, F16 + QK_K // 4 + QK_K // 8 + 12),            # hmask, qs, scales, d
    _t(T.Q4_K, QK_K, 2 * F16 + K_SCALE_SIZE + QK_K // 2),          # d, dmin, scales, qs
    _t(T.Q5_K, QK_K, 2 * F16 + K_SCALE_SIZE + QK_K // 2 + QK_K // 8),  # d, dmin, scales, qh, qs
    _t(T.Q6_K, QK_K, F16 + QK_K // 16 + 3 * QK_K // 4),            # ql, qh, scales, d
    _t(T.Q8_K, QK_K, 4 + QK_K + QK_K // 16 * 2),                   # d (f32), qs, bsums
    _t(T.IQ2_XXS, QK_K, F16 + QK_K // 8 * 2),                      # d, qs[QK_K/8] u16
    _t(T.IQ2_XS, QK_K, F16 + QK_K // 8 * 2 + QK_K // 32),          # d, qs u16, scales
    _t(T.IQ2_S, QK_K, F16 + QK_K // 4 + QK_K // 16),               # d, qs, qh, scales
    _t(T.IQ3_XXS, QK_K, F16 + 3 * (QK_K // 8)),                    # d, qs
    _t(T.IQ3_S, QK_K, F16 + 13 * (QK_K // 32) + QK_K // 64),       # d, qs, qh, signs, scales
    _t(T.IQ1_S, QK_K, F16 + QK_K // 8 + QK_K // 16),               # d, qs, qh u16
    _t(T.IQ1_M, QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),        # qs, qh, scales
    _t(T.IQ4_NL, 32, F16 + 32 // 2),                               # d, qs
    _t(T.IQ4_XS, QK_K, F16 + 2 + QK_K // 64 + QK_K // 2),          # d, scales_h, scales_l, qs
    _t(T.TQ1_0, QK_K, F16 + QK_K // 64 + (QK_K - 4 * QK_K // 64) // 5),  # qs, qh, d
    _t(T.TQ2_0, QK_K, F16 + QK_K // 4),                            # qs, d
    _t(T.MXFP4, 32, 1 + 32 // 2),                                  # e (E8M0), qs
    _t(T.NVFP4, 64, 64 // 16 + 64 // 2),                           # d[4] (E4M3), qs
    _t(T.Q1_0, 128, F16 + 128 // 8),                               # d, qs
    _t(T.Q2_0, 64, F16 + 64 // 4),                                 # d, qs
)}
del T


def parse_ggml_type(qtype: "str | int | GGMLType") -> GGMLType:
    """Accept a type name (`"Q4_K"`, case-insensitive) or integer id and return the enum member."""
    from llmtk.errors import UnsupportedError

    if isinstance(qtype, GGMLType):
        return qtype
    if isinstance(qtype, str):
        try:
            return GGMLType[qtype.upper()]
        except KeyError:
            valid = ", ".join(t.name for t in GGMLType)
            raise UnsupportedError(f"unknown ggml type {qtype!r}; valid: {valid}") from None
    try:
        return GGMLType(int(qtype))
    except ValueError:
        if int(qtype) in GGML_REMOVED_TYPES:
            raise UnsupportedError(
                f"ggml type id {int(qtype)} ({GGML_REMOVED_TYPES[int(qtype)]}) was removed from GGUF files"
            ) from None
        raise UnsupportedError(f"unknown ggml type id {qtype} (valid ids are 0..{GGML_TYPE_COUNT - 1})") from None


def type_traits(qtype: "str | int | GGMLType") -> TypeTraits:
    return GGML_TYPE_TRAITS[parse_ggml_type(qtype)]


def row_size(qtype: "str | int | GGMLType", n_cols: int) -> int:
    """Bytes of one row of `n_cols` values (ggml's `ggml_row_size`); cols must fill whole blocks."""
    from llmtk.errors import ShapeError

    tt = type_traits(qtype)
    if n_cols % tt.block_size:
        raise ShapeError(f"row size {n_cols} is not a multiple of {tt.name} block size {tt.block_size}")
    return n_cols // tt.block_size * tt.type_size



def tensor_nbytes(qtype: "str | int | GGMLType", ne: "tuple[int, ...] | list[int]") -> int:
    """Bytes of a tensor's data of shape `ne` (ggml's `ggml_nbytes`, without the file's padding)."""
    tt = type_traits(qtype)
    return math.prod(ne) // tt.block_size * tt.type_size

class LlamaFileType(enum.IntEnum):
    """`general.file_type` values (`enum llama_ftype` in `llama.h`)."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_IQ2_XXS = 19
    MOSTLY_IQ2_XS = 20
    MOSTLY_Q2_K_S = 21
    MOSTLY_IQ3_XS = 22
    MOSTLY_IQ3_XXS = 23
    MOSTLY_IQ1_S = 24
    MOSTLY_IQ4_NL = 25
    MOSTLY_IQ3_S = 26
    MOSTLY_IQ3_M = 27
    MOSTLY_IQ2_S = 28
    MOSTLY_IQ2_M = 29
    MOSTLY_IQ4_XS = 30
    MOSTLY_IQ1_M = 31
    MOSTLY_BF16 = 32
    MOSTLY_TQ1_0 = 36
    MOSTLY_TQ2_0 = 37
    MOSTLY_MXFP4_MOE = 38
    MOSTLY_NVFP4 = 39
    MOSTLY_Q1_0 = 40
    MOSTLY_Q2_0 = 41
    GUESSED = 1024


class GGUFValueType(enum.IntEnum):
    """Metadata value types of the GGUF container (`enum gguf_type`)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct format characters (little endian) of the fixed-size value types.
GGUF_VALUE_STRUCT: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}

# Short names for `--set KEY=TYPE:VALUE` and `--override-kv`, as gguf and llama.cpp spell them.
GGUF_VALUE_TYPE_NAMES: dict[str, GGUFValueType] = {
    "u8": GGUFValueType.UINT8, "uint8": GGUFValueType.UINT8,
    "i8": GGUFValueType.INT8, "int8": GGUFValueType.INT8,
    "u16": GGUFValueType.UINT16, "uint16": GGUFValueType.UINT16,
    "i16": GGUFValueType.INT16, "int16": GGUFValueType.INT16,
    "u32": GGUFValueType.UINT32, "uint32": GGUFValueType.UINT32,
    "i32": GGUFValueType.INT32, "int32": GGUFValueType.INT32, "int": GGUFValueType.INT32,
    "f32": GGUFValueType.FLOAT32, "float32": GGUFValueType.FLOAT32, "float": GGUFValueType.FLOAT32,
    "bool": GGUFValueType.BOOL,
    "str": GGUFValueType.STRING, "string": GGUFValueType.STRING,
    "u64": GGUFValueType.UINT64, "uint64": GGUFValueType.UINT64,
    "i64": GGUFValueType.INT64, "int64": GGUFValueType.INT64,
    "f64": GGUFValueType.FLOAT64, "float64": GGUFValueType.FLOAT64,
}


class Key:
    """The GGUF metadata keys llmtk reads or writes outside the tokenizer, as llama.cpp spells them
    (`LLM_KV_GENERAL_*`, `LLM_KV_SPLIT_*`, llama-quantize's `quantize.imatrix.*`, llama-imatrix's
    `imatrix.*`). Where the PyPI `gguf` package names the same key, tests hold the two equal;
    keys with `{arch}` are templates (`Key.BLOCK_COUNT.format(arch="llama")`)."""

    ALIGNMENT = GGUF_KEY_ALIGNMENT
    ARCHITECTURE = "general.architecture"
    TYPE = "general.type"
    NAME = "general.name"
    BASENAME = "general.basename"
    SIZE_LABEL = "general.size_label"
    FILE_TYPE = "general.file_type"
    QUANTIZATION_VERSION = "general.quantization_version"
    BLOCK_COUNT = "{arch}.block_count"
    EMBEDDING_LENGTH = "{arch}.embedding_length"
    SPLIT_NO = "split.no"
    SPLIT_COUNT = "split.count"
    SPLIT_TENSORS_COUNT = "split.tensors.count"
    QUANTIZE_IMATRIX_FILE = "quantize.imatrix.file"
    QUANTIZE_IMATRIX_DATASET = "quantize.imatrix.dataset"
    QUANTIZE_IMATRIX_N_ENTRIES = "quantize.imatrix.entries_count"
    QUANTIZE_IMATRIX_N_CHUNKS = "quantize.imatrix.chunks_count"
    # llmtk quantize --target-bpw/--target-size: how the mix was chosen (written with --override-kv)
    QUANTIZE_TARGET_METHOD = "quantize.target.method"
    QUANTIZE_TARGET_BPW = "quantize.target_bpw"
    QUANTIZE_TARGET_SIZE = "quantize.target.size"
    QUANTIZE_TARGET_CANDIDATES = "quantize.target.candidates"
    QUANTIZE_TARGET_PREDICTED_KLD = "quantize.target.predicted_kld"
    QUANTIZE_TARGET_CALIBRATION = "quantize.target.calibration"
    IMATRIX_DATASETS = "imatrix.datasets"
    IMATRIX_CHUNK_COUNT = "imatrix.chunk_count"
    IMATRIX_CHUNK_SIZE = "imatrix.chunk_size"
    CHAT_TEMPLATE = "tokenizer.chat_template"
    XIELU_ALPHA_N = "xielu.alpha_n"   # apertus' per-layer xIELU parameters (no `{arch}.` prefix)
    XIELU_ALPHA_P = "xielu.alpha_p"
    XIELU_BETA = "xielu.beta"
    XIELU_EPS = "xielu.eps"


class TokenizerKey:
    """GGUF metadata keys of the tokenizer (llama.cpp's `LLM_KV_TOKENIZER_*`; "seperator" sic)."""

    MODEL = "tokenizer.ggml.model"
    PRE = "tokenizer.ggml.pre"
    TOKENS = "tokenizer.ggml.tokens"
    TOKEN_TYPE = "tokenizer.ggml.token_type"
    SCORES = "tokenizer.ggml.scores"
    MERGES = "tokenizer.ggml.merges"
    BOS_ID = "tokenizer.ggml.bos_token_id"
    EOS_ID = "tokenizer.ggml.eos_token_id"
    EOT_ID = "tokenizer.ggml.eot_token_id"
    EOM_ID = "tokenizer.ggml.eom_token_id"
    UNK_ID = "tokenizer.ggml.unknown_token_id"
    SEP_ID = "tokenizer.ggml.seperator_token_id"
    PAD_ID = "tokenizer.ggml.padding_token_id"
    MASK_ID = "tokenizer.ggml.mask_token_id"
    CLS_ID = "tokenizer.ggml.cls_token_id"
    FIM_PRE_ID = "tokenizer.ggml.fim_pre_token_id"
    FIM_SUF_ID = "tokenizer.ggml.fim_suf_token_id"
    FIM_MID_ID = "tokenizer.ggml.fim_mid_token_id"
    FIM_PAD_ID = "tokenizer.ggml.fim_pad_token_id"
    FIM_REP_ID = "tokenizer.ggml.fim_rep_token_id"
    FIM_SEP_ID = "tokenizer.ggml.fim_sep_token_id"
    PREFIX_ID = "tokenizer.ggml.prefix_token_id"    # deprecated spellings of the FIM ids
    SUFFIX_ID = "tokenizer.ggml.suffix_token_id"
    MIDDLE_ID = "tokenizer.ggml.middle_token_id"
    ADD_BOS = "tokenizer.ggml.add_bos_token"
    ADD_EOS = "tokenizer.ggml.add_eos_token"
    ADD_SEP = "tokenizer.ggml.add_sep_token"
    ADD_PREFIX = "tokenizer.ggml.add_space_prefix"
    REMOVE_EXTRA_WS = "tokenizer.ggml.remove_extra_whitespaces"
    NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
    NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"
