"""ggml's K-quant quantizers (`quantize_row_qN_K_ref` / `_impl`) and the byte helpers of the
K-quant block layouts, kept apart from `kquants` so that the slow-to-compile quantizers keep
their numba cache when the dequantize and dot-product kernels change.

The Q2_K/Q4_K/Q5_K row functions take `n16=16`: callers that pass 16 as a run-time value (as
`_quantize_rows` does) get vectorised searches; the result is the same either way.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from llmtk.ggufio.constants import QK_K, GGMLType
from llmtk.kernels._numeric import GROUP_MAX_EPS, fp32_to_fp16, get_f16, nearest_int, put_u16
from llmtk.kernels._search import (
    make_q3_quants,
    make_qkx2_quants_ws,
    make_qkx3_quants_ws,
    make_qp_quants,
    make_qx_quants_ws,
)

# ggml type ids, used to pick a kernel inside the row drivers (numba reads them as constants)
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = (int(GGMLType.Q2_K), int(GGMLType.Q3_K), int(GGMLType.Q4_K),
                                int(GGMLType.Q5_K), int(GGMLType.Q6_K))
_EMPTY_F32 = np.empty(0, dtype=np.float32)


# ----------------------------------------------------------------------------- byte helpers

@njit(cache=True, error_model="numpy", inline="always")
def _b(a, i):
    # read a byte as int64: numba types uint8 >> int as uint64, and uint64 mixed with int64
    # silently becomes float64 (or fails for bitwise ops)
    return np.int64(a[i])


@njit(cache=True, error_model="numpy", inline="always")
def _i8(v):
    # C's conversion of an int to int8_t (wraps)
    return ((v + 128) & 0xFF) - 128


@njit(cache=True, error_model="numpy", inline="always")
def get_scale_min_k4(j, q, off):
    """ggml `get_scale_min_k4`: the j-th 6-bit (scale, min) pair of Q4_K/Q5_K's 12 scale bytes."""
    if j < 4:
        return _b(q, off + j) & 63, _b(q, off + j + 4) & 63
    sc = (_b(q, off + j + 4) & 0xF) | ((_b(q, off + j - 4) >> 6) << 4)
    m = (_b(q, off + j + 4) >> 4) | ((_b(q, off + j) >> 6) << 4)
    return sc, m


@njit(cache=True, error_model="numpy", inline="always")
def _q3_K_scale(y, off, j):
    # the j-th signed 6-bit scale of Q3_K's 12 scale bytes, minus 32
    lo = (_b(y, off + j) & 0xF) if j < 8 else (_b(y, off + j - 8) >> 4)
    return (lo | (((_b(y, off + 8 + j % 4) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(cache=True, error_model="numpy", inline="always")
def _pack_2bit(L, y, off):
    # four 2-bit planes per 128 values, shared by Q2_K and Q3_K
    for j in range(0, QK_K, 128):
        for l in range(32):
            y[off + j // 4 + l] = (L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4)
                                   | (L[j + l + 96] << 6))


@njit(cache=True, error_model="numpy", inline="always")
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


@njit(cache=True, error_model="numpy", inline="always")
def _sum_x2(xb):
    sum_x2 = np.float32(0.0)
    for l in range(QK_K):
        sum_x2 += xb[l] * xb[l]
    return sum_x2


@njit(cache=True, error_model="numpy", inline="always")
def _impl_weights(xb, off, qw, sigma2, weight, n):
    # the _impl quantizers' weight[l] = qw[l] * sqrtf(sigma2 + x[l]^2) over one sub-block of n
    # values from xb[off]; returns their sum (ggml's sw[j])
    for l in range(n):
        weight[l] = qw[l] * np.sqrt(sigma2 + xb[off + l] * xb[off + l])
    sumw = np.float32(0.0)
    for l in range(n):
        sumw += weight[l]
    return sumw


# ----------------------------------------------------------------------------- Q2_K
# block_q2_K: scales:16 qs:64 d:2 dmin:2  (84 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _q2_K_requantize_and_pack(x, y, o, L):
    d_all = get_f16(y, o + 80)
    m_all = get_f16(y, o + 82)
    for j in range(QK_K // 16):
        d = d_all * np.float32(y[o + j] & 0xF)
        if d == 0:
            continue
        dm = m_all * np.float32(_b(y, o + j) >> 4)
        for ii in range(16):
            l = nearest_int((x[16 * j + ii] + dm) / d)
            L[16 * j + ii] = max(0, min(3, l))
    _pack_2bit(L, y, o + 16)


@njit(cache=True, error_model="numpy")
def quantize_row_q2_K_ref(x, y, n16=16):
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
            s, m = make_qkx2_quants_ws(n16, 3, xs, weights, L[16 * j:16 * j + 16], Laux,
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
            put_u16(y, o + 80, fp32_to_fp16(max_scale / q4scale))
        else:
            for j in range(QK_K // 16):
                y[o + j] = 0
            put_u16(y, o + 80, fp32_to_fp16(np.float32(0.0)))
        if max_min > 0:
            iscale = q4scale / max_min
            for j in range(QK_K // 16):
                y[o + j] = (y[o + j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            put_u16(y, o + 82, fp32_to_fp16(max_min / q4scale))
        else:
            put_u16(y, o + 82, fp32_to_fp16(np.float32(0.0)))
        _q2_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True, error_model="numpy")
def quantize_row_q2_K_impl(x, y, quant_weights, n16=16):
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
        sigma2 = _sum_x2(xb) / np.float32(QK_K)
        for j in range(QK_K // 16):
            qw = quant_weights[QK_K * i + 16 * j:QK_K * i + 16 * j + 16]
            sw[j] = _impl_weights(xb, 16 * j, qw, sigma2, weight, 16)
            sc, m = make_qkx3_quants_ws(n16, 3, xb[16 * j:16 * j + 16], weight, L[16 * j:16 * j + 16], Laux,
                                        np.float32(-0.9), np.float32(0.05), 36, False, ws)
            scales[j] = sc
            mins[j] = m
        dm = make_qp_quants(QK_K // 16, 15, scales, Ls, sw)
        mm = make_qp_quants(QK_K // 16, 15, mins, Lm, sw)
        put_u16(y, o + 80, fp32_to_fp16(dm))
        put_u16(y, o + 82, fp32_to_fp16(mm))
        for j in range(QK_K // 16):
            y[o + j] = (_b(Ls, j) | (_b(Lm, j) << 4)) & 0xFF
        _q2_K_requantize_and_pack(xb, y, o, L)


# ----------------------------------------------------------------------------- Q3_K
# block_q3_K: hmask:32 qs:64 scales:12 d:2  (110 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _q3_K_put_scale(y, off, j, l):
    # store the j-th biased 6-bit scale l (0..63) into Q3_K's 12 scale bytes
    if j < 8:
        y[off + j] = l & 0xF
    else:
        y[off + j - 8] |= (l & 0xF) << 4
    y[off + j % 4 + 8] |= (l >> 4) << (2 * (j // 4))


@njit(cache=True, error_model="numpy", inline="always")
def _q3_K_requantize_and_pack(x, y, o, L):
    d_all = get_f16(y, o + 108)
    for j in range(QK_K // 16):
        d = d_all * np.float32(_q3_K_scale(y, o + 96, j))
        if d == 0:
            continue
        for ii in range(16):
            l = nearest_int(x[16 * j + ii] / d)
            L[16 * j + ii] = max(-4, min(3, l)) + 4
    # high bit of value j goes to bit j // 32 of hmask[j % 32]
    # (ggml tests L > 3 per value; the same bits without data-dependent branches)
    for m in range(QK_K // 8):
        h = 0
        for b in range(8):
            v = _b(L, m + 32 * b)
            h |= (v >> 2) << b
            L[m + 32 * b] = v & 3
        y[o + m] = h
    _pack_2bit(L, y, o + 32)


@njit(cache=True, error_model="numpy")
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
            put_u16(y, o + 108, fp32_to_fp16(np.float32(1.0) / iscale))
        else:
            put_u16(y, o + 108, fp32_to_fp16(np.float32(0.0)))
        _q3_K_requantize_and_pack(xb, y, o, L)


@njit(cache=True, error_model="numpy")
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
        sigma2 = np.float32(2.0) * _sum_x2(xb) / np.float32(QK_K)
        for j in range(QK_K // 16):
            qw = quant_weights[QK_K * i + 16 * j:QK_K * i + 16 * j + 16]
            sw[j] = _impl_weights(xb, 16 * j, qw, sigma2, weight, 16)
            scales[j] = make_qx_quants_ws(16, 4, xb[16 * j:16 * j + 16], L[16 * j:16 * j + 16], 1, weight, ws)
        for k in range(12):
            y[o + 96 + k] = 0
        d_block = make_qx_quants_ws(QK_K // 16, 32, scales, Ls, 1, sw, ws)
        for j in range(QK_K // 16):
            _q3_K_put_scale(y, o + 96, j, np.int64(Ls[j]))
        put_u16(y, o + 108, fp32_to_fp16(d_block))
        _q3_K_requantize_and_pack(xb, y, o, L)


# ----------------------------------------------------------------------------- Q4_K, Q5_K
# block_q4_K: d:2 dmin:2 scales:12 qs:128  (144 bytes)
# block_q5_K: d:2 dmin:2 scales:12 qh:32 qs:128  (176 bytes)
# ggml's q4_K and q5_K quantizers differ only in nmax (15, 31), the search constants of the
# _ref path and the packing (Q5_K's bit 4 goes to the qh plane), so each pair shares one body.

@njit(cache=True, error_model="numpy", inline="always")
def _k4_requantize_and_pack(x, y, o, L, nmax):
    # requantize with the stored 6-bit scales, then pack 4 bits (nmax 15) or 4 + 1 (nmax 31)
    d_all = get_f16(y, o)
    m_all = get_f16(y, o + 2)
    for j in range(QK_K // 32):
        sc, m = get_scale_min_k4(j, y, o + 4)
        d = d_all * np.float32(sc)
        if d == 0:
            continue
        dm = m_all * np.float32(m)
        for ii in range(32):
            l = nearest_int((x[32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(nmax, l))
    if nmax == 15:
        for j in range(0, QK_K, 64):
            for l in range(32):
                y[o + 16 + j // 2 + l] = L[j + l] | (L[j + l + 32] << 4)
        return
    qh = o + 16
    ql = o + 48
    for j in range(32):
        y[qh + j] = 0
    # bit 4 of each value goes to qh (value n+j: bit n/32, value n+j+32: bit n/32+1), without
    # ggml's data-dependent branches
    for n in range(0, QK_K, 64):
        for j in range(32):
            l1 = _b(L, n + j)
            l2 = _b(L, n + j + 32)
            y[qh + j] |= ((l1 >> 4) << (n // 32)) | ((l2 >> 4) << (n // 32 + 1))
            y[ql + j] = (l1 & 0xF) | ((l2 & 0xF) << 4)
        ql += 32


@njit(cache=True, error_model="numpy", inline="always")
def _k4_ref(x, y, n16, nmax, rmin, nstep, type_size):
    # quantize_row_q4_K_ref / q5_K_ref: (nmax, rmin, nstep) = (15, -1.0, 20) or (31, -0.5, 15)
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
        o = i * type_size
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
            s, m = make_qkx2_quants_ws(2 * n16, nmax, xs, weights, L[32 * j:32 * j + 32], Laux,
                                       rmin, np.float32(0.1), nstep, False, ws)
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
        put_u16(y, o, fp32_to_fp16(max_scale / np.float32(63.0)))
        put_u16(y, o + 2, fp32_to_fp16(max_min / np.float32(63.0)))
        _k4_requantize_and_pack(xb, y, o, L, nmax)


@njit(cache=True, error_model="numpy", inline="always")
def _k4_impl(x, y, quant_weights, n16, nmax, type_size):
    # quantize_row_q4_K_impl / q5_K_impl: nmax 15 or 31
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
        o = i * type_size
        sigma2 = np.float32(2.0) * _sum_x2(xb) / np.float32(QK_K)
        for j in range(QK_K // 32):
            qw = quant_weights[QK_K * i + 32 * j:QK_K * i + 32 * j + 32]
            sw[j] = _impl_weights(xb, 32 * j, qw, sigma2, weights, 32)
            s, m = make_qkx3_quants_ws(2 * n16, nmax, xb[32 * j:32 * j + 32], weights, L[32 * j:32 * j + 32],
                                       Laux, np.float32(-0.9), np.float32(0.05), 36, False, ws)
            scales[j] = s
            mins[j] = m
        d_block = make_qp_quants(QK_K // 32, 63, scales, Ls, sw)
        m_block = make_qp_quants(QK_K // 32, 63, mins, Lm, sw)
        if nmax == 31:
            # only ggml's q5_K_impl has MIN(63, .): it matters when a uint8 level wrapped
            for j in range(QK_K // 32):
                Ls[j] = min(63, Ls[j])
                Lm[j] = min(63, Lm[j])
        _pack_k4_scales(y, o + 4, Ls, Lm)
        put_u16(y, o, fp32_to_fp16(d_block))
        put_u16(y, o + 2, fp32_to_fp16(m_block))
        _k4_requantize_and_pack(xb, y, o, L, nmax)


@njit(cache=True, error_model="numpy")
def quantize_row_q4_K_ref(x, y, n16=16):
    """ggml `quantize_row_q4_K_ref`: x (cols,) f32 -> y (cols/256*144,) uint8."""
    _k4_ref(x, y, n16, 15, np.float32(-1.0), 20, 144)


@njit(cache=True, error_model="numpy")
def quantize_row_q4_K_impl(x, y, quant_weights, n16=16):
    """ggml `quantize_row_q4_K_impl` with quant_weights (cols,) f32."""
    _k4_impl(x, y, quant_weights, n16, 15, 144)


@njit(cache=True, error_model="numpy")
def quantize_row_q5_K_ref(x, y, n16=16):
    """ggml `quantize_row_q5_K_ref`: x (cols,) f32 -> y (cols/256*176,) uint8."""
    _k4_ref(x, y, n16, 31, np.float32(-0.5), 15, 176)


@njit(cache=True, error_model="numpy")
def quantize_row_q5_K_impl(x, y, quant_weights, n16=16):
    """ggml `quantize_row_q5_K_impl` with quant_weights (cols,) f32."""
    _k4_impl(x, y, quant_weights, n16, 31, 176)


# ----------------------------------------------------------------------------- Q6_K
# block_q6_K: ql:128 qh:64 scales:16 (int8) d:2  (210 bytes)

@njit(cache=True, error_model="numpy", inline="always")
def _q6_K(x, y, quant_weights, use_qw):
    # quantize_row_q6_K_ref (quant_weights empty, unused) / _impl (quant_weights used directly)
    ws = np.empty(5 * 32, dtype=np.float32)  # search workspace
    L = np.empty(QK_K, dtype=np.int8)
    scales = np.empty(QK_K // 16, dtype=np.float32)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        o = i * 210
        max_scale = np.float32(0.0)
        max_abs_scale = np.float32(0.0)
        for ib in range(QK_K // 16):
            qw = quant_weights[QK_K * i + 16 * ib:QK_K * i + 16 * ib + 16] if use_qw else quant_weights
            s = make_qx_quants_ws(16, 32, xb[16 * ib:16 * ib + 16], L[16 * ib:16 * ib + 16], 1, qw, ws)
            scales[ib] = s
            if np.abs(s) > max_abs_scale:
                max_abs_scale = np.abs(s)
                max_scale = s
        if max_abs_scale < GROUP_MAX_EPS:
            for k in range(210):
                y[o + k] = 0
            continue
        iscale = np.float32(-128.0) / max_scale
        put_u16(y, o + 208, fp32_to_fp16(np.float32(1.0) / iscale))
        for ib in range(QK_K // 16):
            y[o + 192 + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF
        d_all = get_f16(y, o + 208)
        for j in range(QK_K // 16):
            d = d_all * np.float32(_i8(np.int64(y[o + 192 + j])))
            if d == 0:
                continue
            for ii in range(16):
                l = nearest_int(xb[16 * j + ii] / d)
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


@njit(cache=True, error_model="numpy")
def quantize_row_q6_K_ref(x, y):
    """ggml `quantize_row_q6_K_ref`: x (cols,) f32 -> y (cols/256*210,) uint8."""
    _q6_K(x, y, _EMPTY_F32, False)


@njit(cache=True, error_model="numpy")
def quantize_row_q6_K_impl(x, y, quant_weights):
    """ggml `quantize_row_q6_K_impl` with quant_weights (cols,) f32 (used directly as weights)."""
    _q6_K(x, y, quant_weights, True)


# ----------------------------------------------------------------------------- row drivers

@njit(cache=True, error_model="numpy", parallel=True)
def _quantize_rows(x, quant_weights, out, qtype, n16):
    # quant_weights empty: ggml's *_ref path; otherwise *_impl with the importance weights.
    # n16 is 16, passed at run time: with a trip count LLVM cannot see, it vectorises the
    # (scale, min) searches' loops instead of unrolling them into scalar code (~1.3x faster)
    use_qw = quant_weights.size > 0
    for r in prange(x.shape[0]):
        xr = x[r]
        yr = out[r]
        if qtype == Q2_K:
            if use_qw:
                quantize_row_q2_K_impl(xr, yr, quant_weights, n16)
            else:
                quantize_row_q2_K_ref(xr, yr, n16)
        elif qtype == Q3_K:
            if use_qw:
                quantize_row_q3_K_impl(xr, yr, quant_weights)
            else:
                quantize_row_q3_K_ref(xr, yr)
        elif qtype == Q4_K:
            if use_qw:
                quantize_row_q4_K_impl(xr, yr, quant_weights, n16)
            else:
                quantize_row_q4_K_ref(xr, yr, n16)
        elif qtype == Q5_K:
            if use_qw:
                quantize_row_q5_K_impl(xr, yr, quant_weights, n16)
            else:
                quantize_row_q5_K_ref(xr, yr, n16)
        elif qtype == Q6_K:
            if use_qw:
                quantize_row_q6_K_impl(xr, yr, quant_weights)
            else:
                quantize_row_q6_K_ref(xr, yr)
