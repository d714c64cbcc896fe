"""FP4 types: MXFP4 (32 e2m1 values, one E8M0 scale) and NVFP4 (64 values, an unsigned E4M3 scale
per 16).

ggml's `quantize_row_{mx,nv}fp4_ref` (the imatrix is ignored), `dequantize_row_{mx,nv}fp4` and
the Q8_0 dot products `ggml_vec_dot_{mx,nv}fp4_q8_0_generic`. The code tables hold e2m1 values
doubled (kvalues_fp4), which is why the scales are halved.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numeric import (F32, KVALUES_FP4, dequantize_nibbles, dot_nibbles, e8m0_to_fp32_half, fp16_to_fp32,
                       fp32_to_ue4m3, get_u16, ue4m3_to_fp32)
from ._registry import register
from llmtk.ggufio.constants import type_traits
from .legacy import quantize_q8_0

MXFP4_SIZE = type_traits("MXFP4").type_size  # e:1 qs:16
NVFP4_SIZE = type_traits("NVFP4").type_size  # d:4 (UE4M3) qs:32


@njit(cache=True, inline="always")
def _best_index_mxfp4(x, e):
    """ggml's best_index_mxfp4: the first code whose value * e is nearest to x."""
    best_index = 0
    best_err = abs(F32(KVALUES_FP4[0]) * e - x)
    for i in range(1, 16):
        err = abs(F32(KVALUES_FP4[i]) * e - x)
        if err < best_err:
            best_index = i
            best_err = err
    return best_index


@njit(cache=True, error_model="numpy")
def _mxfp4_block(xb, y):
    """quantize_row_mxfp4_ref: e = floor(log2 amax) - 2 + 127, codes by nearest value."""
    amax = F32(0.0)
    for j in range(32):
        if amax < abs(xb[j]):
            amax = abs(xb[j])
    e = 0
    if amax > F32(0.0):
        # (uint8_t) of a float: through int, keeping the low byte
        e = np.int64(np.floor(np.log2(amax)) - F32(2.0) + F32(127.0)) & 0xFF
    d = e8m0_to_fp32_half(e)
    y[0] = e
    for j in range(16):
        y[1 + j] = _best_index_mxfp4(xb[j], d) | (_best_index_mxfp4(xb[j + 16], d) << 4)


@njit(cache=True, error_model="numpy")
def _nvfp4_block(xb, y):
    """quantize_row_nvfp4_ref: per 16 values, UE4M3 scale of amax / 6, codes by nearest value."""
    for s in range(4):
        amax = F32(0.0)
        for j in range(16):
            if amax < abs(xb[16 * s + j]):
                amax = abs(xb[16 * s + j])
        ue = fp32_to_ue4m3(amax / F32(6.0))
        y[s] = ue
        d = ue4m3_to_fp32(ue)
        for j in range(8):
            x0 = _best_index_mxfp4(xb[16 * s + j], d)
            x1 = _best_index_mxfp4(xb[16 * s + 8 + j], d)
            y[4 + 8 * s + j] = x0 | (x1 << 4)


@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_rows(mx, x, out):
    qk = 32 if mx else 64
    ts = MXFP4_SIZE if mx else NVFP4_SIZE
    for r in prange(x.shape[0]):
        for i in range(x.shape[1] // qk):
            if mx:
                _mxfp4_block(x[r, qk * i:qk * (i + 1)], out[r, ts * i:ts * (i + 1)])
            else:
                _nvfp4_block(x[r, qk * i:qk * (i + 1)], out[r, ts * i:ts * (i + 1)])


# The inner loops run min(h, 16) / min(h // 2, 8) times with h = 16 passed at run time: LLVM
# loop-vectorizes a run-time count of known maximum, but fully unrolls a constant one and leaves
# it scalar (numba runs no SLP vectorizer). Block strides stay compile-time constants.

@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_mxfp4(data, out, h):
    """dequantize_row_mxfp4."""
    n16 = min(h, 16)
    for r in prange(data.shape[0]):
        q = data[r]
        y = out[r]
        for i in range(y.shape[0] // 32):
            d = e8m0_to_fp32_half(np.int64(q[17 * i]))
            dequantize_nibbles(KVALUES_FP4, q, 17 * i + 1, d, y, 32 * i, n16, 16)


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_nvfp4(data, out, h):
    """dequantize_row_nvfp4: one UE4M3 scale per 16 values."""
    n8 = min(h // 2, 8)
    for r in prange(data.shape[0]):
        q = data[r]
        y = out[r]
        for i in range(y.shape[0] // 64):
            for s in range(4):
                d = ue4m3_to_fp32(np.int64(q[36 * i + s]))
                dequantize_nibbles(KVALUES_FP4, q, 36 * i + 4 + 8 * s, d, y, 64 * i + 16 * s, n8, 8)


@njit(cache=True, error_model="numpy")
def _vec_dot(mx, w, a):
    """ggml_vec_dot_mxfp4_q8_0_generic / ggml_vec_dot_nvfp4_q8_0_generic."""
    sumf = F32(0.0)
    if mx:
        for ib in range(w.shape[0] // MXFP4_SIZE):
            b = w[MXFP4_SIZE * ib:MXFP4_SIZE * (ib + 1)]
            yo = 34 * ib
            d = fp16_to_fp32(get_u16(a, yo)) * e8m0_to_fp32_half(np.int64(b[0]))
            sumf += d * F32(dot_nibbles(KVALUES_FP4, b, 1, a, yo + 2, 16))
        return sumf
    for ib in range(w.shape[0] // NVFP4_SIZE):
        b = w[NVFP4_SIZE * ib:NVFP4_SIZE * (ib + 1)]
        for s in range(4):
            d = ue4m3_to_fp32(np.int64(b[s]))
            yo = 34 * (2 * ib + s // 2) + 2 + 16 * (s % 2)
            dy = fp16_to_fp32(get_u16(a, 34 * (2 * ib + s // 2)))
            sumf += dy * d * F32(dot_nibbles(KVALUES_FP4, b, 4 + 8 * s, a, yo, 8))
    return sumf


@njit(cache=True, parallel=True, error_model="numpy")
def _matvec_rows(mx, w, a, out):
    for r in prange(w.shape[0]):
        for t in range(a.shape[0]):
            out[t, r] = _vec_dot(mx, w[r], a[t])


def _make(mx: bool, qk: int, ts: int):
    def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((x.shape[0], x.shape[1] // qk * ts), dtype=np.uint8)
        _quantize_rows(mx, x, out)
        return out

    def dequantize(data: np.ndarray, cols: int) -> np.ndarray:
        out = np.empty((data.shape[0], cols), dtype=np.float32)
        (_dequantize_mxfp4 if mx else _dequantize_nvfp4)(np.ascontiguousarray(data), out, 16)
        return out

    def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        a = quantize_q8_0(np.ascontiguousarray(x, dtype=np.float32))
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        _matvec_rows(mx, np.ascontiguousarray(w), a, out)
        return out

    return quantize, dequantize, matvec


for _name, _mx, _qk, _ts in (("MXFP4", True, 32, MXFP4_SIZE), ("NVFP4", False, 64, NVFP4_SIZE)):
    _q, _dq, _mv = _make(_mx, _qk, _ts)
    register(_name, quantize=_q, dequantize=_dq, matvec=_mv, vec_dot_type="Q8_0")
