"""K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and their activation type Q8_K, bit-exact with ggml.

Quantize without an importance matrix reproduces ggml's `quantize_row_qN_K_ref`, with one its
`quantize_row_qN_K_impl(..., quant_weights)` (what `ggml_quantize_chunk` calls); dequantize is
`dequantize_row_qN_K`; matvec quantizes activations to Q8_K (`quantize_row_q8_K_ref`) and runs
the integer block dot products of `ggml_vec_dot_qN_K_q8_K_generic` (ggml-cpu/quants.c).

For other kernel families (importable, all `@njit(cache=True)`):
- `quantize_row_q8_K(x, d, qs, bsums)`: one row (cols,) f32 -> d (nb,) f32, qs (cols,) int8,
  bsums (nb*16,) int16: the activation quantizer every `*_q8_K` dot product needs;
  `quantize_q8_K(x)` does (n, cols) rows in parallel and returns the three arrays (n, ...).
- the shared scale searches, `nearest_int` and fp16 conversions live in `_kquant_search`
  (`make_qx_quants`, `make_q3_quants`, `make_qkx1_quants`, `make_qkx2_quants`,
  `make_qkx3_quants`, `make_qp_quants`, `nearest_int`, `fp16_to_fp32`, `fp32_to_fp16`) and are
  re-exported here.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from llmtk.constants import GGMLType, type_traits
from llmtk.kernels._kquant_search import (  # noqa: F401  (re-exported for other families)
    GROUP_MAX_EPS,
    bits_to_f32,
    f32_to_bits,
    fp16_to_fp32,
    fp32_to_fp16,
    make_q3_quants,
    make_qkx1_quants,
    make_qkx2_quants,
    make_qkx2_quants_ws,
    make_qkx3_quants,
    make_qkx3_quants_ws,
    make_qp_quants,
    make_qx_quants,
    make_qx_quants_ws,
    nearest_int,
)
from llmtk.kernels._registry import register

QK_K = 256

# ggml type ids, used to pick a kernel inside the shared row drivers
_Q2_K, _Q3_K, _Q4_K, _Q5_K, _Q6_K, _Q8_K = 10, 11, 12, 13, 14, 15
_EMPTY_F32 = np.empty(0, dtype=np.float32)


# ----------------------------------------------------------------------------- byte helpers

@njit(cache=True, inline="always")
def _b(a, i):
    # read a byte as int64: numba types uint8 >> int as uint64, and uint64 mixed with int64
    # silently becomes float64 (or fails for bitwise ops)
    return np.int64(a[i])


@njit(cache=True, inline="always")
def _put_f16(y, off, h):
    y[off] = h & 0xFF
    y[off + 1] = h >> 8


@njit(cache=True, inline="always")
def _get_f16(y, off):
    return fp16_to_fp32(np.int64(y[off]) | (np.int64(y[off + 1]) << 8))


@njit(cache=True, inline="always")
def _i8(v):
    # C's conversion of an int to int8_t (wraps)
    return ((v + 128) & 0xFF) - 128


@njit(cache=True, inline="always")
def get_scale_min_k4(j, q, off):
    """ggml `get_scale_min_k4`: the j-th 6-bit (scale, min) pair of Q4_K/Q5_K's 12 scale bytes."""
    if j < 4:
        return _b(q, off + j) & 63, _b(q, off + j + 4) & 63
    sc = (_b(q, off + j + 4) & 0xF) | ((_b(q, off + j - 4) >> 6) << 4)
    m = (_b(q, off + j + 4) >> 4) | ((_b(q, off + j) >> 6) << 4)
    return sc, m


@njit(cache=True, inline="always")
def _q3_K_scale(y, off, j):
    # the j-th signed 6-bit scale of Q3_K's 12 scale bytes, minus 32
    lo = (_b(y, off + j) & 0xF) if j < 8 else (_b(y, off + j - 8) >> 4)
    return (lo | (((_b(y, off + 8 + j % 4) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(cache=True, inline="always")
def _pack_2bit(L, y, off):
    # four 2-bit planes per 128 values, shared by Q2_K and Q3_K
    for j in range(0, QK_K, 128):
        for l in range(32):
            y[off + j // 4 + l] = (L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4)
                                   | (L[j + l + 96] << 6))


@njit(cache=True, inline="always")
def _pack_k4_scales(y, off, Ls, Lm):
    # 8 (scale, min) 6-bit pairs into 12 bytes, the layout get_scale_min_k4 reads
    for j in range(QK_K // 32):
        ls = np.int64(Ls[j])
        lm = np.int64(Lm[j])
        if j < 4:
            y[off + j] = ls
            y[off + j + 4] = lm
        else:
            y[off + j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            y[off + j - 4] |= (ls >> 4) << 6
            y[off + j] |= (lm >> 4) << 6


# ----------------------------------------------------------------------------- Q8_K
# block_q8_K: d:f32 qs:int8[256] bsums:int16[16]  (292 bytes)

@njit(cache=True)
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


@njit(cache=True, parallel=True)
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


@njit(cache=True, parallel=True)
def _pack_q8_K(d, qs, bsums, out):
    n, nb = d.shape
    for r in prange(n):
        for i in range(nb):
            o = i * 292
            bits = np.int64(f32_to_bits(d[r, i]))
            for k in range(4):
                out[r, o + k] = (bits >> (8 * k)) & 0xFF
            for j in range(QK_K):
                out[r, o + 4 + j] = qs[r, i * QK_K + j] & 0xFF
            for j in range(16):
                v = np.int64(bsums[r, i * 16 + j])
                out[r, o + 260 + 2 * j] = v & 0xFF
                out[r, o + 261 + 2 * j] = (v >> 8) & 0xFF


@njit(cache=True, parallel=True)
def _dequantize_q8_K(data, out):
    # ggml `dequantize_row_q8_K`: d * qs
    rows, cols = out.shape
    for r in prange(rows):
        for i in range(cols // QK_K):
            o = i * 292
            bits = (np.int64(data[r, o]) | (np.int64(data[r, o + 1]) << 8) | (np.int64(data[r, o + 2]) << 16)
                    | (np.int64(data[r, o + 3]) << 24))
            d = bits_to_f32(np.uint32(bits))
            for j in range(QK_K):
                out[r, i * QK_K + j] = d * np.float32(_i8(np.int64(data[r, o + 4 + j])))


# ----------------------------------------------------------------------------- Q2_K
# block_q2_K: scales:16 qs:64 d:2 dmin:2  (84 bytes)

@njit(cache=True, inline="always")
def _q2_K_requantize_and_pack(x, y, o, L):
    d_all = _get_f16(y, o + 80)
    m_all = _get_f16(y, o + 82)
    for j in range(QK_K // 16):
        d = d_all * np.float32(y[o + j] & 0xF)
        if d == 0:
            continue
        dm = m_all * np.float32(_b(y, o + j) >> 4)
        for ii in range(16):
            l = nearest_int((x[16 * j + ii] + dm) / d)
            L[16 * j + ii] = max(0, min(3, l))
    _pack_2bit(L, y, o + 16)


@njit(cache=True)
def quantize_row_q2_K_ref(x, y):
    """ggml `quantize_row_q2_K_ref`: x (cols,) f32 -> y (cols/256*84,) uint8."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.uint8)
    Laux = np.empty(16, dtype=np.uint8)
    weights = np.empty(16, dtype=np.float32)
    mins = np.empty(QK_K // 16, dtype=np.float32)
    scales = np.empty(QK_K // 16, dtype=np.float32)
    q4scale = np.float32(15.0)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 84
        max_scale = np.float32(0.0)
        max_min = np.float32(0.0)
        for j in range(QK_K // 16):
            xs = xb[16 * j:16 * j + 16]
            for l in range(16):
                weights[l] = np.abs(xs[l])
            s, m = make_qkx2_quants_ws(16, 3, xs, weights, L[16 * j:16 * j + 16], Laux,
                                       np.float32(-0.5), np.float32(0.1), 15, True, ws)
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        if max_scale > 0:
            iscale = q4scale / max_scale
            for j in range(QK_K // 16):
                y[o + j] = nearest_int(iscale * scales[j]) & 0xFF
            _put_f16(y, o + 80, fp32_to_fp16(max_scale / q4scale))
        else:
            for j in range(QK_K // 16):
                y[o + j] = 0
            _put_f16(y, o + 80, fp32_to_fp16(np.float32(0.0)))
        if max_min > 0:
            iscale = q4scale / max_min
            for j in range(QK_K // 16):
                y[o + j] = (y[o + j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            _put_f16(y, o + 82, fp32_to_fp16(max_min / q4scale))
        else:
            _put_f16(y, o + 82, fp32_to_fp16(np.float32(0.0)))
        _q2_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True)
def quantize_row_q2_K_impl(x, y, quant_weights):
    """ggml `quantize_row_q2_K_impl` (importance-weighted): quant_weights (cols,) f32."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.uint8)
    Laux = np.empty(16, dtype=np.uint8)
    mins = np.empty(QK_K // 16, dtype=np.float32)
    scales = np.empty(QK_K // 16, dtype=np.float32)
    sw = np.empty(QK_K // 16, dtype=np.float32)
    weight = np.empty(16, dtype=np.float32)
    Ls = np.empty(QK_K // 16, dtype=np.uint8)
    Lm = np.empty(QK_K // 16, dtype=np.uint8)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 84
        sumx2 = np.float32(0.0)
        for j in range(QK_K):
            sumx2 += xb[j] * xb[j]
        sigma2 = sumx2 / np.float32(QK_K)
        for j in range(QK_K // 16):
            qw = quant_weights[QK_K * i + 16 * j:QK_K * i + 16 * j + 16]
            for l in range(16):
                weight[l] = qw[l] * np.sqrt(sigma2 + xb[16 * j + l] * xb[16 * j + l])
            s = np.float32(0.0)
            for l in range(16):
                s += weight[l]
            sw[j] = s
            sc, m = make_qkx3_quants_ws(16, 3, xb[16 * j:16 * j + 16], weight, L[16 * j:16 * j + 16], Laux,
                                        np.float32(-0.9), np.float32(0.05), 36, False, ws)
            scales[j] = sc
            mins[j] = m
        dm = make_qp_quants(QK_K // 16, 15, scales, Ls, sw)
        mm = make_qp_quants(QK_K // 16, 15, mins, Lm, sw)
        _put_f16(y, o + 80, fp32_to_fp16(dm))
        _put_f16(y, o + 82, fp32_to_fp16(mm))
        for j in range(QK_K // 16):
            y[o + j] = (_b(Ls, j) | (_b(Lm, j) << 4)) & 0xFF
        _q2_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True)
def dequantize_row_q2_K(x, y):
    """ggml `dequantize_row_q2_K`: x (nb*84,) uint8 -> y (nb*256,) f32."""
    for i in range(y.size // QK_K):
        o = i * 84
        d = _get_f16(x, o + 80)
        vmin = _get_f16(x, o + 82)
        out = i * QK_K
        is_ = 0
        for n in range(0, QK_K, 128):
            q = o + 16 + n // 4
            for shift in range(0, 8, 2):
                for half in range(2):
                    sc = _b(x, o + is_)
                    is_ += 1
                    dl = d * np.float32(sc & 0xF)
                    ml = vmin * np.float32(sc >> 4)
                    for l in range(16):
                        y[out] = dl * np.float32((_b(x, q + 16 * half + l) >> shift) & 3) - ml
                        out += 1


@njit(cache=True)
def vec_dot_q2_K_q8_K(x, d8, qs8, bsums8):
    """ggml `ggml_vec_dot_q2_K_q8_K_generic`: one Q2_K row against one Q8_K row."""
    sumf = np.float32(0.0)
    for i in range(d8.size):
        o = i * 84
        summs = 0
        for j in range(16):
            summs += np.int64(bsums8[i * 16 + j]) * (_b(x, o + j) >> 4)
        dall = d8[i] * _get_f16(x, o + 80)
        dmin = d8[i] * _get_f16(x, o + 82)
        isum = 0
        is_ = 0
        q8 = i * QK_K
        for k in range(QK_K // 128):
            q2 = o + 16 + 32 * k
            for shift in range(0, 8, 2):
                for half in range(2):
                    d = _b(x, o + is_) & 0xF
                    is_ += 1
                    isuml = 0
                    for l in range(16 * half, 16 * half + 16):
                        isuml += np.int64(qs8[q8 + l]) * ((_b(x, q2 + l) >> shift) & 3)
                    isum += d * isuml
                q8 += 32
        sumf += dall * np.float32(isum) - dmin * np.float32(summs)
    return sumf


# ----------------------------------------------------------------------------- Q3_K
# block_q3_K: hmask:32 qs:64 scales:12 d:2  (110 bytes)

@njit(cache=True, inline="always")
def _q3_K_put_scale(y, off, j, l):
    # store the j-th biased 6-bit scale l (0..63) into Q3_K's 12 scale bytes
    if j < 8:
        y[off + j] = l & 0xF
    else:
        y[off + j - 8] |= (l & 0xF) << 4
    y[off + j % 4 + 8] |= (l >> 4) << (2 * (j // 4))


@njit(cache=True, inline="always")
def _q3_K_requantize_and_pack(x, y, o, L):
    d_all = _get_f16(y, o + 108)
    for j in range(QK_K // 16):
        d = d_all * np.float32(_q3_K_scale(y, o + 96, j))
        if d == 0:
            continue
        for ii in range(16):
            l = nearest_int(x[16 * j + ii] / d)
            L[16 * j + ii] = max(-4, min(3, l)) + 4
    # high bit of value j goes to bit j // 32 of hmask[j % 32]
    for m in range(QK_K // 8):
        y[o + m] = 0
    for j in range(QK_K):
        if L[j] > 3:
            y[o + j % 32] |= 1 << (j // 32)
            L[j] -= 4
    _pack_2bit(L, y, o + 32)


@njit(cache=True)
def quantize_row_q3_K_ref(x, y):
    """ggml `quantize_row_q3_K_ref`: x (cols,) f32 -> y (cols/256*110,) uint8."""
    L = np.empty(QK_K, dtype=np.int8)
    scales = np.empty(QK_K // 16, dtype=np.float32)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 110
        max_scale = np.float32(0.0)
        amax = np.float32(0.0)
        for j in range(QK_K // 16):
            s = make_q3_quants(16, 4, xb[16 * j:16 * j + 16], L[16 * j:16 * j + 16], True)
            scales[j] = s
            if np.abs(s) > amax:
                amax = np.abs(s)
                max_scale = s
        for k in range(12):
            y[o + 96 + k] = 0
        if max_scale != 0:
            iscale = np.float32(-32.0) / max_scale
            for j in range(QK_K // 16):
                l = _i8(nearest_int(iscale * scales[j]))
                _q3_K_put_scale(y, o + 96, j, max(-32, min(31, l)) + 32)
            _put_f16(y, o + 108, fp32_to_fp16(np.float32(1.0) / iscale))
        else:
            _put_f16(y, o + 108, fp32_to_fp16(np.float32(0.0)))
        _q3_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True)
def quantize_row_q3_K_impl(x, y, quant_weights):
    """ggml `quantize_row_q3_K_impl` with quant_weights (cols,) f32."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.int8)
    scales = np.empty(QK_K // 16, dtype=np.float32)
    weight = np.empty(16, dtype=np.float32)
    sw = np.empty(QK_K // 16, dtype=np.float32)
    Ls = np.empty(QK_K // 16, dtype=np.int8)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 110
        sumx2 = np.float32(0.0)
        for j in range(QK_K):
            sumx2 += xb[j] * xb[j]
        sigma2 = np.float32(2.0) * sumx2 / np.float32(QK_K)
        for j in range(QK_K // 16):
            qw = quant_weights[QK_K * i + 16 * j:QK_K * i + 16 * j + 16]
            for l in range(16):
                weight[l] = qw[l] * np.sqrt(sigma2 + xb[16 * j + l] * xb[16 * j + l])
            sumw = np.float32(0.0)
            for l in range(16):
                sumw += weight[l]
            sw[j] = sumw
            scales[j] = make_qx_quants_ws(16, 4, xb[16 * j:16 * j + 16], L[16 * j:16 * j + 16], 1, weight, ws)
        for k in range(12):
            y[o + 96 + k] = 0
        d_block = make_qx_quants_ws(QK_K // 16, 32, scales, Ls, 1, sw, ws)
        for j in range(QK_K // 16):
            _q3_K_put_scale(y, o + 96, j, np.int64(Ls[j]))
        _put_f16(y, o + 108, fp32_to_fp16(d_block))
        _q3_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True)
def dequantize_row_q3_K(x, y):
    """ggml `dequantize_row_q3_K`: x (nb*110,) uint8 -> y (nb*256,) f32."""
    for i in range(y.size // QK_K):
        o = i * 110
        d_all = _get_f16(x, o + 108)
        out = i * QK_K
        is_ = 0
        m = 1
        for n in range(0, QK_K, 128):
            q = o + 32 + n // 4
            for shift in range(0, 8, 2):
                for half in range(2):
                    dl = d_all * np.float32(_q3_K_scale(x, o + 96, is_))
                    is_ += 1
                    for l in range(16 * half, 16 * half + 16):
                        v = ((_b(x, q + l) >> shift) & 3) - (0 if (_b(x, o + l) & m) else 4)
                        y[out] = dl * np.float32(v)
                        out += 1
                m <<= 1


@njit(cache=True)
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
        d = _get_f16(x, o + 108) * d8[i]
        for l in range(8):
            sums[l] += d * np.float32(aux32[l])
    sumf = np.float32(0.0)
    for l in range(8):
        sumf += sums[l]
    return sumf


# ----------------------------------------------------------------------------- Q4_K
# block_q4_K: d:2 dmin:2 scales:12 qs:128  (144 bytes)

@njit(cache=True, inline="always")
def _q4_K_requantize_and_pack(x, y, o, L):
    d_all = _get_f16(y, o)
    m_all = _get_f16(y, o + 2)
    for j in range(QK_K // 32):
        sc, m = get_scale_min_k4(j, y, o + 4)
        d = d_all * np.float32(sc)
        if d == 0:
            continue
        dm = m_all * np.float32(m)
        for ii in range(32):
            l = nearest_int((x[32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(15, l))
    for j in range(0, QK_K, 64):
        for l in range(32):
            y[o + 16 + j // 2 + l] = L[j + l] | (L[j + l + 32] << 4)


@njit(cache=True)
def quantize_row_q4_K_ref(x, y):
    """ggml `quantize_row_q4_K_ref`: x (cols,) f32 -> y (cols/256*144,) uint8."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.uint8)
    Laux = np.empty(32, dtype=np.uint8)
    weights = np.empty(32, dtype=np.float32)
    mins = np.empty(QK_K // 32, dtype=np.float32)
    scales = np.empty(QK_K // 32, dtype=np.float32)
    Ls = np.empty(QK_K // 32, dtype=np.int64)
    Lm = np.empty(QK_K // 32, dtype=np.int64)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 144
        max_scale = np.float32(0.0)
        max_min = np.float32(0.0)
        for j in range(QK_K // 32):
            xs = xb[32 * j:32 * j + 32]
            sum_x2 = np.float32(0.0)
            for l in range(32):
                sum_x2 += xs[l] * xs[l]
            av_x = np.sqrt(sum_x2 / np.float32(32.0))
            for l in range(32):
                weights[l] = av_x + np.abs(xs[l])
            s, m = make_qkx2_quants_ws(32, 15, xs, weights, L[32 * j:32 * j + 32], Laux,
                                       np.float32(-1.0), np.float32(0.1), 20, False, ws)
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        inv_scale = np.float32(63.0) / max_scale if max_scale > 0 else np.float32(0.0)
        inv_min = np.float32(63.0) / max_min if max_min > 0 else np.float32(0.0)
        for j in range(QK_K // 32):
            # C stores nearest_int into a uint8_t before MIN(63, .)
            Ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
            Lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
        _pack_k4_scales(y, o + 4, Ls, Lm)
        _put_f16(y, o, fp32_to_fp16(max_scale / np.float32(63.0)))
        _put_f16(y, o + 2, fp32_to_fp16(max_min / np.float32(63.0)))
        _q4_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True, inline="always")
def _k_impl_scales(xb, quant_weights, i, nmax, L, Laux, weights, sw, scales, mins, ws):
    # the part of quantize_row_q4_K_impl / q5_K_impl before the super-block scales
    sum_x2 = np.float32(0.0)
    for l in range(QK_K):
        sum_x2 += xb[l] * xb[l]
    sigma2 = np.float32(2.0) * sum_x2 / np.float32(QK_K)
    for j in range(QK_K // 32):
        qw = quant_weights[QK_K * i + 32 * j:QK_K * i + 32 * j + 32]
        for l in range(32):
            weights[l] = qw[l] * np.sqrt(sigma2 + xb[32 * j + l] * xb[32 * j + l])
        sumw = np.float32(0.0)
        for l in range(32):
            sumw += weights[l]
        sw[j] = sumw
        s, m = make_qkx3_quants_ws(32, nmax, xb[32 * j:32 * j + 32], weights, L[32 * j:32 * j + 32], Laux,
                                   np.float32(-0.9), np.float32(0.05), 36, False, ws)
        scales[j] = s
        mins[j] = m


@njit(cache=True)
def quantize_row_q4_K_impl(x, y, quant_weights):
    """ggml `quantize_row_q4_K_impl` with quant_weights (cols,) f32."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.uint8)
    Laux = np.empty(32, dtype=np.uint8)
    Ls = np.empty(QK_K // 32, dtype=np.uint8)
    Lm = np.empty(QK_K // 32, dtype=np.uint8)
    weights = np.empty(32, dtype=np.float32)
    sw = np.empty(QK_K // 32, dtype=np.float32)
    mins = np.empty(QK_K // 32, dtype=np.float32)
    scales = np.empty(QK_K // 32, dtype=np.float32)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 144
        _k_impl_scales(xb, quant_weights, i, 15, L, Laux, weights, sw, scales, mins, ws)
        d_block = make_qp_quants(QK_K // 32, 63, scales, Ls, sw)
        m_block = make_qp_quants(QK_K // 32, 63, mins, Lm, sw)
        _pack_k4_scales(y, o + 4, Ls, Lm)
        _put_f16(y, o, fp32_to_fp16(d_block))
        _put_f16(y, o + 2, fp32_to_fp16(m_block))
        _q4_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True)
def dequantize_row_q4_K(x, y):
    """ggml `dequantize_row_q4_K`: x (nb*144,) uint8 -> y (nb*256,) f32."""
    for i in range(y.size // QK_K):
        o = i * 144
        d = _get_f16(x, o)
        vmin = _get_f16(x, o + 2)
        out = i * QK_K
        for j in range(4):
            q = o + 16 + 32 * j
            sc, m = get_scale_min_k4(2 * j, x, o + 4)
            d1 = d * np.float32(sc)
            m1 = vmin * np.float32(m)
            sc, m = get_scale_min_k4(2 * j + 1, x, o + 4)
            d2 = d * np.float32(sc)
            m2 = vmin * np.float32(m)
            for l in range(32):
                y[out + l] = d1 * np.float32(x[q + l] & 0xF) - m1
            for l in range(32):
                y[out + 32 + l] = d2 * np.float32(_b(x, q + l) >> 4) - m2
            out += 64


@njit(cache=True, inline="always")
def _k4_dot_tail(x, o, i, d8, bsums8, aux32, sums, sumf):
    # common end of the Q4_K / Q5_K generic dot products: min correction and lane sums
    sumi = 0
    for j in range(QK_K // 16):
        sc, m = get_scale_min_k4(j // 2, x, o + 4)
        sumi += np.int64(bsums8[i * 16 + j]) * m
    d = _get_f16(x, o) * d8[i]
    for l in range(8):
        sums[l] += d * np.float32(aux32[l])
    dmin = _get_f16(x, o + 2) * d8[i]
    return sumf - dmin * np.float32(sumi)


@njit(cache=True)
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
    for l in range(8):
        sumf += sums[l]
    return sumf


# ----------------------------------------------------------------------------- Q5_K
# block_q5_K: d:2 dmin:2 scales:12 qh:32 qs:128  (176 bytes)

@njit(cache=True, inline="always")
def _q5_K_requantize_and_pack(x, y, o, L):
    d_all = _get_f16(y, o)
    m_all = _get_f16(y, o + 2)
    for j in range(QK_K // 32):
        sc, m = get_scale_min_k4(j, y, o + 4)
        d = d_all * np.float32(sc)
        if d == 0:
            continue
        dm = m_all * np.float32(m)
        for ii in range(32):
            l = nearest_int((x[32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(31, l))
    qh = o + 16
    ql = o + 48
    for j in range(32):
        y[qh + j] = 0
    m1 = 1
    m2 = 2
    for n in range(0, QK_K, 64):
        for j in range(32):
            l1 = _b(L, n + j)
            if l1 > 15:
                l1 -= 16
                y[qh + j] |= m1
            l2 = _b(L, n + j + 32)
            if l2 > 15:
                l2 -= 16
                y[qh + j] |= m2
            y[ql + j] = l1 | (l2 << 4)
        m1 <<= 2
        m2 <<= 2
        ql += 32


@njit(cache=True)
def quantize_row_q5_K_ref(x, y):
    """ggml `quantize_row_q5_K_ref`: x (cols,) f32 -> y (cols/256*176,) uint8."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.uint8)
    Laux = np.empty(32, dtype=np.uint8)
    weights = np.empty(32, dtype=np.float32)
    mins = np.empty(QK_K // 32, dtype=np.float32)
    scales = np.empty(QK_K // 32, dtype=np.float32)
    Ls = np.empty(QK_K // 32, dtype=np.int64)
    Lm = np.empty(QK_K // 32, dtype=np.int64)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 176
        max_scale = np.float32(0.0)
        max_min = np.float32(0.0)
        for j in range(QK_K // 32):
            xs = xb[32 * j:32 * j + 32]
            sum_x2 = np.float32(0.0)
            for l in range(32):
                sum_x2 += xs[l] * xs[l]
            av_x = np.sqrt(sum_x2 / np.float32(32.0))
            for l in range(32):
                weights[l] = av_x + np.abs(xs[l])
            s, m = make_qkx2_quants_ws(32, 31, xs, weights, L[32 * j:32 * j + 32], Laux,
                                       np.float32(-0.5), np.float32(0.1), 15, False, ws)
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        inv_scale = np.float32(63.0) / max_scale if max_scale > 0 else np.float32(0.0)
        inv_min = np.float32(63.0) / max_min if max_min > 0 else np.float32(0.0)
        for j in range(QK_K // 32):
            Ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
            Lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
        _pack_k4_scales(y, o + 4, Ls, Lm)
        _put_f16(y, o, fp32_to_fp16(max_scale / np.float32(63.0)))
        _put_f16(y, o + 2, fp32_to_fp16(max_min / np.float32(63.0)))
        _q5_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True)
def quantize_row_q5_K_impl(x, y, quant_weights):
    """ggml `quantize_row_q5_K_impl` with quant_weights (cols,) f32."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.uint8)
    Laux = np.empty(32, dtype=np.uint8)
    Ls = np.empty(QK_K // 32, dtype=np.uint8)
    Lm = np.empty(QK_K // 32, dtype=np.uint8)
    weights = np.empty(32, dtype=np.float32)
    sw = np.empty(QK_K // 32, dtype=np.float32)
    mins = np.empty(QK_K // 32, dtype=np.float32)
    scales = np.empty(QK_K // 32, dtype=np.float32)
    Ls63 = np.empty(QK_K // 32, dtype=np.int64)
    Lm63 = np.empty(QK_K // 32, dtype=np.int64)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 176
        _k_impl_scales(xb, quant_weights, i, 31, L, Laux, weights, sw, scales, mins, ws)
        d_block = make_qp_quants(QK_K // 32, 63, scales, Ls, sw)
        m_block = make_qp_quants(QK_K // 32, 63, mins, Lm, sw)
        for j in range(QK_K // 32):
            Ls63[j] = min(63, np.int64(Ls[j]))
            Lm63[j] = min(63, np.int64(Lm[j]))
        _pack_k4_scales(y, o + 4, Ls63, Lm63)
        _put_f16(y, o, fp32_to_fp16(d_block))
        _put_f16(y, o + 2, fp32_to_fp16(m_block))
        _q5_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True)
def dequantize_row_q5_K(x, y):
    """ggml `dequantize_row_q5_K`: x (nb*176,) uint8 -> y (nb*256,) f32."""
    for i in range(y.size // QK_K):
        o = i * 176
        d = _get_f16(x, o)
        vmin = _get_f16(x, o + 2)
        qh = o + 16
        out = i * QK_K
        u1 = 1
        u2 = 2
        for j in range(4):
            ql = o + 48 + 32 * j
            sc, m = get_scale_min_k4(2 * j, x, o + 4)
            d1 = d * np.float32(sc)
            m1 = vmin * np.float32(m)
            sc, m = get_scale_min_k4(2 * j + 1, x, o + 4)
            d2 = d * np.float32(sc)
            m2 = vmin * np.float32(m)
            for l in range(32):
                y[out + l] = d1 * np.float32((_b(x, ql + l) & 0xF) + (16 if _b(x, qh + l) & u1 else 0)) - m1
            for l in range(32):
                y[out + 32 + l] = d2 * np.float32((_b(x, ql + l) >> 4) + (16 if _b(x, qh + l) & u2 else 0)) - m2
            out += 64
            u1 <<= 2
            u2 <<= 2


@njit(cache=True)
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
    for l in range(8):
        sumf += sums[l]
    return sumf


# ----------------------------------------------------------------------------- Q6_K
# block_q6_K: ql:128 qh:64 scales:16 (int8) d:2  (210 bytes)

@njit(cache=True, inline="always")
def _q6_K_finish(x, y, o, L, scales, max_scale, max_abs_scale):
    # shared tail of quantize_row_q6_K_ref / _impl once the 16 sub-block scales are known
    if max_abs_scale < GROUP_MAX_EPS:
        for k in range(210):
            y[o + k] = 0
        return
    iscale = np.float32(-128.0) / max_scale
    _put_f16(y, o + 208, fp32_to_fp16(np.float32(1.0) / iscale))
    for ib in range(QK_K // 16):
        y[o + 192 + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF
    d_all = _get_f16(y, o + 208)
    for j in range(QK_K // 16):
        d = d_all * np.float32(_i8(np.int64(y[o + 192 + j])))
        if d == 0:
            continue
        for ii in range(16):
            l = nearest_int(x[16 * j + ii] / d)
            L[16 * j + ii] = max(-32, min(31, l)) + 32
    for j in range(0, QK_K, 128):
        ql = o + j // 2
        qh = o + 128 + j // 4
        for l in range(32):
            q1 = L[j + l] & 0xF
            q2 = L[j + l + 32] & 0xF
            q3 = L[j + l + 64] & 0xF
            q4 = L[j + l + 96] & 0xF
            y[ql + l] = q1 | (q3 << 4)
            y[ql + l + 32] = q2 | (q4 << 4)
            y[qh + l] = ((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4)
                         | ((L[j + l + 96] >> 4) << 6))


@njit(cache=True)
def quantize_row_q6_K_ref(x, y):
    """ggml `quantize_row_q6_K_ref`: x (cols,) f32 -> y (cols/256*210,) uint8."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.int8)
    scales = np.empty(QK_K // 16, dtype=np.float32)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        max_scale = np.float32(0.0)
        max_abs_scale = np.float32(0.0)
        for ib in range(QK_K // 16):
            s = make_qx_quants_ws(16, 32, xb[16 * ib:16 * ib + 16], L[16 * ib:16 * ib + 16], 1, _EMPTY_F32, ws)
            scales[ib] = s
            if np.abs(s) > max_abs_scale:
                max_abs_scale = np.abs(s)
                max_scale = s
        _q6_K_finish(xb, y, i * 210, L, scales, max_scale, max_abs_scale)


@njit(cache=True)
def quantize_row_q6_K_impl(x, y, quant_weights):
    """ggml `quantize_row_q6_K_impl` with quant_weights (cols,) f32 (used directly as weights)."""
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.int8)
    scales = np.empty(QK_K // 16, dtype=np.float32)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        max_scale = np.float32(0.0)
        max_abs_scale = np.float32(0.0)
        for ib in range(QK_K // 16):
            qw = quant_weights[QK_K * i + 16 * ib:QK_K * i + 16 * ib + 16]
            s = make_qx_quants_ws(16, 32, xb[16 * ib:16 * ib + 16], L[16 * ib:16 * ib + 16], 1, qw, ws)
            scales[ib] = s
            if np.abs(s) > max_abs_scale:
                max_abs_scale = np.abs(s)
                max_scale = s
        _q6_K_finish(xb, y, i * 210, L, scales, max_scale, max_abs_scale)


@njit(cache=True)
def dequantize_row_q6_K(x, y):
    """ggml `dequantize_row_q6_K`: x (nb*210,) uint8 -> y (nb*256,) f32."""
    for i in range(y.size // QK_K):
        o = i * 210
        d = _get_f16(x, o + 208)
        for n in range(2):
            ql = o + 64 * n
            qh = o + 128 + 32 * n
            sc = o + 192 + 8 * n
            out = i * QK_K + 128 * n
            for l in range(32):
                is_ = l // 16
                h = _b(x, qh + l)
                q1 = ((_b(x, ql + l) & 0xF) | (((h >> 0) & 3) << 4)) - 32
                q2 = ((_b(x, ql + l + 32) & 0xF) | (((h >> 2) & 3) << 4)) - 32
                q3 = ((_b(x, ql + l) >> 4) | (((h >> 4) & 3) << 4)) - 32
                q4 = ((_b(x, ql + l + 32) >> 4) | (((h >> 6) & 3) << 4)) - 32
                y[out + l] = d * np.float32(_i8(np.int64(x[sc + is_]))) * np.float32(q1)
                y[out + l + 32] = d * np.float32(_i8(np.int64(x[sc + is_ + 2]))) * np.float32(q2)
                y[out + l + 64] = d * np.float32(_i8(np.int64(x[sc + is_ + 4]))) * np.float32(q3)
                y[out + l + 96] = d * np.float32(_i8(np.int64(x[sc + is_ + 6]))) * np.float32(q4)


@njit(cache=True)
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
        d = _get_f16(x, o + 208) * d8[i]
        for l in range(8):
            sums[l] += d * np.float32(aux32[l])
    sumf = np.float32(0.0)
    for l in range(8):
        sumf += sums[l]
    return sumf


# ----------------------------------------------------------------------------- row drivers

@njit(cache=True, parallel=True)
def _quantize_rows(x, quant_weights, out, qtype):
    # quant_weights empty: ggml's *_ref path; otherwise *_impl with the importance weights
    use_qw = quant_weights.size > 0
    for r in prange(x.shape[0]):
        xr = x[r]
        yr = out[r]
        if qtype == _Q2_K:
            if use_qw:
                quantize_row_q2_K_impl(xr, yr, quant_weights)
            else:
                quantize_row_q2_K_ref(xr, yr)
        elif qtype == _Q3_K:
            if use_qw:
                quantize_row_q3_K_impl(xr, yr, quant_weights)
            else:
                quantize_row_q3_K_ref(xr, yr)
        elif qtype == _Q4_K:
            if use_qw:
                quantize_row_q4_K_impl(xr, yr, quant_weights)
            else:
                quantize_row_q4_K_ref(xr, yr)
        elif qtype == _Q5_K:
            if use_qw:
                quantize_row_q5_K_impl(xr, yr, quant_weights)
            else:
                quantize_row_q5_K_ref(xr, yr)
        elif qtype == _Q6_K:
            if use_qw:
                quantize_row_q6_K_impl(xr, yr, quant_weights)
            else:
                quantize_row_q6_K_ref(xr, yr)


@njit(cache=True, parallel=True)
def _dequantize_rows(data, out, qtype):
    for r in prange(data.shape[0]):
        if qtype == _Q2_K:
            dequantize_row_q2_K(data[r], out[r])
        elif qtype == _Q3_K:
            dequantize_row_q3_K(data[r], out[r])
        elif qtype == _Q4_K:
            dequantize_row_q4_K(data[r], out[r])
        elif qtype == _Q5_K:
            dequantize_row_q5_K(data[r], out[r])
        elif qtype == _Q6_K:
            dequantize_row_q6_K(data[r], out[r])


@njit(cache=True, parallel=True)
def _matvec_rows(w, d8, qs8, bsums8, out, qtype):
    # out[t, r] = dot(weight row r, activation row t), each weight row owned by one thread
    for r in prange(w.shape[0]):
        wr = w[r]
        for t in range(d8.shape[0]):
            if qtype == _Q2_K:
                out[t, r] = vec_dot_q2_K_q8_K(wr, d8[t], qs8[t], bsums8[t])
            elif qtype == _Q3_K:
                out[t, r] = vec_dot_q3_K_q8_K(wr, d8[t], qs8[t], bsums8[t])
            elif qtype == _Q4_K:
                out[t, r] = vec_dot_q4_K_q8_K(wr, d8[t], qs8[t], bsums8[t])
            elif qtype == _Q5_K:
                out[t, r] = vec_dot_q5_K_q8_K(wr, d8[t], qs8[t], bsums8[t])
            elif qtype == _Q6_K:
                out[t, r] = vec_dot_q6_K_q8_K(wr, d8[t], qs8[t], bsums8[t])


# ----------------------------------------------------------------------------- registration

def _quantizer(qtype: GGMLType):
    tsize = type_traits(qtype).type_size

    def quantize(x: npt.NDArray[np.float32], imatrix: npt.NDArray[np.float32] | None) -> npt.NDArray[np.uint8]:
        rows, cols = x.shape
        out = np.empty((rows, cols // QK_K * tsize), dtype=np.uint8)
        _quantize_rows(x, _EMPTY_F32 if imatrix is None else imatrix, out, int(qtype))
        return out

    quantize.__doc__ = f"ggml's quantize_{qtype.name.lower()} (ref without imatrix, impl with one)."
    return quantize


def _dequantizer(qtype: GGMLType):
    def dequantize(data: npt.NDArray[np.uint8], cols: int) -> npt.NDArray[np.float32]:
        out = np.empty((data.shape[0], cols), dtype=np.float32)
        _dequantize_rows(data, out, int(qtype))
        return out

    dequantize.__doc__ = f"ggml's dequantize_row_{qtype.name.lower()}."
    return dequantize


def _matvec(qtype: GGMLType):
    def matvec(w: npt.NDArray[np.uint8], x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        d8, qs8, bsums8 = quantize_q8_K(x)
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        _matvec_rows(w, d8, qs8, bsums8, out, int(qtype))
        return out

    matvec.__doc__ = f"x @ W.T via Q8_K activations and ggml_vec_dot_{qtype.name.lower()}_q8_K_generic."
    return matvec


def _quantize_q8_K_bytes(x: npt.NDArray[np.float32], imatrix: npt.NDArray[np.float32] | None) -> npt.NDArray[np.uint8]:
    """ggml's quantize_row_q8_K_ref on every row (an imatrix does not apply to Q8_K)."""
    d, qs, bsums = quantize_q8_K(x)
    out = np.empty((x.shape[0], d.shape[1] * 292), dtype=np.uint8)
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
