"""Non-linear 4-bit types IQ4_NL (blocks of 32, one fp16 scale) and IQ4_XS (super-blocks of 256,
6-bit sub-block scales).

Both go through ggml's `quantize_row_iq4_nl_impl` with ntry 7 (what `quantize_iq4_nl` /
`quantize_iq4_xs` pass, plain or with an imatrix): a per-block scale search over the
kvalues_iq4nl grid, then for IQ4_XS a 6-bit requantization of the block scales. Plain weights are
x^2; with an imatrix qw * sqrt(sigma2 + x^2). Dot products: IQ4_NL against Q8_0
(`ggml_vec_dot_iq4_nl_q8_0_generic`), IQ4_XS against Q8_K (`ggml_vec_dot_iq4_xs_q8_K_generic`).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from llmtk.ggufio.constants import type_traits

from ._numeric import (F32, GROUP_MAX_EPS, KVALUES_IQ4NL, best_index_iq4nl, dequantize_nibbles, dot_nibbles,
                       fp16_to_fp32, fp32_to_fp16, get_u16, nearest_int, put_u16, q8_K_activations)
from ._registry import register
from .legacy import quantize_q8_0

IQ4_NL_SIZE = type_traits("IQ4_NL").type_size  # d:2 qs:16
IQ4_XS_SIZE = type_traits("IQ4_XS").type_size  # d:2 scales_h:2 scales_l:4 qs:128
Q8_K_SIZE = type_traits("Q8_K").type_size      # d:4 (f32) qs:256 bsums:32


@njit(cache=True, error_model="numpy")
def _iq4_nl_impl(sbs, x, y, qw, use_qw, scales, weight, L):
    """quantize_row_iq4_nl_impl(sbs, 32, ..., kvalues_iq4nl, qw, ntry=7) into the block bytes y.

    IQ4_NL (sbs 32): y = d:2 qs:16. IQ4_XS (sbs 256): y = d:2 scales_h:2 scales_l:4 qs:128.
    """
    values = KVALUES_IQ4NL
    ntry = 7
    sigma2 = F32(0.0)
    for j in range(sbs):
        sigma2 += x[j] * x[j]
    sigma2 *= F32(2.0) / F32(sbs)

    max_scale = F32(0.0)
    amax_scale = F32(0.0)
    nb = sbs // 32
    for ib in range(nb):
        xb = x[32 * ib:32 * (ib + 1)]
        if use_qw:
            for j in range(32):
                weight[j] = qw[32 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j])
        else:
            for j in range(32):
                weight[j] = xb[j] * xb[j]
        amax = F32(0.0)
        max_ = F32(0.0)
        for j in range(32):
            ax = abs(xb[j])
            if ax > amax:
                amax = ax
                max_ = xb[j]
        if amax < GROUP_MAX_EPS:
            scales[ib] = F32(0.0)
            continue
        d = -max_ / F32(values[0])
        id_ = F32(1.0) / d
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for j in range(32):
            l = best_index_iq4nl(id_ * xb[j])
            L[32 * ib + j] = l
            q = F32(values[l])
            w = weight[j]
            sumqx += w * q * xb[j]
            sumq2 += w * q * q
        d = sumqx / sumq2 if sumq2 > F32(0.0) else F32(0.0)
        best = d * sumqx
        for itry in range(-ntry, ntry + 1):
            id_ = F32(itry + values[0]) / max_
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for j in range(32):
                l = best_index_iq4nl(id_ * xb[j])
                q = F32(values[l])
                w = weight[j]
                sumqx += w * q * xb[j]
                sumq2 += w * q * q
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales[ib] = d
        abs_d = abs(d)
        if abs_d > amax_scale:
            amax_scale = abs_d
            max_scale = d

    if nb > 1:
        scales_h = 0
        for k in range(4):
            y[4 + k] = 0
        d = -max_scale / F32(32.0)
        put_u16(y, 0, fp32_to_fp16(d))
        id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
        for ib in range(nb):
            l = max(-32, min(31, nearest_int(id_ * scales[ib])))
            dl = d * F32(l)
            idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
            for j in range(32):
                L[32 * ib + j] = best_index_iq4nl(idl * x[32 * ib + j])
            l += 32
            y[4 + ib // 2] |= (l & 0xF) << (4 * (ib % 2))
            scales_h |= (l >> 4) << (2 * (ib % 8))
        put_u16(y, 2, scales_h)
        qo = 8
    else:
        put_u16(y, 0, fp32_to_fp16(scales[0]))
        id_ = F32(1.0) / scales[0] if scales[0] != F32(0.0) else F32(0.0)
        for j in range(32):
            L[j] = best_index_iq4nl(id_ * x[j])
        qo = 2
    for i in range(sbs // 32):
        for j in range(16):
            y[qo + 16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4)


@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_rows(sbs, ts, x, out, qw, use_qw):
    for r in prange(x.shape[0]):
        scales = np.empty(sbs // 32, dtype=np.float32)
        weight = np.empty(32, dtype=np.float32)
        L = np.zeros(sbs, dtype=np.int64)
        for i in range(x.shape[1] // sbs):
            _iq4_nl_impl(sbs, x[r, sbs * i:sbs * (i + 1)], out[r, ts * i:ts * (i + 1)],
                         qw[sbs * i:sbs * (i + 1)], use_qw, scales, weight, L)


# The inner loops run min(h, 16) times with h = 16 passed at run time: LLVM loop-vectorizes a
# run-time count of known maximum, but fully unrolls a constant 16 and leaves it scalar (numba
# runs no SLP vectorizer). Block strides stay compile-time constants. No bits change.

@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_iq4_nl(data, out, h):
    """dequantize_row_iq4_nl."""
    n16 = min(h, 16)
    for r in prange(data.shape[0]):
        q = data[r]
        y = out[r]
        for i in range(y.shape[0] // 32):
            d = fp16_to_fp32(get_u16(q, 18 * i))
            dequantize_nibbles(KVALUES_IQ4NL, q, 18 * i + 2, d, y, 32 * i, n16, 16)


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_iq4_xs(data, out, h):
    """dequantize_row_iq4_xs: 6-bit sub-block scales ls - 32 times the fp16 d."""
    n16 = min(h, 16)
    for r in prange(data.shape[0]):
        q = data[r]
        y = out[r]
        for i in range(y.shape[0] // 256):
            o = 136 * i
            d = fp16_to_fp32(get_u16(q, o))
            scales_h = get_u16(q, o + 2)
            for ib in range(8):
                ls = ((q[o + 4 + ib // 2] >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4)
                dl = d * F32(ls - 32)
                dequantize_nibbles(KVALUES_IQ4NL, q, o + 8 + 16 * ib, dl, y, 256 * i + 32 * ib, n16, 16)


@njit(cache=True, error_model="numpy")
def _vec_dot(xs, w, a):
    """ggml_vec_dot_iq4_nl_q8_0_generic / ggml_vec_dot_iq4_xs_q8_K_generic."""
    sumf = F32(0.0)
    if not xs:
        for ib in range(w.shape[0] // IQ4_NL_SIZE):
            b = w[IQ4_NL_SIZE * ib:IQ4_NL_SIZE * (ib + 1)]
            yo = 34 * ib
            d = fp16_to_fp32(get_u16(a, yo)) * fp16_to_fp32(get_u16(b, 0))
            sumf += d * F32(dot_nibbles(KVALUES_IQ4NL, b, 2, a, yo + 2, 16))
        return sumf
    for ibl in range(w.shape[0] // IQ4_XS_SIZE):
        b = w[IQ4_XS_SIZE * ibl:IQ4_XS_SIZE * (ibl + 1)]
        ao = Q8_K_SIZE * ibl
        d8 = a[ao:ao + 4].copy().view(np.float32)[0]
        q8 = a[ao + 4:ao + 260].view(np.int8)
        d4d8 = fp16_to_fp32(get_u16(b, 0)) * d8
        h = get_u16(b, 2)
        for ib in range(8):
            ls = ((b[4 + ib // 2] >> (4 * (ib % 2))) & 0xF) | (((h >> (2 * ib)) & 3) << 4)
            dl = d4d8 * F32(ls - 32)
            sumf += dl * F32(dot_nibbles(KVALUES_IQ4NL, b, 8 + 16 * ib, q8, 32 * ib, 16))
    return sumf


@njit(cache=True, parallel=True, error_model="numpy")
def _matvec_rows(xs, w, a, out):
    for r in prange(w.shape[0]):
        for t in range(a.shape[0]):
            out[t, r] = _vec_dot(xs, w[r], a[t])


def _make(xs: bool):
    sbs = 256 if xs else 32
    ts = IQ4_XS_SIZE if xs else IQ4_NL_SIZE
    def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((x.shape[0], x.shape[1] // sbs * ts), dtype=np.uint8)
        if imatrix is None:
            _quantize_rows(sbs, ts, x, out, np.zeros(x.shape[1], dtype=np.float32), False)
        else:
            _quantize_rows(sbs, ts, x, out, imatrix, True)
        return out

    def dequantize(data: np.ndarray, cols: int) -> np.ndarray:
        out = np.empty((data.shape[0], cols), dtype=np.float32)
        (_dequantize_iq4_xs if xs else _dequantize_iq4_nl)(np.ascontiguousarray(data), out, 16)
        return out

    def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        a = q8_K_activations(x) if xs else quantize_q8_0(x)
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        _matvec_rows(xs, np.ascontiguousarray(w), a, out)
        return out

    return quantize, dequantize, matvec


for _name, _xs in (("IQ4_NL", False), ("IQ4_XS", True)):
    _q, _dq, _mv = _make(_xs)
    register(_name, quantize=_q, dequantize=_dq, matvec=_mv, vec_dot_type="Q8_K" if _xs else "Q8_0")
