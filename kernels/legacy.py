"""Legacy block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and the sign/2-bit types Q1_0, Q2_0.

Plain quantization is ggml's `quantize_row_*_ref`; with an importance matrix Q4_0/Q5_0 take
`quantize_row_q{4,5}_0_impl` (make_qx_quants, rmse_type 1) and Q4_1/Q5_1 take
`quantize_row_q{4,5}_1_impl` (make_qkx3_quants); Q8_0, Q1_0 and Q2_0 ignore the imatrix as
`ggml_quantize_chunk` does. Q8_0 and Q8_1 are also the activation types of the dot products
(ggml-cpu's vec_dot_type), computed as ggml's `ggml_vec_dot_*_q8_{0,1}_generic`.

Each kernel works on one row at a time (`prange` over rows); per block, `kind` (the type's ggml id)
selects the type so one compiled driver serves all eight.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numeric import F32, fp16_to_fp32, fp32_to_fp16, get_u16, put_u16, roundf
from ._registry import register
from ._search import make_qkx3_quants_ws, make_qx_quants_ws, max_abs_value
from llmtk.ggufio.constants import GGMLType, type_traits

# ggml type ids, the `kind` of the drivers (numba reads module globals as constants)
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q1_0, Q2_0 = (int(GGMLType[n]) for n in (
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q1_0", "Q2_0"))
_KIND = {name: int(GGMLType[name]) for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q1_0", "Q2_0")}


# --- plain quantizers (quantize_row_*_ref) ---------------------------------------------------

@njit(cache=True, error_model="numpy", inline="always")
def _min_max(xb):
    min_ = xb[0]
    max_ = xb[0]
    for j in range(1, 32):
        v = xb[j]
        if v < min_:
            min_ = v
        if v > max_:
            max_ = v
    return min_, max_


@njit(cache=True, error_model="numpy", inline="always")
def _q8_scale(xb, y):
    # Q8_0/Q8_1's d = amax/127, stored at y[0:2]; returns d and its inverse (0 for d == 0)
    amax = F32(0.0)
    for j in range(32):
        amax = max(amax, abs(xb[j]))
    d = amax / F32(127.0)
    put_u16(y, 0, fp32_to_fp16(d))
    return d, (F32(1.0) / d if d != F32(0.0) else F32(0.0))


@njit(cache=True, error_model="numpy")
def _q4_0_block(xb, y, h):
    """quantize_row_q4_0_ref. # d:2 qs:16"""
    d = max_abs_value(xb, 32)[1] / F32(-8.0)
    id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    put_u16(y, 0, fp32_to_fp16(d))
    for j in range(min(h, 16)):
        x0 = xb[j] * id_
        x1 = xb[j + 16] * id_
        xi0 = np.uint8(min(np.int8(15), np.int8(np.int32(x0 + F32(8.5)))))  # MIN(15, (int8_t)(.))
        xi1 = np.uint8(min(np.int8(15), np.int8(np.int32(x1 + F32(8.5)))))
        y[2 + j] = xi0 | np.uint8(xi1 << np.uint8(4))


@njit(cache=True, error_model="numpy")
def _q4_1_block(xb, y, h):
    """quantize_row_q4_1_ref. # d:2 m:2 qs:16"""
    min_, max_ = _min_max(xb)
    d = (max_ - min_) / F32(15.0)
    id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    put_u16(y, 0, fp32_to_fp16(d))
    put_u16(y, 2, fp32_to_fp16(min_))
    for j in range(min(h, 16)):
        x0 = (xb[j] - min_) * id_
        x1 = (xb[j + 16] - min_) * id_
        xi0 = np.uint8(min(np.int8(15), np.int8(np.int32(x0 + F32(0.5)))))
        xi1 = np.uint8(min(np.int8(15), np.int8(np.int32(x1 + F32(0.5)))))
        y[4 + j] = xi0 | np.uint8(xi1 << np.uint8(4))


@njit(cache=True, error_model="numpy")
def _put_q5(y, off_qh, off_qs, L):
    """Pack 32 five-bit quants: low nibbles in qs, fifth bits in the uint32 qh."""
    qh = 0
    for j in range(16):
        xi0 = L[j]
        xi1 = L[j + 16]
        y[off_qs + j] = ((xi0 & 0x0F) | ((xi1 & 0x0F) << 4)) & 0xFF
        qh |= ((xi0 & 0x10) >> 4) << j
        qh |= ((xi1 & 0x10) >> 4) << (j + 16)
    for b in range(4):
        y[off_qh + b] = (qh >> (8 * b)) & 0xFF


@njit(cache=True, error_model="numpy")
def _q5_0_block(xb, y, h):
    """quantize_row_q5_0_ref. # d:2 qh:4 qs:16"""
    d = max_abs_value(xb, 32)[1] / F32(-16.0)
    id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    put_u16(y, 0, fp32_to_fp16(d))
    qh = np.uint32(0)
    for j in range(min(h, 16)):
        xi0 = np.uint32(np.uint8(min(np.int8(31), np.int8(np.int32(xb[j] * id_ + F32(16.5))))))
        xi1 = np.uint32(np.uint8(min(np.int8(31), np.int8(np.int32(xb[j + 16] * id_ + F32(16.5))))))
        y[6 + j] = np.uint8((xi0 & np.uint32(0x0F)) | ((xi1 & np.uint32(0x0F)) << np.uint32(4)))
        qh = np.uint32(qh | (((xi0 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j)))
        qh = np.uint32(qh | (((xi1 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j + 16)))
    for b in range(4):
        y[2 + b] = (qh >> (8 * b)) & 0xFF


@njit(cache=True, error_model="numpy")
def _q5_1_block(xb, y, h):
    """quantize_row_q5_1_ref. # d:2 m:2 qh:4 qs:16"""
    min_, max_ = _min_max(xb)
    d = (max_ - min_) / F32(31.0)
    id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    put_u16(y, 0, fp32_to_fp16(d))
    put_u16(y, 2, fp32_to_fp16(min_))
    qh = np.uint32(0)
    for j in range(min(h, 16)):
        xi0 = np.uint32(np.uint8(np.int32((xb[j] - min_) * id_ + F32(0.5))))  # (uint8_t) casts
        xi1 = np.uint32(np.uint8(np.int32((xb[j + 16] - min_) * id_ + F32(0.5))))
        y[8 + j] = np.uint8((xi0 & np.uint32(0x0F)) | ((xi1 & np.uint32(0x0F)) << np.uint32(4)))
        qh = np.uint32(qh | (((xi0 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j)))
        qh = np.uint32(qh | (((xi1 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j + 16)))
    for b in range(4):
        y[4 + b] = (qh >> (8 * b)) & 0xFF


@njit(cache=True, error_model="numpy")
def _q8_0_block(xb, y):
    """quantize_row_q8_0_ref. # d:2 qs:32 (int8)"""
    d, id_ = _q8_scale(xb, y)
    for j in range(32):
        y[2 + j] = roundf(xb[j] * id_) & 0xFF


@njit(cache=True, error_model="numpy")
def _q8_1_block(xb, y):
    """quantize_row_q8_1_ref. # d:2 s:2 qs:32 (int8); s = d * sum(qs)"""
    d, id_ = _q8_scale(xb, y)
    s = 0
    for j in range(32):
        q = roundf(xb[j] * id_)
        y[4 + j] = q & 0xFF
        s += q
    put_u16(y, 2, fp32_to_fp16(F32(s) * d))


@njit(cache=True, error_model="numpy")
def _q1_0_block(xb, y):
    """quantize_row_q1_0_ref: d = mean |x|, one sign bit per value. # d:2 qs:16"""
    sum_abs = F32(0.0)
    for j in range(128):
        sum_abs += abs(xb[j])
    d = sum_abs / F32(128.0)
    put_u16(y, 0, fp32_to_fp16(d))
    for b in range(16):
        q = 0
        for k in range(8):
            if xb[8 * b + k] >= F32(0.0):
                q |= 1 << k
        y[2 + b] = q


@njit(cache=True, error_model="numpy")
def _q2_0_block(xb, y):
    """quantize_row_q2_0_ref: d = max |x|, codes round(x/d)+1 clamped to 0..3. # d:2 qs:16"""
    amax = F32(0.0)
    for j in range(64):
        a = abs(xb[j])
        if a > amax:
            amax = a
    d = amax
    id_ = F32(1.0) / d if d > F32(0.0) else F32(0.0)
    put_u16(y, 0, fp32_to_fp16(d))
    for b in range(16):
        q = 0
        for k in range(4):
            v = roundf(xb[4 * b + k] * id_) + 1
            v = max(0, min(3, v))
            q |= v << (2 * k)
        y[2 + b] = q


@njit(cache=True, error_model="numpy")
def _quantize_row(kind, x, y, qk, ts, h):
    nb = x.shape[0] // qk
    for i in range(nb):
        xb = x[i * qk:(i + 1) * qk]
        yb = y[i * ts:(i + 1) * ts]
        if kind == Q4_0:
            _q4_0_block(xb, yb, h)
        elif kind == Q4_1:
            _q4_1_block(xb, yb, h)
        elif kind == Q5_0:
            _q5_0_block(xb, yb, h)
        elif kind == Q5_1:
            _q5_1_block(xb, yb, h)
        elif kind == Q8_0:
            _q8_0_block(xb, yb)
        elif kind == Q8_1:
            _q8_1_block(xb, yb)
        elif kind == Q1_0:
            _q1_0_block(xb, yb)
        else:
            _q2_0_block(xb, yb)


@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_rows(kind, x, out, qk, ts, h):
    """`h` is 16 passed at run time, so that inner loops of min(h, 16) get vectorized."""
    for r in prange(x.shape[0]):
        _quantize_row(kind, x[r], out[r], qk, ts, h)


# --- imatrix quantizers ------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _quantize_row_imatrix(kind, x, y, qw, ts):
    """quantize_row_q{4,5}_{0,1}_impl: per-block weights qw * sqrt(sigma2 + x^2)."""
    n = x.shape[0]
    sum_x2 = F32(0.0)
    for j in range(n):
        sum_x2 += x[j] * x[j]
    sigma2 = sum_x2 / F32(n)
    weight = np.empty(32, dtype=np.float32)
    L = np.empty(32, dtype=np.int64)
    Laux = np.empty(32, dtype=np.int64)
    ws = np.empty(5 * 32, dtype=np.float32)
    for ib in range(n // 32):
        xb = x[ib * 32:(ib + 1) * 32]
        yb = y[ib * ts:(ib + 1) * ts]
        for j in range(32):
            weight[j] = qw[ib * 32 + j] * np.sqrt(sigma2 + xb[j] * xb[j])
        if kind == Q4_0 or kind == Q5_0:
            nmax = 8 if kind == Q4_0 else 16
            d = make_qx_quants_ws(32, nmax, xb, L, 1, weight, ws)
            put_u16(yb, 0, fp32_to_fp16(d))
            if kind == Q4_0:
                for j in range(16):
                    yb[2 + j] = (L[j] | (L[j + 16] << 4)) & 0xFF
            else:
                _put_q5(yb, 2, 6, L)
        else:
            nmax = 15 if kind == Q4_1 else 31
            d, the_min = make_qkx3_quants_ws(32, nmax, xb, weight, L, Laux, F32(-0.9), F32(0.05), 36, False, ws)
            put_u16(yb, 0, fp32_to_fp16(d))
            put_u16(yb, 2, fp32_to_fp16(-the_min))
            if kind == Q4_1:
                for j in range(16):
                    yb[4 + j] = (L[j] | (L[j + 16] << 4)) & 0xFF
            else:
                _put_q5(yb, 4, 8, L)


@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_rows_imatrix(kind, x, out, qw, ts):
    for r in prange(x.shape[0]):
        _quantize_row_imatrix(kind, x[r], out[r], qw, ts)


# --- dequantize ------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _dq_q4(q, y, h, m_off, off, ts):
    """dequantize_row_q4_0 (off 8, no m) / dequantize_row_q4_1 (m at m_off)."""
    n16 = min(h, 16)
    for i in range(y.shape[0] // 32):
        o = ts * i
        d = fp16_to_fp32(get_u16(q, o))
        m = fp16_to_fp32(get_u16(q, o + 2)) if m_off else F32(0.0)
        ob = o + 2 + m_off
        if m_off:
            for j in range(n16):
                b = np.int32(q[ob + j])
                y[32 * i + j] = F32((b & 0x0F) - off) * d + m
                y[32 * i + j + 16] = F32((b >> 4) - off) * d + m
        else:
            for j in range(n16):
                b = np.int32(q[ob + j])
                y[32 * i + j] = F32((b & 0x0F) - off) * d
                y[32 * i + j + 16] = F32((b >> 4) - off) * d


@njit(cache=True, error_model="numpy")
def _dq_q5(q, y, h, m_off, off, ts):
    """dequantize_row_q5_0 (off 16, no m) / dequantize_row_q5_1 (m at m_off)."""
    n16 = min(h, 16)
    for i in range(y.shape[0] // 32):
        o = ts * i
        d = fp16_to_fp32(get_u16(q, o))
        m = fp16_to_fp32(get_u16(q, o + 2)) if m_off else F32(0.0)
        oh = o + 2 + m_off
        qh = np.int32(get_u16(q, oh) | (get_u16(q, oh + 2) << 16))
        if m_off:
            for j in range(n16):
                b = np.int32(q[oh + 4 + j])
                jj = np.int32(j)
                x0 = ((b & 0x0F) | (((qh >> jj) << 4) & 0x10)) - off
                x1 = ((b >> 4) | ((qh >> (jj + 12)) & 0x10)) - off
                y[32 * i + j] = F32(x0) * d + m
                y[32 * i + j + 16] = F32(x1) * d + m
        else:
            for j in range(n16):
                b = np.int32(q[oh + 4 + j])
                jj = np.int32(j)
                x0 = ((b & 0x0F) | (((qh >> jj) << 4) & 0x10)) - off
                x1 = ((b >> 4) | ((qh >> (jj + 12)) & 0x10)) - off
                y[32 * i + j] = F32(x0) * d
                y[32 * i + j + 16] = F32(x1) * d


@njit(cache=True, error_model="numpy")
def _dq_q8(q, y, h, ob, ts):
    """dequantize_row_q8_0 (qs at 2) / Q8_1 (qs at 4): qs * d."""
    n32 = min(2 * h, 32)
    for i in range(y.shape[0] // 32):
        o = ts * i
        d = fp16_to_fp32(get_u16(q, o))
        for j in range(n32):
            y[32 * i + j] = F32(np.int8(q[o + ob + j])) * d


@njit(cache=True, error_model="numpy")
def _dequantize_row(kind, q, y, h):
    """dequantize_row_* of ggml (Q8_1, which ggml never dequantizes, as qs * d).

    `h` is 16 passed at run time and the inner loops run min(h, 16) times: LLVM fully unrolls a
    constant 16 and leaves it scalar (numba runs no SLP vectorizer), while a run-time count with
    a known maximum is loop-vectorized (block strides must stay compile-time constants, hence
    the literal type sizes below). Per value the arithmetic is ggml's; vectorizing changes no bits.
    """
    if kind == Q4_0:
        _dq_q4(q, y, h, 0, 8, 18)
    elif kind == Q4_1:
        _dq_q4(q, y, h, 2, 0, 20)
    elif kind == Q5_0:
        _dq_q5(q, y, h, 0, 16, 22)
    elif kind == Q5_1:
        _dq_q5(q, y, h, 2, 0, 24)
    elif kind == Q8_0:
        _dq_q8(q, y, h, 2, 34)
    elif kind == Q8_1:
        _dq_q8(q, y, h, 4, 36)
    elif kind == Q1_0:
        for i in range(y.shape[0] // 128):
            b = q[i * 18:(i + 1) * 18]
            yb = y[i * 128:(i + 1) * 128]
            d = fp16_to_fp32(get_u16(b, 0))
            for j in range(128):
                yb[j] = d if (b[2 + j // 8] >> (j % 8)) & 1 else -d
    else:
        n64 = min(4 * h, 64)
        for i in range(y.shape[0] // 64):
            d = fp16_to_fp32(get_u16(q, 18 * i))
            for j in range(n64):
                y[64 * i + j] = F32(((np.int32(q[18 * i + 2 + (j >> 2)]) >> np.int32(2 * (j & 3))) & 3) - 1) * d


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_rows(kind, data, out, h):
    for r in prange(data.shape[0]):
        _dequantize_row(kind, data[r], out[r], h)


# --- dot products ----------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _vec_dot(kind, w, a):
    """ggml_vec_dot_<kind>_q8_0 / _q8_1 (generic C versions): int sums per block, float total."""
    sumf = F32(0.0)
    if kind == Q1_0:
        for i in range(w.shape[0] // 18):
            d0 = fp16_to_fp32(get_u16(w, 18 * i))
            sumi = F32(0.0)
            for k in range(4):
                yo = 34 * (4 * i + k)
                d1 = fp16_to_fp32(get_u16(a, yo))
                sb = 0
                for j in range(32):
                    qy = np.int64(np.int8(a[yo + 2 + j]))
                    sb += qy if (w[18 * i + 2 + 4 * k + j // 8] >> (j % 8)) & 1 else -qy
                sumi += d1 * F32(sb)
            sumf += d0 * sumi
        return sumf
    if kind == Q2_0:
        for i in range(w.shape[0] // 18):
            d0 = fp16_to_fp32(get_u16(w, 18 * i))
            sumi = F32(0.0)
            for k in range(2):
                yo = 34 * (2 * i + k)
                d1 = fp16_to_fp32(get_u16(a, yo))
                sb = 0
                for j in range(32):
                    q = (w[18 * i + 2 + 8 * k + j // 4] >> (2 * (j % 4))) & 3
                    sb += (np.int64(q) - 1) * np.int64(np.int8(a[yo + 2 + j]))
                sumi += d1 * F32(sb)
            sumf += d0 * sumi
        return sumf
    ts = 18 if kind == Q4_0 else 20 if kind == Q4_1 else 22 if kind == Q5_0 else 24 if kind == Q5_1 else 34
    ys = 36 if kind == Q4_1 or kind == Q5_1 else 34
    yq = ys - 32
    for ib in range(w.shape[0] // ts):
        b = w[ib * ts:(ib + 1) * ts]
        yb = a[ib * ys:(ib + 1) * ys]
        dx = fp16_to_fp32(get_u16(b, 0))
        dy = fp16_to_fp32(get_u16(yb, 0))
        sumi = 0
        if kind == Q8_0:
            for j in range(32):
                sumi += np.int64(np.int8(b[2 + j])) * np.int64(np.int8(yb[2 + j]))
            sumf += F32(sumi) * (dx * dy)
            continue
        if kind == Q4_0 or kind == Q4_1:
            o = 2 if kind == Q4_0 else 4
            off = 8 if kind == Q4_0 else 0
            for j in range(16):
                sumi += (np.int64(b[o + j] & 0x0F) - off) * np.int64(np.int8(yb[yq + j]))
                sumi += (np.int64(b[o + j] >> 4) - off) * np.int64(np.int8(yb[yq + j + 16]))
        else:
            o = 2 if kind == Q5_0 else 4
            off = 16 if kind == Q5_0 else 0
            qh = (np.int64(b[o]) | (np.int64(b[o + 1]) << 8) | (np.int64(b[o + 2]) << 16)
                  | (np.int64(b[o + 3]) << 24))
            for j in range(16):
                x0 = ((b[o + 4 + j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - off
                x1 = ((b[o + 4 + j] >> 4) | ((qh >> (j + 12)) & 0x10)) - off
                sumi += np.int64(x0) * np.int64(np.int8(yb[yq + j]))
                sumi += np.int64(x1) * np.int64(np.int8(yb[yq + j + 16]))
        if kind == Q4_0:
            sumf += F32(sumi) * dx * dy
        elif kind == Q5_0:
            sumf += (dx * dy) * F32(sumi)
        else:  # Q4_1 / Q5_1: + m * s
            m = fp16_to_fp32(get_u16(b, 2))
            s = fp16_to_fp32(get_u16(yb, 2))
            sumf += (dx * dy) * F32(sumi) + m * s
    return sumf


@njit(cache=True, parallel=True, error_model="numpy")
def _matvec_rows(kind, w, a, out):
    for r in prange(w.shape[0]):
        for t in range(a.shape[0]):
            out[t, r] = _vec_dot(kind, w[r], a[t])


# --- wrappers and registration ---------------------------------------------------------------

def _make(name: str):
    kind = _KIND[name]
    tt = type_traits(name)
    qk, ts = tt.block_size, tt.type_size
    has_imatrix_path = name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1")

    def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((x.shape[0], x.shape[1] // qk * ts), dtype=np.uint8)
        if imatrix is not None and has_imatrix_path:
            _quantize_rows_imatrix(kind, x, out, imatrix, ts)
        else:
            _quantize_rows(kind, x, out, qk, ts, 16)
        return out

    def dequantize(data: np.ndarray, cols: int) -> np.ndarray:
        out = np.empty((data.shape[0], cols), dtype=np.float32)
        _dequantize_rows(kind, np.ascontiguousarray(data), out, 16)
        return out

    quantize.__doc__ = f"ggml's quantize_{name.lower()} on (rows, cols) float32."
    dequantize.__doc__ = f"ggml's dequantize_row_{name.lower()}."
    return quantize, dequantize


def _make_matvec(name: str, vdt: str, quantize_act):
    kind = _KIND[name]

    def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        a = quantize_act(np.ascontiguousarray(x, dtype=np.float32))
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        _matvec_rows(kind, np.ascontiguousarray(w), a, out)
        return out

    matvec.__doc__ = f"ggml_vec_dot_{name.lower()}_{vdt.lower()} for every (weight row, activation row)."
    return matvec


_FUNCS = {name: _make(name) for name in _KIND}
quantize_q8_0 = _FUNCS["Q8_0"][0]
quantize_q8_1 = _FUNCS["Q8_1"][0]

_VEC_DOT_TYPE = {"Q4_0": "Q8_0", "Q4_1": "Q8_1", "Q5_0": "Q8_0", "Q5_1": "Q8_1", "Q8_0": "Q8_0",
                 "Q1_0": "Q8_0", "Q2_0": "Q8_0"}

for _name, (_q, _dq) in _FUNCS.items():
    _vdt = _VEC_DOT_TYPE.get(_name)
    _mv = None
    if _vdt is not None:
        _mv = _make_matvec(_name, _vdt, quantize_q8_0 if _vdt == "Q8_0" else quantize_q8_1)
    register(GGMLType[_name], quantize=_q, dequantize=_dq, matvec=_mv, vec_dot_type=_vdt)
