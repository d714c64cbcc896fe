"""Ternary types TQ1_0 (1.6875 bpw, base-3 packing) and TQ2_0 (2.0625 bpw, 2-bit codes).

ggml's `quantize_row_tq{1,2}_0_ref` (d = max |x|, codes lroundf(x/d) in -1..1; the imatrix is
ignored), `dequantize_row_tq{1,2}_0`, and the dot products against Q8_K activations
`ggml_vec_dot_tq{1,2}_0_q8_K_generic` (Q8_K comes from the kernel registered in kquants).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numeric import F32, fp16_to_fp32, fp32_to_fp16, get_u16, put_u16, q8_K_activations, roundf
from ._registry import register
from llmtk.ggufio.constants import type_traits

TQ1_0_SIZE = type_traits("TQ1_0").type_size  # qs:48 qh:4 d:2
TQ2_0_SIZE = type_traits("TQ2_0").type_size  # qs:64 d:2
Q8_K_SIZE = type_traits("Q8_K").type_size    # d:4 (f32) qs:256 bsums:32
_POW3 = np.array([1, 3, 9, 27, 81, 243], dtype=np.int64)


@njit(cache=True, error_model="numpy")
def _amax_id(xb):
    amax = F32(0.0)
    for j in range(256):
        amax = max(amax, abs(xb[j]))
    d = amax
    id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    return d, id_


@njit(cache=True, error_model="numpy")
def _tq1_0_block(xb, y):
    """quantize_row_tq1_0_ref: 5 trits per qs byte, 4 per qh byte, scaled by 256/243 (ceil)."""
    d, id_ = _amax_id(xb)
    # qs[0:32]: values m + 32n of x[0:160]
    for m in range(32):
        q = 0
        for n in range(5):
            q = q * 3 + roundf(xb[m + n * 32] * id_) + 1
        y[m] = (q * 256 + 242) // 243
    # qs[32:48]: values m + 16n of x[160:240]
    for m in range(16):
        q = 0
        for n in range(5):
            q = q * 3 + roundf(xb[160 + m + n * 16] * id_) + 1
        y[32 + m] = (q * 256 + 242) // 243
    # qh[0:4]: values j + 4m of x[240:256], first trit shifted to the top
    for j in range(4):
        q = 0
        for m in range(4):
            q = q * 3 + roundf(xb[240 + j + m * 4] * id_) + 1
        q *= 3
        y[48 + j] = (q * 256 + 242) // 243
    put_u16(y, 52, fp32_to_fp16(d))


@njit(cache=True, error_model="numpy")
def _tq2_0_block(xb, y):
    """quantize_row_tq2_0_ref: four 2-bit codes (trit + 1) per byte, strided by 32."""
    d, id_ = _amax_id(xb)
    for j in range(2):
        for m in range(32):
            q = 0
            for n in range(4):
                xi = roundf(xb[128 * j + m + n * 32] * id_) + 1
                q += (xi & 3) << (2 * n)
            y[32 * j + m] = q
    put_u16(y, 64, fp32_to_fp16(d))


@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_rows(tq1, x, out):
    for r in prange(x.shape[0]):
        for i in range(x.shape[1] // 256):
            if tq1:
                _tq1_0_block(x[r, 256 * i:256 * (i + 1)], out[r, 54 * i:54 * (i + 1)])
            else:
                _tq2_0_block(x[r, 256 * i:256 * (i + 1)], out[r, 66 * i:66 * (i + 1)])


@njit(cache=True, inline="always")
def _trit(byte, n):
    """The n-th base-3 digit of a TQ1_0 byte: ((uint8)(byte * 3^n) * 3) >> 8, in 0..2."""
    return (((byte * _POW3[n]) & 0xFF) * 3) >> 8


@njit(cache=True, inline="always")
def _trit32(byte, p):
    """_trit minus one in 32-bit lanes (numba widens int32 arithmetic; the casts narrow it back
    so that the vectorized loops use 16 lanes): ((uint8)(byte * p) * 3 >> 8) - 1."""
    q = np.int32(np.int32(np.int32(byte) * p) & np.int32(0xFF))
    return np.int32(np.int32(np.int32(q * np.int32(3)) >> np.int32(8)) - np.int32(1))


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_tq1_0(data, out, n32):
    """dequantize_row_tq1_0. `n32` is 32 passed at run time: LLVM loop-vectorizes a run-time count
    of known maximum but fully unrolls (and leaves scalar) a constant one."""
    n16 = min(n32 // 2, 16)
    n4 = min(n32 // 8, 4)
    n32 = min(n32, 32)
    for r in prange(data.shape[0]):
        for i in range(out.shape[1] // 256):
            b = data[r, 54 * i:54 * (i + 1)]
            y = out[r, 256 * i:256 * (i + 1)]
            d = fp16_to_fp32(get_u16(b, 52))
            for n in range(5):
                p = np.int32(_POW3[n])
                for m in range(n32):
                    y[32 * n + m] = F32(_trit32(b[m], p)) * d
            for n in range(5):
                p = np.int32(_POW3[n])
                for m in range(n16):
                    y[160 + 16 * n + m] = F32(_trit32(b[32 + m], p)) * d
            for n in range(4):
                p = np.int32(_POW3[n])
                for j in range(n4):
                    y[240 + 4 * n + j] = F32(_trit32(b[48 + j], p)) * d


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_tq2_0(data, out, n32):
    """dequantize_row_tq2_0 (`n32` as in _dequantize_tq1_0)."""
    n32 = min(n32, 32)
    for r in prange(data.shape[0]):
        for i in range(out.shape[1] // 256):
            b = data[r, 66 * i:66 * (i + 1)]
            y = out[r, 256 * i:256 * (i + 1)]
            d = fp16_to_fp32(get_u16(b, 64))
            for j in range(2):
                for l in range(4):
                    for m in range(n32):
                        q = np.int32(np.int32(np.int32(b[32 * j + m]) >> np.int32(2 * l)) & np.int32(3))
                        y[128 * j + 32 * l + m] = F32(np.int32(q - np.int32(1))) * d


@njit(cache=True, error_model="numpy")
def _q8_K_d(a, off):
    """The float32 scale at the start of a Q8_K block."""
    return a[off:off + 4].copy().view(np.float32)[0]


@njit(cache=True, error_model="numpy")
def _vec_dot(tq1, w, a):
    """ggml_vec_dot_tq{1,2}_0_q8_K_generic: one int sum per block, then sum * (d_x * d_y)."""
    sumf = F32(0.0)
    ts = TQ1_0_SIZE if tq1 else TQ2_0_SIZE
    for i in range(w.shape[0] // ts):
        b = w[ts * i:ts * (i + 1)]
        ao = Q8_K_SIZE * i
        qy = a[ao + 4:ao + 260].view(np.int8)
        s = 0
        if tq1:
            for n in range(5):
                for m in range(32):
                    s += (_trit(b[m], n) - 1) * np.int64(qy[32 * n + m])
            for n in range(5):
                for m in range(16):
                    s += (_trit(b[32 + m], n) - 1) * np.int64(qy[160 + 16 * n + m])
            for n in range(4):
                for j in range(4):
                    s += (_trit(b[48 + j], n) - 1) * np.int64(qy[240 + 4 * n + j])
            sumf += F32(s) * (fp16_to_fp32(get_u16(b, 52)) * _q8_K_d(a, ao))
        else:
            for j in range(2):
                for l in range(4):
                    for m in range(32):
                        s += np.int64(qy[128 * j + 32 * l + m]) * ((np.int64(b[32 * j + m] >> (2 * l)) & 3) - 1)
            sumf += F32(s) * (_q8_K_d(a, ao) * fp16_to_fp32(get_u16(b, 64)))
    return sumf


@njit(cache=True, parallel=True, error_model="numpy")
def _matvec_rows(tq1, w, a, out):
    for r in prange(w.shape[0]):
        for t in range(a.shape[0]):
            out[t, r] = _vec_dot(tq1, w[r], a[t])


def _make(tq1: bool, ts: int):
    def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((x.shape[0], x.shape[1] // 256 * ts), dtype=np.uint8)
        _quantize_rows(tq1, x, out)
        return out

    def dequantize(data: np.ndarray, cols: int) -> np.ndarray:
        out = np.empty((data.shape[0], cols), dtype=np.float32)
        (_dequantize_tq1_0 if tq1 else _dequantize_tq2_0)(np.ascontiguousarray(data), out, 32)
        return out

    def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        a = q8_K_activations(x)
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        _matvec_rows(tq1, np.ascontiguousarray(w), a, out)
        return out

    return quantize, dequantize, matvec


for _name, _tq1, _ts in (("TQ1_0", True, TQ1_0_SIZE), ("TQ2_0", False, TQ2_0_SIZE)):
    _q, _dq, _mv = _make(_tq1, _ts)
    register(_name, quantize=_q, dequantize=_dq, matvec=_mv, vec_dot_type="Q8_K")
