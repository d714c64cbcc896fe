"""IQ1_S, IQ1_M: 1.5- and 1.75-bit grid i-quants (values -1, 0, 1 plus a shift), bit-exact with ggml.

Quantizers follow `quantize_row_iq1_{s,m}_impl`, dequantizers `dequantize_row_iq1_*`, dot products
`ggml_vec_dot_iq1_*_q8_K_generic` (see `kernels/iquants/__init__.py`). Byte layouts
(ggml-common.h), per super-block of 256 values:
  IQ1_S    d:2 qs:32 qh:16 (8 x u16 grid high 3x3 bits | scale<<12 | delta sign<<15)
  IQ1_M    qs:32 qh:16 scales:8 (4 x u16: 3-bit scales, the fp16 d spread over the top nibbles)
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._common import (FLT_MAX, _abs_max, _imatrix_weights, _iq1_m_shift_values, _iq1_snap_to_grid, _scale_code,
                      _split_levels, _stable_argsort, _sum_sq, _vmax, register_iq)
from .._numeric import F32, fp16_to_fp32, fp32_to_fp16, get_u16, put_u16
from llmtk.ggufio.constants import QK_K, GGMLType, type_traits

IQ1S_DELTA = F32(0.125)
IQ1M_DELTA = F32(0.125)
GROUP_MAX_EPS_IQ1_M = F32(1e-7)
GROUP_MAX_EPS_IQ1_S = F32(1e-12)
IQ1_S_SIZE = type_traits("IQ1_S").type_size
IQ1_M_SIZE = type_traits("IQ1_M").type_size


# --- dequantization (dequantize_row_*), one block of 256 values into y[0:256] --------------------

@njit(cache=True, error_model="numpy")
def _dq_iq1_s(b, y, grid_v, ksigns):
    """dequantize_row_iq1_s, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib in range(8):
        qh = get_u16(b, 34 + 2 * ib)
        dl = d * F32(2 * ((qh >> 12) & 7) + 1)
        delta = -IQ1S_DELTA if qh & 0x8000 else IQ1S_DELTA
        for l in range(4):
            g = np.int64(b[2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)
            for j in range(8):
                y[32 * ib + 8 * l + j] = dl * (F32(grid_v[g, j]) + delta)


@njit(cache=True, error_model="numpy")
def _dq_iq1_m(b, y, grid_v, ksigns):
    """dequantize_row_iq1_m, one block."""
    sc0 = get_u16(b, 48)
    sc1 = get_u16(b, 50)
    sc2 = get_u16(b, 52)
    sc3 = get_u16(b, 54)
    u16 = (sc0 >> 12) | ((sc1 >> 8) & 0x00F0) | ((sc2 >> 4) & 0x0F00) | (sc3 & 0xF000)
    d = fp16_to_fp32(u16)
    for ib in range(8):
        sc = get_u16(b, 48 + 2 * (ib // 2))
        dl1 = d * F32(2 * ((sc >> (6 * (ib % 2))) & 0x7) + 1)
        dl2 = d * F32(2 * ((sc >> (6 * (ib % 2) + 3)) & 0x7) + 1)
        qh0 = np.int64(b[32 + 2 * ib])
        qh1 = np.int64(b[32 + 2 * ib + 1])
        for l in range(4):
            qs = np.int64(b[4 * ib + l])
            qh = qh0 if l < 2 else qh1
            g = qs | ((qh << (8 if l % 2 == 0 else 4)) & 0x700)
            neg = (qh & (0x08 if l % 2 == 0 else 0x80)) != 0
            delta = -IQ1M_DELTA if neg else IQ1M_DELTA
            dl = dl1 if l < 2 else dl2
            for j in range(8):
                y[32 * ib + 8 * l + j] = dl * (F32(grid_v[g, j]) + delta)



# --- quantization (quantize_row_*_impl), one row --------------------------------------------------

@njit(cache=True, error_model="numpy")
def _q_iq1_s_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    """quantize_row_iq1_s_impl for one row (imatrix required)."""
    d2 = np.zeros(max_list, dtype=np.float32)
    cand = np.zeros((4, 33), dtype=np.float32)  # per i2: sumqx, sumq2 for x_p, then for x_m
    tail = np.zeros((4, 33), dtype=np.float32)  # per i2: the third terms of those sums
    block_size = 32
    x_p = np.array([F32(-1.0) + IQ1S_DELTA, IQ1S_DELTA, F32(1.0) + IQ1S_DELTA], dtype=np.float32)
    x_m = np.array([F32(-1.0) - IQ1S_DELTA, -IQ1S_DELTA, F32(1.0) - IQ1S_DELTA], dtype=np.float32)
    nbl = x.shape[0] // QK_K
    scales = np.zeros(8, dtype=np.float32)
    weight = np.zeros(32, dtype=np.float32)
    sumx = np.zeros(33, dtype=np.float32)
    sumw = np.zeros(33, dtype=np.float32)
    idx = np.zeros(32, dtype=np.int64)
    L = np.zeros(32, dtype=np.int8)
    index = np.zeros(4, dtype=np.int64)
    shifts = np.zeros(8, dtype=np.int64)
    for ibl in range(nbl):
        yo = ibl * 50
        y[yo:yo + 50] = 0
        max_scale = F32(0.0)
        xo = QK_K * ibl
        sigma2 = F32(2.0) * _sum_sq(x, xo) / F32(QK_K)
        for ib in range(8):
            xb = xo + block_size * ib
            _imatrix_weights(x, xb, qw, sigma2, weight, block_size)
            vmax = _abs_max(x, xb, block_size)
            if vmax < GROUP_MAX_EPS_IQ1_S:
                scales[ib] = F32(0.0)
                shifts[ib] = 1
                L[:] = 1
                continue
            _stable_argsort(x, xb, block_size, idx)
            sumx[0] = F32(0.0)
            sumw[0] = F32(0.0)
            for j in range(block_size):
                i = idx[j]
                sumx[j + 1] = sumx[j] + weight[i] * x[xb + i]
                sumw[j + 1] = sumw[j] + weight[i]
            best_score = -FLT_MAX
            scale = vmax
            besti1 = -1
            besti2 = -1
            best_shift = 0
            # ggml's exhaustive search over the two split points. Each sum is C's
            # (first + middle) + third: the first term depends on i1 only, the third on i2 only,
            # so both are computed once; a vectorizable pass fills the candidates of one i1, and
            # a scalar pass takes them in C's order (x_p, then x_m, for each i2).
            for i2 in range(block_size + 1):
                tail[0, i2] = (sumx[block_size] - sumx[i2]) * x_p[2]
                tail[1, i2] = (sumw[block_size] - sumw[i2]) * x_p[2] * x_p[2]
                tail[2, i2] = (sumx[block_size] - sumx[i2]) * x_m[2]
                tail[3, i2] = (sumw[block_size] - sumw[i2]) * x_m[2] * x_m[2]
            for i1 in range(block_size + 1):
                hx_p = (sumx[i1] - sumx[0]) * x_p[0]
                hw_p = (sumw[i1] - sumw[0]) * x_p[0] * x_p[0]
                hx_m = (sumx[i1] - sumx[0]) * x_m[0]
                hw_m = (sumw[i1] - sumw[0]) * x_m[0] * x_m[0]
                sx1 = sumx[i1]
                sw1 = sumw[i1]
                for i2 in range(i1, block_size + 1):
                    dx = sumx[i2] - sx1
                    dw = sumw[i2] - sw1
                    cand[0, i2] = hx_p + dx * x_p[1] + tail[0, i2]
                    cand[1, i2] = hw_p + dw * x_p[1] * x_p[1] + tail[1, i2]
                    cand[2, i2] = hx_m + dx * x_m[1] + tail[2, i2]
                    cand[3, i2] = hw_m + dw * x_m[1] * x_m[1] + tail[3, i2]
                # a candidate can only win if it beats the best so far: skip the scalar pass
                # when no candidate of this i1 does (nothing would change in it)
                hit = 0
                for i2 in range(i1, block_size + 1):
                    hit |= (cand[1, i2] > F32(0.0)) & (cand[0, i2] * cand[0, i2] > best_score * cand[1, i2])
                    hit |= (cand[3, i2] > F32(0.0)) & (cand[2, i2] * cand[2, i2] > best_score * cand[3, i2])
                if not hit:
                    continue
                for i2 in range(i1, block_size + 1):
                    sumqx = cand[0, i2]
                    sumq2 = cand[1, i2]
                    if sumq2 > F32(0.0) and sumqx * sumqx > best_score * sumq2:
                        scale = sumqx / sumq2
                        best_score = scale * sumqx
                        besti1 = i1
                        besti2 = i2
                        best_shift = 1
                    sumqx = cand[2, i2]
                    sumq2 = cand[3, i2]
                    if sumq2 > F32(0.0) and sumqx * sumqx > best_score * sumq2:
                        scale = sumqx / sumq2
                        best_score = scale * sumqx
                        besti1 = i1
                        besti2 = i2
                        best_shift = -1
            if besti1 < 0 or besti2 < 0 or best_shift == 0:
                scales[ib] = F32(0.0)
                shifts[ib] = 1
                L[:] = 1
                continue
            flip = scale < F32(0.0)
            _split_levels(L, idx, besti1, besti2, block_size, flip)
            if flip:
                scale = -scale
                best_shift = -best_shift
            xx = x_p if best_shift == 1 else x_m  # one shift for the 4 groups
            scale = _iq1_snap_to_grid(L, kmap, neigh, levels, tabs, x, xb, weight, scale, xx, xx, index, 4, d2)
            h = 0
            for k in range(4):
                y[yo + 2 + 4 * ib + k] = index[k] & 255
                h |= (index[k] >> 8) << (3 * k)
            put_u16(y, yo + 34 + 2 * ib, h)
            scales[ib] = scale
            shifts[ib] = best_shift
            max_scale = _vmax(max_scale, scale)
        if max_scale == F32(0.0):
            continue
        d = max_scale / F32(15.0)
        put_u16(y, yo, fp32_to_fp16(d * F32(1.125)))
        id_ = F32(1.0) / d
        for ib in range(8):
            l = _scale_code(id_, scales[ib], 7)
            if shifts[ib] == -1:
                l |= 8
            put_u16(y, yo + 34 + 2 * ib, get_u16(y, yo + 34 + 2 * ib) | (l << 12))


@njit(cache=True, error_model="numpy")
def _q_iq1_m_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    """quantize_row_iq1_m_impl for one row (block_iq1_m, 56 bytes: qs:32 qh:16 scales:8)."""
    d2 = np.zeros(max_list, dtype=np.float32)
    block_size = 16
    x_p = np.array([F32(-1.0) + IQ1M_DELTA, IQ1M_DELTA, F32(1.0) + IQ1M_DELTA], dtype=np.float32)
    x_m = np.array([F32(-1.0) - IQ1M_DELTA, -IQ1M_DELTA, F32(1.0) - IQ1M_DELTA], dtype=np.float32)
    masks = np.array([0x00, 0x80, 0x08, 0x88], dtype=np.int64)
    nbl = x.shape[0] // QK_K
    scales = np.zeros(16, dtype=np.float32)
    weight = np.zeros(16, dtype=np.float32)
    idx = np.zeros(16, dtype=np.int64)
    L = np.zeros(16, dtype=np.int8)
    index = np.zeros(2, dtype=np.int64)
    shifts = np.zeros(16, dtype=np.int64)
    px = np.zeros((2, 17), dtype=np.float32)
    pw = np.zeros((2, 17), dtype=np.float32)
    cand = np.zeros((8, 17), dtype=np.float32)  # per i2: sumqx[0..3], sumq2[0..3]
    b_p = np.zeros((2, 17), dtype=np.float32)
    b_m = np.zeros((2, 17), dtype=np.float32)
    tx_p = np.zeros(2, dtype=np.float32)
    tx_m = np.zeros(2, dtype=np.float32)
    tw_p = np.zeros(2, dtype=np.float32)
    tw_m = np.zeros(2, dtype=np.float32)
    sc = np.zeros(4, dtype=np.int64)
    p2 = x_p[2]
    m2 = x_m[2]
    cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1]
    cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2]
    cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1]
    cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2]
    for ibl in range(nbl):
        yo = ibl * 56
        y[yo:yo + 56] = 0
        max_scale = F32(0.0)
        xo = QK_K * ibl
        sigma2 = F32(2.0) * _sum_sq(x, xo) / F32(QK_K)
        for ib in range(16):
            xb = xo + block_size * ib
            if has_qw:
                _imatrix_weights(x, xb, qw, sigma2, weight, block_size)
            else:
                for i in range(block_size):
                    weight[i] = x[xb + i] * x[xb + i]
            vmax = _abs_max(x, xb, block_size)
            if vmax < GROUP_MAX_EPS_IQ1_M:
                scales[ib] = F32(0.0)
                shifts[ib] = 0
                L[:] = 1
                continue
            _stable_argsort(x, xb, block_size, idx)
            best_score = -FLT_MAX
            scale = vmax
            besti1 = -1
            besti2 = -1
            best_k = -1
            # prefix sums per half of the block: each half may use its own shift (x_p or x_m)
            px[0, 0] = F32(0.0)
            px[1, 0] = F32(0.0)
            pw[0, 0] = F32(0.0)
            pw[1, 0] = F32(0.0)
            for j in range(block_size):
                i = idx[j]
                h = 0 if i < block_size // 2 else 1
                px[h, j + 1] = px[h, j] + weight[i] * x[xb + i]
                px[1 - h, j + 1] = px[1 - h, j]
                pw[h, j + 1] = pw[h, j] + weight[i]
                pw[1 - h, j + 1] = pw[1 - h, j]
            # C's sums, with the terms that depend on i1 only or i2 only computed once; a
            # vectorizable pass fills one i1's candidates, a scalar pass takes them in C's order
            for h in range(2):
                txs = px[h, block_size]
                tws = pw[h, block_size]
                tx_p[h] = txs * p2
                tx_m[h] = txs * m2
                tw_p[h] = tws * p2 * p2
                tw_m[h] = tws * m2 * m2
                for i2 in range(block_size + 1):
                    b_p[h, i2] = pw[h, i2] * cp2
                    b_m[h, i2] = pw[h, i2] * cm2
            for i1 in range(block_size + 1):
                px10 = px[0, i1]
                px11 = px[1, i1]
                a_p0 = tw_p[0] + pw[0, i1] * cp1
                a_p1 = tw_p[1] + pw[1, i1] * cp1
                a_m0 = tw_m[0] + pw[0, i1] * cm1
                a_m1 = tw_m[1] + pw[1, i1] * cm1
                for i2 in range(i1, block_size + 1):
                    sx0 = px10 + px[0, i2]
                    sx1 = px11 + px[1, i2]
                    qx_p0 = tx_p[0] - sx0
                    qx_p1 = tx_p[1] - sx1
                    qx_m0 = tx_m[0] - sx0
                    qx_m1 = tx_m[1] - sx1
                    q2_p0 = a_p0 + b_p[0, i2]
                    q2_p1 = a_p1 + b_p[1, i2]
                    q2_m0 = a_m0 + b_m[0, i2]
                    q2_m1 = a_m1 + b_m[1, i2]
                    cand[0, i2] = qx_p0 + qx_p1
                    cand[1, i2] = qx_p0 + qx_m1
                    cand[2, i2] = qx_m0 + qx_p1
                    cand[3, i2] = qx_m0 + qx_m1
                    cand[4, i2] = q2_p0 + q2_p1
                    cand[5, i2] = q2_p0 + q2_m1
                    cand[6, i2] = q2_m0 + q2_p1
                    cand[7, i2] = q2_m0 + q2_m1
                hit = 0
                for i2 in range(i1, block_size + 1):
                    for k in range(4):
                        hit |= (cand[4 + k, i2] > F32(0.0)) & (cand[k, i2] * cand[k, i2] > best_score * cand[4 + k, i2])
                if not hit:
                    continue
                for i2 in range(i1, block_size + 1):
                    for k in range(4):
                        sqx = cand[k, i2]
                        sq2 = cand[4 + k, i2]
                        if sq2 > F32(0.0) and sqx * sqx > best_score * sq2:
                            scale = sqx / sq2
                            best_score = scale * sqx
                            besti1 = i1
                            besti2 = i2
                            best_k = k
            if besti1 < 0 or besti2 < 0 or best_k < 0:
                scales[ib] = F32(0.0)
                shifts[ib] = 0
                L[:] = 1
                continue
            flip = scale < F32(0.0)
            _split_levels(L, idx, besti1, besti2, block_size, flip)
            if flip:
                scale = -scale
                best_k = 3 - best_k
            xlo, xhi = _iq1_m_shift_values(best_k, x_p, x_m)
            scale = _iq1_snap_to_grid(L, kmap, neigh, levels, tabs, x, xb, weight, scale, xlo, xhi, index, 2, d2)
            y[yo + 2 * ib] = index[0] & 255
            y[yo + 2 * ib + 1] = index[1] & 255
            y[yo + 32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
            scales[ib] = scale
            shifts[ib] = best_k
            max_scale = _vmax(max_scale, scale)
        if max_scale == F32(0.0):
            continue
        sc[:] = 0
        d = max_scale / F32(15.0)
        id_ = F32(1.0) / d
        sumqx_f = F32(0.0)
        sumq2_f = F32(0.0)
        for ib in range(16):
            l = _scale_code(id_, scales[ib], 7)
            sc[ib // 4] |= l << (3 * (ib % 4))
            y[yo + 32 + ib] |= masks[shifts[ib]]
            xb = xo + block_size * ib
            if has_qw:
                _imatrix_weights(x, xb, qw, sigma2, weight, block_size)
            else:
                for i in range(block_size):
                    weight[i] = x[xb + i] * x[xb + i]
            qh = np.int64(y[yo + 32 + ib])
            xlo, xhi = _iq1_m_shift_values(shifts[ib], x_p, x_m)
            for k in range(2):
                xx = xlo if k == 0 else xhi
                g = np.int64(y[yo + 2 * ib + k]) + ((qh << (8 - 4 * k)) & 0x700)
                for j in range(8):
                    w = weight[8 * k + j]
                    q = xx[levels[g, j]] * F32(2 * l + 1)
                    sumqx_f += w * q * x[xb + 8 * k + j]
                    sumq2_f += w * q * q
        if sumq2_f > F32(0.0):
            d = sumqx_f / sumq2_f
        s = fp32_to_fp16(d * F32(1.1125))
        sc[0] |= (s & 0x000F) << 12
        sc[1] |= (s & 0x00F0) << 8
        sc[2] |= (s & 0x0F00) << 4
        sc[3] |= s & 0xF000
        for i in range(4):
            put_u16(y, yo + 48 + 2 * i, sc[i])


# --- dot products against Q8_K activations ----------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _vec_dot_iq1_s(w, d8, q8, bsums8, grid_v, ksigns):
    """ggml_vec_dot_iq1_s_q8_K_generic: one weight row `w` against one Q8_K row (d8 (nb,),
    q8 (cols,) int8, bsums8 (nb*16,)), integer sums per sub-block, float per block."""
    sumf = F32(0.0)
    for i in range(d8.shape[0]):
        b = w[i * IQ1_S_SIZE:(i + 1) * IQ1_S_SIZE]
        o8 = i * QK_K
        sumi = 0
        sumi1 = 0
        for ib in range(8):
            qh = get_u16(b, 34 + 2 * ib)
            ls = 2 * ((qh >> 12) & 7) + 1
            delta = -1 if qh & 0x8000 else 1
            lsum = 0
            for l in range(4):
                g = np.int64(b[2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)
                for j in range(8):
                    lsum += np.int64(q8[o8 + 32 * ib + 8 * l + j]) * np.int64(grid_v[g, j])
            sumi += ls * lsum
            sumi1 += ls * delta * (np.int64(bsums8[16 * i + 2 * ib]) + np.int64(bsums8[16 * i + 2 * ib + 1]))
        sumf += fp16_to_fp32(get_u16(b, 0)) * d8[i] * (F32(sumi) + IQ1S_DELTA * F32(sumi1))
    return sumf


@njit(cache=True, error_model="numpy")
def _vec_dot_iq1_m(w, d8, q8, bsums8, grid_v, ksigns):
    """ggml_vec_dot_iq1_m_q8_K_generic: one weight row `w` against one Q8_K row (d8 (nb,),
    q8 (cols,) int8, bsums8 (nb*16,)), integer sums per sub-block, float per block."""
    sumf = F32(0.0)
    for i in range(d8.shape[0]):
        b = w[i * IQ1_M_SIZE:(i + 1) * IQ1_M_SIZE]
        o8 = i * QK_K
        sc0 = get_u16(b, 48)
        sc1 = get_u16(b, 50)
        sc2 = get_u16(b, 52)
        sc3 = get_u16(b, 54)
        u16 = (sc0 >> 12) | ((sc1 >> 8) & 0x00F0) | ((sc2 >> 4) & 0x0F00) | (sc3 & 0xF000)
        sumi1 = 0
        sumi2 = 0
        for ib in range(8):
            sum1_0 = 0
            sum1_1 = 0
            sum2_0 = 0
            sum2_1 = 0
            for l in range(4):
                qh = np.int64(b[32 + 2 * ib + l // 2])
                g = np.int64(b[4 * ib + l]) | ((qh << (8 - 4 * (l % 2))) & 0x700)
                delta = -1 if qh & (0x08 if l % 2 == 0 else 0x80) else 1
                lsum1 = 0
                lsum2 = 0
                for j in range(8):
                    v = np.int64(q8[o8 + 32 * ib + 8 * l + j])
                    lsum1 += v * np.int64(grid_v[g, j])
                    lsum2 += v
                if l < 2:
                    sum1_0 += lsum1
                    sum2_0 += lsum2 * delta
                else:
                    sum1_1 += lsum1
                    sum2_1 += lsum2 * delta
            sc = get_u16(b, 48 + 2 * (ib // 2))
            ls1 = 2 * ((sc >> (6 * (ib % 2))) & 0x7) + 1
            ls2 = 2 * ((sc >> (6 * (ib % 2) + 3)) & 0x7) + 1
            sumi1 += sum1_0 * ls1 + sum1_1 * ls2
            sumi2 += sum2_0 * ls1 + sum2_1 * ls2
        sumf += fp16_to_fp32(u16) * d8[i] * (F32(sumi1) + IQ1M_DELTA * F32(sumi2))
    return sumf


# --- row drivers and registration -----------------------------------------------------------------
# One driver per operation for the whole family; `type_id` (a GGMLType id) picks the block kernel.
IQ1_S_ID = int(GGMLType.IQ1_S)
IQ1_M_ID = int(GGMLType.IQ1_M)


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_rows(type_id, data, cols, grid_v, ksigns):
    ts = IQ1_S_SIZE if type_id == IQ1_S_ID else IQ1_M_SIZE
    out = np.empty((data.shape[0], cols), dtype=np.float32)
    for r in prange(data.shape[0]):
        for i in range(cols // QK_K):
            block, y = data[r, i * ts:(i + 1) * ts], out[r, i * QK_K:(i + 1) * QK_K]
            if type_id == IQ1_S_ID:
                _dq_iq1_s(block, y, grid_v, ksigns)
            else:
                _dq_iq1_m(block, y, grid_v, ksigns)
    return out


@njit(cache=True, parallel=True)
def _quantize_rows(type_id, x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        if type_id == IQ1_S_ID:
            _q_iq1_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)
        else:
            _q_iq1_m_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)


@njit(cache=True, parallel=True)
def _matvec_rows(type_id, w, d8, qs8, bsums8, grid_v, ksigns, out):
    # out[t, r] = dot(weight row r, activation row t); each weight row owned by one thread
    for r in prange(w.shape[0]):
        for t in range(d8.shape[0]):
            if type_id == IQ1_S_ID:
                out[t, r] = _vec_dot_iq1_s(w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)
            else:
                out[t, r] = _vec_dot_iq1_m(w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)


for _name in ('IQ1_S', 'IQ1_M'):
    register_iq(_name, dequantize_rows=_dequantize_rows, quantize_rows=_quantize_rows, matvec_rows=_matvec_rows)
