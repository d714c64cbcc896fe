"""Scalar helpers shared by the kernels: float bit casts, ggml's fp16/bf16/e8m0/ue4m3 conversions,
`nearest_int` and C's `roundf`, all reproducing ggml's arithmetic bit for bit.

numba promotes float32 with int64 or a Python float literal to float64, which ggml's float
arithmetic never does, so kernels wrap every literal in `F32(...)` and every integer operand in
`np.float32(...)`; the helpers here keep bit work in int64 (values fit in 33 bits) to avoid
numba's uint64/int64 -> float64 promotion.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F32 = np.float32

# ggml's GROUP_MAX_EPS (1e-15f): a group whose largest magnitude is below it quantizes to zeros.
# The i-quants use larger per-type ones, defined beside their quantizers.
GROUP_MAX_EPS = F32(1e-15)

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.int8)
# e2m1 values doubled (ggml's kvalues_fp4), shared by MXFP4 and NVFP4
KVALUES_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE bits of a float32, zero-extended to int64."""
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def codegen(context, builder, signature, args):
            return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))
        return types.int64(x), codegen
    return None


@intrinsic
def f32_from_bits(typingctx, b):
    """The float32 whose IEEE bits are the low 32 bits of an integer."""
    if isinstance(b, types.Integer):
        def codegen(context, builder, signature, args):
            v = args[0]
            if b.bitwidth > 32:
                v = builder.trunc(v, ir.IntType(32))
            elif b.bitwidth < 32:
                v = builder.zext(v, ir.IntType(32))
            return builder.bitcast(v, ir.FloatType())
        return types.float32(b), codegen
    return None


_SCALE_TO_INF = F32(2.0 ** 112)
_SCALE_TO_ZERO = F32(2.0 ** -110)


@njit(cache=True, inline="always")
def fp32_to_fp16(f):
    """ggml_compute_fp32_to_fp16: round-to-nearest-even float32 -> binary16 bits (int64)."""
    base = (abs(f) * _SCALE_TO_INF) * _SCALE_TO_ZERO
    w = f32_bits(f)
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = f32_from_bits((bias >> 1) + 0x07800000) + base
    bits = f32_bits(base)
    exp_bits = (bits >> 13) & 0x00007C00
    mantissa_bits = bits & 0x00000FFF
    nonsign = exp_bits + mantissa_bits
    if shl1_w > 0xFF000000:
        nonsign = 0x7E00
    return (sign >> 16) | nonsign


def _fp16_table() -> np.ndarray:
    """ggml_compute_fp16_to_fp32 for all 65536 halves, in NumPy float32 as the C code computes it."""
    h = np.arange(65536, dtype=np.uint32)
    w = h << 16
    sign = w & np.uint32(0x80000000)
    two_w = w + w
    with np.errstate(invalid="ignore"):  # NaN halves stay NaN, as in C
        normalized = ((two_w >> 4) + np.uint32(0xE0 << 23)).view(np.float32) * np.float32(2.0 ** -112)
    denormalized = ((two_w >> 17) | np.uint32(126 << 23)).view(np.float32) - np.float32(0.5)
    res = np.where(two_w < np.uint32(1 << 27), denormalized.view(np.uint32), normalized.view(np.uint32))
    return (sign | res).view(np.float32)


FP16_TO_FP32 = _fp16_table()


@njit(cache=True, inline="always")
def fp16_to_fp32(h):
    """ggml's GGML_FP16_TO_FP32 (exact; through the table)."""
    return FP16_TO_FP32[h]


@njit(cache=True, inline="always")
def fp32_to_bf16_bits(u):
    """ggml_compute_fp32_to_bf16 on the float's bits `u` (int64): RNE, NaNs forced quiet."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 64
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF


@intrinsic
def _f32_bits_i32(typingctx, x):
    """The IEEE bits of a float32 as an int32 (C's union pun)."""
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))
        return types.int32(x), codegen
    return None


@njit(cache=True, inline="always")
def nearest_int(fval):
    """ggml's nearest_int: round half to even through the 1.5 * 2^23 magic (float32 add), keeping
    the low 23 bits, so out-of-range values wrap as ggml's do (its assert is compiled out).

    An int32, as in C: the searches' inner loops over 16-32 values then vectorise twice as wide
    as with int64 (about 10% of a K-quant quantize)."""
    val = fval + F32(12582912.0)
    return np.int32((_f32_bits_i32(val) & np.int32(0x007FFFFF)) - np.int32(0x00400000))


@njit(cache=True, inline="always")
def roundf(x):
    """C roundf on a float32 (halves away from zero), as an int64."""
    t = np.trunc(x)
    if abs(x - t) >= F32(0.5):
        t += F32(1.0) if x > F32(0.0) else F32(-1.0)
    return np.int64(t)


@njit(cache=True, inline="always")
def e8m0_to_fp32_half(e):
    """ggml_e8m0_to_fp32_half: 2^(e-128) as float32 (denormal patterns for e < 2)."""
    if e < 2:
        return f32_from_bits(np.int64(0x00200000) << e)
    return f32_from_bits(np.int64(e - 1) << 23)


@njit(cache=True, inline="always")
def ue4m3_to_fp32(x):
    """ggml_ue4m3_to_fp32: the unsigned E4M3 scale, halved (kvalues are doubled e2m1)."""
    if x == 0 or x == 0x7F:
        return F32(0.0)
    exp = (x >> 3) & 0xF
    man = x & 0x7
    if exp == 0:
        raw = F32(man) * F32(2.0 ** -9)  # ldexpf(man, -9), exact
    else:
        # ldexpf(1 + man/8, exp-7): both steps exact in float32
        raw = (F32(1.0) + F32(man) / F32(8.0)) * f32_from_bits(np.int64(exp - 7 + 127) << 23)
    return raw * F32(0.5)


@njit(cache=True, inline="always")
def fp32_to_ue4m3(x):
    """ggml_fp32_to_ue4m3: round a positive float32 to UE4M3 bits (saturating at 0x7E)."""
    if not (x > F32(0.0)):
        return 0
    if x > F32(448.0):
        x = F32(448.0)
    bits = f32_bits(x)
    fp32_exp = ((bits >> 23) & 0xFF) - 127
    fp32_man = (bits >> 20) & 0x7
    ue4m3_exp = fp32_exp + 7
    if ue4m3_exp <= 0:
        man = np.int64(x * F32(512.0) + F32(0.5))
        if man > 7:
            man = 7
        if man < 1:
            return 0
        return man
    if ue4m3_exp >= 15:
        return 0x7E
    round_bit = (bits >> 19) & 1
    ue4m3_man = fp32_man + round_bit
    if ue4m3_man > 7:
        ue4m3_man = 0
        ue4m3_exp += 1
        if ue4m3_exp >= 15:
            return 0x7E
    return (ue4m3_exp << 3) | ue4m3_man


@njit(cache=True, inline="always")
def best_index_int8(values, x):
    """ggml's best_index_int8: index of the sorted int8 `values` nearest to float32 `x`."""
    n = values.shape[0]
    if x <= F32(values[0]):
        return 0
    if x >= F32(values[n - 1]):
        return n - 1
    ml = 0
    mu = n - 1
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < F32(values[mav]):
            mu = mav
        else:
            ml = mav
    # C: x - val[mu-1] < val[mu] - x, int8 promoted to float
    return mu - 1 if x - F32(values[mu - 1]) < F32(values[mu]) - x else mu


def _iq4nl_floor_table() -> np.ndarray:
    """For t = -128..113: the largest k in 0..14 with kvalues_iq4nl[k] <= t (0 below them all)."""
    t = np.arange(-128, 114)
    return (KVALUES_IQ4NL[None, 1:15] <= t[:, None]).sum(axis=1).astype(np.int8)


IQ4NL_FLOOR = _iq4nl_floor_table()
KVALUES_IQ4NL_F32 = KVALUES_IQ4NL.astype(np.float32)


@njit(cache=True, inline="always")
def best_index_iq4nl(x):
    """best_index_int8(16, kvalues_iq4nl, x) without its branchy binary search.

    The grid is integers, so for t = floor(x) the search's lower index (largest k with
    value[k] <= x) is a table entry; the final nearest-of-two test is ggml's float comparison.
    Outside the grid the same test gives 0 and 15, as ggml's early returns do.
    """
    xs = x if x == x else F32(0.0)  # keep a NaN from indexing the table
    t = min(max(np.floor(xs), F32(-128.0)), F32(113.0))
    ml = np.int64(IQ4NL_FLOOR[np.int64(t) + 128])
    r = ml + np.int64(not (x - KVALUES_IQ4NL_F32[ml] < KVALUES_IQ4NL_F32[ml + 1] - x))
    return 15 if x != x else r  # ggml's search runs to the top for NaN


@njit(cache=True, inline="always")
def dequantize_nibbles(kvalues, q, qo, d, y, yo, n, half):
    """The 4-bit codebook blocks (IQ4_NL/XS, MXFP4, NVFP4): byte q[qo+j] (j < n) holds value j in
    its low nibble and value j + half in its high one; y[yo + .] = d * kvalues[nibble]."""
    for j in range(n):
        b = q[qo + j]
        y[yo + j] = d * F32(kvalues[b & 0xF])
        y[yo + half + j] = d * F32(kvalues[b >> 4])


@njit(cache=True, inline="always")
def dot_nibbles(kvalues, b, bo, q8, qo, n):
    """Integer dot of n codebook bytes b[bo:bo+n] (low nibbles, then high) with the int8 values
    q8[qo:qo+2n]: the inner sums of ggml_vec_dot_{iq4_nl,iq4_xs,mxfp4,nvfp4}_*_generic."""
    s1 = 0
    s2 = 0
    for j in range(n):
        s1 += np.int64(np.int8(q8[qo + j])) * np.int64(kvalues[b[bo + j] & 0xF])
        s2 += np.int64(np.int8(q8[qo + n + j])) * np.int64(kvalues[b[bo + j] >> 4])
    return s1 + s2


@njit(cache=True, inline="always")
def get_f16(b, off):
    """The fp16 stored little-endian at b[off:off+2], as float32 (GGML_FP16_TO_FP32)."""
    return FP16_TO_FP32[np.int64(b[off]) | (np.int64(b[off + 1]) << 8)]


@njit(cache=True, inline="always")
def put_u16(y, off, v):
    """Store a little-endian uint16 into the uint8 array y[off:off+2]."""
    y[off] = v & 0xFF
    y[off + 1] = (v >> 8) & 0xFF


@njit(cache=True, inline="always")
def get_u16(b, off):
    """The little-endian uint16 at b[off:off+2], as int64."""
    return np.int64(b[off]) | (np.int64(b[off + 1]) << 8)


@njit(cache=True, inline="always")
def get_u32(b, off):
    """The little-endian uint32 at b[off:off+4], as int64."""
    return (np.int64(b[off]) | (np.int64(b[off + 1]) << 8) | (np.int64(b[off + 2]) << 16)
            | (np.int64(b[off + 3]) << 24))


@njit(cache=True, inline="always")
def put_u32(y, off, v):
    """Store a little-endian uint32 into the uint8 array y[off:off+4]."""
    y[off] = v & 0xFF
    y[off + 1] = (v >> 8) & 0xFF
    y[off + 2] = (v >> 16) & 0xFF
    y[off + 3] = (v >> 24) & 0xFF


def q8_K_activations(x: np.ndarray) -> np.ndarray:
    """Activations quantized to Q8_K (quantize_row_q8_K_ref) by the kernel registered for Q8_K
    (kernels/kquants.py); raises UnsupportedError while no such kernel is registered."""
    from ._registry import kernel_for

    k = kernel_for("Q8_K")
    if k.quantize is None:
        from llmtk.errors import UnsupportedError
        raise UnsupportedError("no Q8_K quantizer is registered; dot products against Q8_K need one")
    return k.quantize(np.ascontiguousarray(x, dtype=np.float32), None)
