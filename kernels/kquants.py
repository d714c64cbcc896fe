"""K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and their activation type Q8_K, bit-exact with ggml.

Quantize without an importance matrix reproduces ggml's `quantize_row_qN_K_ref`, with one its
`quantize_row_qN_K_impl(..., quant_weights)` (what `ggml_quantize_chunk` calls; both live in
`_kquant_quantize`); dequantize is `dequantize_row_qN_K`; matvec quantizes activations to Q8_K
(`quantize_row_q8_K_ref`) and runs the integer block dot products of
`ggml_vec_dot_qN_K_q8_K_generic` (ggml-cpu/quants.c).

For other kernel families: `quantize_row_q8_K(x, d, qs, bsums)` quantizes one row (cols,) f32 to
d (nb,) f32, qs (cols,) int8, bsums (nb*16,) int16, the activations every `*_q8_K` dot product
needs; `quantize_q8_K(x)` does (n, cols) rows in parallel. The scale searches live in `_search`.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from llmtk.ggufio.constants import QK_K, GGMLType, type_traits
from llmtk.kernels._kquant_dot import matvec_rows, vec_dot_q2_K_q8_K  # noqa: F401  (tests call it)
from llmtk.kernels._kquant_quantize import Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, _b, _i8, _q3_K_scale, _quantize_rows, get_scale_min_k4
from llmtk.kernels._numeric import f32_bits, f32_from_bits, get_f16, get_u32, nearest_int
from llmtk.kernels._registry import register

Q8_K_SIZE = type_traits(GGMLType.Q8_K).type_size  # d:4 (f32) qs:256 bsums:32
_EMPTY_F32 = np.empty(0, dtype=np.float32)


# ----------------------------------------------------------------------------- Q8_K
# block_q8_K: d:f32 qs:int8[256] bsums:int16[16]  (292 bytes)

@njit(cache=True, error_model="numpy")
def quantize_row_q8_K(x, d, qs, bsums):
    """ggml `quantize_row_q8_K_ref` on one row x (cols,) f32 into d (nb,), qs (cols,), bsums (nb*16,).

    An all-zero block gets d = 0, zero quants and zero bsums (ggml leaves its bsums unwritten).
    """
    nb = x.size // QK_K
    for i in range(nb):
        o = i * QK_K
        vmax = np.float32(0.0)
        amax = np.float32(0.0)
        for j in range(QK_K):
            ax = np.abs(x[o + j])
            if ax > amax:
                amax = ax
                vmax = x[o + j]
        if amax == 0:
            d[i] = np.float32(0.0)
            for j in range(QK_K):
                qs[o + j] = 0
            for j in range(QK_K // 16):
                bsums[i * 16 + j] = 0
            continue
        iscale = np.float32(-127.0) / vmax
        for j in range(QK_K):
            v = nearest_int(iscale * x[o + j])
            qs[o + j] = min(127, v)
        for j in range(QK_K // 16):
            s = 0
            for ii in range(16):
                s += qs[o + j * 16 + ii]
            bsums[i * 16 + j] = s
        d[i] = np.float32(1.0) / iscale


@njit(cache=True, error_model="numpy", parallel=True)
def quantize_q8_K(x):
    """Rows of x (n, cols) f32 to Q8_K as (d (n, nb) f32, qs (n, cols) int8, bsums (n, nb*16) int16)."""
    n, cols = x.shape
    nb = cols // QK_K
    d = np.empty((n, nb), dtype=np.float32)
    qs = np.empty((n, cols), dtype=np.int8)
    bsums = np.empty((n, nb * 16), dtype=np.int16)
    for r in prange(n):
        quantize_row_q8_K(x[r], d[r], qs[r], bsums[r])
    return d, qs, bsums


@njit(cache=True, error_model="numpy", parallel=True)
def _pack_q8_K(d, qs, bsums, out):
    n, nb = d.shape
    for r in prange(n):
        for i in range(nb):
            o = i * Q8_K_SIZE
            bits = f32_bits(d[r, i])
            for k in range(4):
                out[r, o + k] = (bits >> (8 * k)) & 0xFF
            for j in range(QK_K):
                out[r, o + 4 + j] = qs[r, i * QK_K + j] & 0xFF
            for j in range(16):
                v = np.int64(bsums[r, i * 16 + j])
                out[r, o + 260 + 2 * j] = v & 0xFF
                out[r, o + 261 + 2 * j] = (v >> 8) & 0xFF


@njit(cache=True, error_model="numpy", parallel=True)
def _dequantize_q8_K(data, out):
    # ggml `dequantize_row_q8_K`: d * qs
    rows, cols = out.shape
    for r in prange(rows):
        for i in range(cols // QK_K):
            o = i * Q8_K_SIZE
            d = f32_from_bits(get_u32(data[r], o))
            for j in range(QK_K):
                out[r, i * QK_K + j] = d * np.float32(_i8(np.int64(data[r, o + 4 + j])))


# The generic K-quant dot products keep 8 float lanes (ggml's `sums[8]`), summed at the end in order.

@njit(cache=True, error_model="numpy", inline="always")
def _add_lanes(sums, d, aux32):
    for l in range(8):
        sums[l] += d * np.float32(aux32[l])


@njit(cache=True, error_model="numpy", inline="always")
def _lane_sum(sumf, sums):
    for l in range(8):
        sumf += sums[l]
    return sumf


# ----------------------------------------------------------------------------- Q2_K
# block_q2_K: scales:16 qs:64 d:2 dmin:2  (84 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _dequantize_row_q2_K(x, y, n16):
    # each byte holds the values of four planes (shift 0, 2, 4, 6): read it once for all four;
    # value 128n + 32p + 16h + l uses scale byte 8n + 2p + h
    for i in range(y.size // QK_K):
        o = i * 84
        d = get_f16(x, o + 80)
        vmin = get_f16(x, o + 82)
        for n in range(2):
            for half in range(2):
                s = o + 8 * n + half
                dl0 = d * np.float32(_b(x, s) & 0xF)
                ml0 = vmin * np.float32(_b(x, s) >> 4)
                dl1 = d * np.float32(_b(x, s + 2) & 0xF)
                ml1 = vmin * np.float32(_b(x, s + 2) >> 4)
                dl2 = d * np.float32(_b(x, s + 4) & 0xF)
                ml2 = vmin * np.float32(_b(x, s + 4) >> 4)
                dl3 = d * np.float32(_b(x, s + 6) & 0xF)
                ml3 = vmin * np.float32(_b(x, s + 6) >> 4)
                qq = o + 16 + 32 * n + 16 * half
                out = i * QK_K + 128 * n + 16 * half
                for l in range(n16):
                    v = x[qq + l]
                    y[out + l] = dl0 * np.float32(v & 3) - ml0
                    y[out + 32 + l] = dl1 * np.float32((v >> 2) & 3) - ml1
                    y[out + 64 + l] = dl2 * np.float32((v >> 4) & 3) - ml2
                    y[out + 96 + l] = dl3 * np.float32(v >> 6) - ml3


@njit(cache=True, error_model="numpy")
def dequantize_row_q2_K(x, y):
    """ggml `dequantize_row_q2_K`: x (nb*84,) uint8 -> y (nb*256,) f32."""
    _dequantize_row_q2_K(x, y, 16)


# ----------------------------------------------------------------------------- Q3_K
# block_q3_K: hmask:32 qs:64 scales:12 d:2  (110 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _dequantize_row_q3_K(x, y, n16):
    for i in range(y.size // QK_K):
        o = i * 110
        d_all = get_f16(x, o + 108)
        is_ = 0
        for n in range(2):
            q = o + 32 + 32 * n
            for p in range(4):
                shift = 2 * p
                m = 1 << (4 * n + p)
                for half in range(2):
                    dl = d_all * np.float32(_q3_K_scale(x, o + 96, is_))
                    is_ += 1
                    out = i * QK_K + 128 * n + 32 * p + 16 * half
                    qq = q + 16 * half
                    hh = o + 16 * half
                    for l in range(n16):
                        v = ((x[qq + l] >> shift) & 3) - (0 if (x[hh + l] & m) else 4)
                        y[out + l] = dl * np.float32(v)


@njit(cache=True, error_model="numpy")
def dequantize_row_q3_K(x, y):
    """ggml `dequantize_row_q3_K`: x (nb*110,) uint8 -> y (nb*256,) f32."""
    _dequantize_row_q3_K(x, y, 16)


@njit(cache=True, error_model="numpy")
def vec_dot_q3_K_q8_K(x, d8, qs8, bsums8):
    """ggml `ggml_vec_dot_q3_K_q8_K_generic` (8 float lanes summed at the end, in order)."""
    sums = np.zeros(8, dtype=np.float32)
    aux32 = np.empty(8, dtype=np.int64)
    for i in range(d8.size):
        o = i * 110
        q8 = i * QK_K
        aux32[:] = 0
        # value k of the block: 2-bit plane k // 32 of qs[32*(k//128) + k%32], high bit in hmask
        for k in range(QK_K):
            b = k // 32
            a = ((_b(x, o + 32 + 32 * (b // 4) + k % 32) >> (2 * (b % 4))) & 3) - (0 if (_b(x, o + k % 32) >> b) & 1 else 4)
            aux32[k % 8] += _q3_K_scale(x, o + 96, k // 16) * (np.int64(qs8[q8 + k]) * a)
        d = get_f16(x, o + 108) * d8[i]
        _add_lanes(sums, d, aux32)
    return _lane_sum(np.float32(0.0), sums)


# ----------------------------------------------------------------------------- Q4_K
# block_q4_K: d:2 dmin:2 scales:12 qs:128  (144 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _dequantize_row_q4_K(x, y, n16):
    n32 = 2 * n16
    for i in range(y.size // QK_K):
        o = i * 144
        d = get_f16(x, o)
        vmin = get_f16(x, o + 2)
        for j in range(4):
            q = o + 16 + 32 * j
            out = i * QK_K + 64 * j
            sc, m = get_scale_min_k4(2 * j, x, o + 4)
            d1 = d * np.float32(sc)
            m1 = vmin * np.float32(m)
            sc, m = get_scale_min_k4(2 * j + 1, x, o + 4)
            d2 = d * np.float32(sc)
            m2 = vmin * np.float32(m)
            for l in range(n32):
                y[out + l] = d1 * np.float32(x[q + l] & 0xF) - m1
            for l in range(n32):
                y[out + 32 + l] = d2 * np.float32(x[q + l] >> 4) - m2


@njit(cache=True, error_model="numpy")
def dequantize_row_q4_K(x, y):
    """ggml `dequantize_row_q4_K`: x (nb*144,) uint8 -> y (nb*256,) f32."""
    _dequantize_row_q4_K(x, y, 16)


@njit(cache=True, error_model="numpy", inline="always")
def _k4_dot_tail(x, o, i, d8, bsums8, aux32, sums, sumf):
    # common end of the Q4_K / Q5_K generic dot products: min correction and lane sums
    sumi = 0
    for j in range(QK_K // 16):
        sc, m = get_scale_min_k4(j // 2, x, o + 4)
        sumi += np.int64(bsums8[i * 16 + j]) * m
    _add_lanes(sums, get_f16(x, o) * d8[i], aux32)
    dmin = get_f16(x, o + 2) * d8[i]
    return sumf - dmin * np.float32(sumi)


@njit(cache=True, error_model="numpy")
def vec_dot_q4_K_q8_K(x, d8, qs8, bsums8):
    """ggml `ggml_vec_dot_q4_K_q8_K_generic`."""
    sums = np.zeros(8, dtype=np.float32)
    aux32 = np.empty(8, dtype=np.int64)
    sumf = np.float32(0.0)
    for i in range(d8.size):
        o = i * 144
        q8 = i * QK_K
        aux32[:] = 0
        for j in range(QK_K // 32):
            sc, m = get_scale_min_k4(j, x, o + 4)
            q = o + 16 + 32 * (j // 2)
            shift = 4 * (j % 2)
            for l in range(32):
                a = (_b(x, q + l) >> shift) & 0xF
                aux32[l % 8] += sc * (np.int64(qs8[q8 + 32 * j + l]) * a)
        sumf = _k4_dot_tail(x, o, i, d8, bsums8, aux32, sums, sumf)
    return _lane_sum(sumf, sums)


# ----------------------------------------------------------------------------- Q5_K
# block_q5_K: d:2 dmin:2 scales:12 qh:32 qs:128  (176 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _dequantize_row_q5_K(x, y, n16):
    n32 = 2 * n16
    for i in range(y.size // QK_K):
        o = i * 176
        d = get_f16(x, o)
        vmin = get_f16(x, o + 2)
        qh = o + 16
        for j in range(4):
            ql = o + 48 + 32 * j
            out = i * QK_K + 64 * j
            u1 = 1 << (2 * j)
            u2 = 2 << (2 * j)
            sc, m = get_scale_min_k4(2 * j, x, o + 4)
            d1 = d * np.float32(sc)
            m1 = vmin * np.float32(m)
            sc, m = get_scale_min_k4(2 * j + 1, x, o + 4)
            d2 = d * np.float32(sc)
            m2 = vmin * np.float32(m)
            for l in range(n32):
                v = x[ql + l]
                h = x[qh + l]
                y[out + l] = d1 * np.float32((v & 0xF) + (16 if h & u1 else 0)) - m1
                y[out + 32 + l] = d2 * np.float32((v >> 4) + (16 if h & u2 else 0)) - m2


@njit(cache=True, error_model="numpy")
def dequantize_row_q5_K(x, y):
    """ggml `dequantize_row_q5_K`: x (nb*176,) uint8 -> y (nb*256,) f32."""
    _dequantize_row_q5_K(x, y, 16)


@njit(cache=True, error_model="numpy")
def vec_dot_q5_K_q8_K(x, d8, qs8, bsums8):
    """ggml `ggml_vec_dot_q5_K_q8_K_generic`."""
    sums = np.zeros(8, dtype=np.float32)
    aux32 = np.empty(8, dtype=np.int64)
    sumf = np.float32(0.0)
    for i in range(d8.size):
        o = i * 176
        q8 = i * QK_K
        aux32[:] = 0
        for j in range(QK_K // 32):
            sc, m = get_scale_min_k4(j, x, o + 4)
            q = o + 48 + 32 * (j // 2)
            shift = 4 * (j % 2)
            for l in range(32):
                a = ((_b(x, q + l) >> shift) & 0xF) + (16 if (_b(x, o + 16 + l) >> j) & 1 else 0)
                aux32[l % 8] += sc * (np.int64(qs8[q8 + 32 * j + l]) * a)
        sumf = _k4_dot_tail(x, o, i, d8, bsums8, aux32, sums, sumf)
    return _lane_sum(sumf, sums)


# ----------------------------------------------------------------------------- Q6_K
# block_q6_K: ql:128 qh:64 scales:16 (int8) d:2  (210 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _dequantize_row_q6_K(x, y, n16):
    # ggml computes d * sc[is] * q: (d*sc) is the same float for 16 consecutive values
    for i in range(y.size // QK_K):
        o = i * 210
        d = get_f16(x, o + 208)
        for n in range(2):
            ql = o + 64 * n
            qh = o + 128 + 32 * n
            sc = o + 192 + 8 * n
            for half in range(2):
                out = i * QK_K + 128 * n + 16 * half
                a = ql + 16 * half
                h = qh + 16 * half
                s = sc + half
                ds1 = d * np.float32(_i8(_b(x, s)))
                ds2 = d * np.float32(_i8(_b(x, s + 2)))
                ds3 = d * np.float32(_i8(_b(x, s + 4)))
                ds4 = d * np.float32(_i8(_b(x, s + 6)))
                for l in range(n16):
                    lo = x[a + l]
                    hi = x[a + 32 + l]
                    hh = x[h + l]
                    y[out + l] = ds1 * np.float32(((lo & 0xF) | ((hh & 3) << 4)) - 32)
                    y[out + 32 + l] = ds2 * np.float32(((hi & 0xF) | (((hh >> 2) & 3) << 4)) - 32)
                    y[out + 64 + l] = ds3 * np.float32(((lo >> 4) | (((hh >> 4) & 3) << 4)) - 32)
                    y[out + 96 + l] = ds4 * np.float32(((hi >> 4) | (((hh >> 6) & 3) << 4)) - 32)


@njit(cache=True, error_model="numpy")
def dequantize_row_q6_K(x, y):
    """ggml `dequantize_row_q6_K`: x (nb*210,) uint8 -> y (nb*256,) f32."""
    _dequantize_row_q6_K(x, y, 16)


@njit(cache=True, error_model="numpy")
def vec_dot_q6_K_q8_K(x, d8, qs8, bsums8):
    """ggml `ggml_vec_dot_q6_K_q8_K_generic`."""
    sums = np.zeros(8, dtype=np.float32)
    aux32 = np.empty(8, dtype=np.int64)
    for i in range(d8.size):
        o = i * 210
        q8 = i * QK_K
        aux32[:] = 0
        for k in range(QK_K):
            n = k // 128
            r = k % 128
            plane = r // 32
            l = r % 32
            qlb = _b(x, o + 64 * n + l + 32 * (plane % 2))
            lo = (qlb & 0xF) if plane < 2 else (qlb >> 4)
            a = (lo | (((_b(x, o + 128 + 32 * n + l) >> (2 * plane)) & 3) << 4)) - 32
            aux32[k % 8] += _i8(np.int64(x[o + 192 + k // 16])) * (np.int64(qs8[q8 + k]) * a)
        d = get_f16(x, o + 208) * d8[i]
        _add_lanes(sums, d, aux32)
    return _lane_sum(np.float32(0.0), sums)


# ----------------------------------------------------------------------------- row drivers

@njit(cache=True, error_model="numpy", parallel=True)
def _dequantize_rows(data, out, qtype, n16):
    # n16 is 16, passed at run time: with a trip count LLVM cannot see, it vectorises the inner
    # loops (with alias checks) instead of unrolling them into scalar code
    for r in prange(data.shape[0]):
        if qtype == Q2_K:
            _dequantize_row_q2_K(data[r], out[r], n16)
        elif qtype == Q3_K:
            _dequantize_row_q3_K(data[r], out[r], n16)
        elif qtype == Q4_K:
            _dequantize_row_q4_K(data[r], out[r], n16)
        elif qtype == Q5_K:
            _dequantize_row_q5_K(data[r], out[r], n16)
        elif qtype == Q6_K:
            _dequantize_row_q6_K(data[r], out[r], n16)


# ----------------------------------------------------------------------------- registration

def _quantizer(qtype: GGMLType):
    tsize = type_traits(qtype).type_size

    def quantize(x: npt.NDArray[np.float32], imatrix: npt.NDArray[np.float32] | None) -> npt.NDArray[np.uint8]:
        rows, cols = x.shape
        out = np.empty((rows, cols // QK_K * tsize), dtype=np.uint8)
        _quantize_rows(x, _EMPTY_F32 if imatrix is None else imatrix, out, int(qtype), 16)
        return out

    quantize.__doc__ = f"ggml's quantize_{qtype.name.lower()} (ref without imatrix, impl with one)."
    return quantize


def _dequantizer(qtype: GGMLType):
    def dequantize(data: npt.NDArray[np.uint8], cols: int) -> npt.NDArray[np.float32]:
        out = np.empty((data.shape[0], cols), dtype=np.float32)
        _dequantize_rows(data, out, int(qtype), 16)
        return out

    dequantize.__doc__ = f"ggml's dequantize_row_{qtype.name.lower()}."
    return dequantize


def _matvec(qtype: GGMLType):
    def matvec(w: npt.NDArray[np.uint8], x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        d8, qs8, bsums8 = quantize_q8_K(x)
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        matvec_rows(w, d8, qs8, bsums8, out, int(qtype))
        return out

    matvec.__doc__ = f"x @ W.T via Q8_K activations and ggml_vec_dot_{qtype.name.lower()}_q8_K_generic."
    return matvec


def _quantize_q8_K_bytes(x: npt.NDArray[np.float32], imatrix: npt.NDArray[np.float32] | None) -> npt.NDArray[np.uint8]:
    """ggml's quantize_row_q8_K_ref on every row (an imatrix does not apply to Q8_K)."""
    d, qs, bsums = quantize_q8_K(x)
    out = np.empty((x.shape[0], d.shape[1] * Q8_K_SIZE), dtype=np.uint8)
    _pack_q8_K(d, qs, bsums, out)
    return out


def _dequantize_q8_K_bytes(data: npt.NDArray[np.uint8], cols: int) -> npt.NDArray[np.float32]:
    out = np.empty((data.shape[0], cols), dtype=np.float32)
    _dequantize_q8_K(data, out)
    return out


for _t in (GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K):
    register(_t, quantize=_quantizer(_t), dequantize=_dequantizer(_t), matvec=_matvec(_t), vec_dot_type="Q8_K")
register(GGMLType.Q8_K, quantize=_quantize_q8_K_bytes, dequantize=_dequantize_q8_K_bytes)
del _t
