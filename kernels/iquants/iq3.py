"""IQ3_XXS, IQ3_S: 3-bit grid i-quants (4 values per lattice point), bit-exact with ggml.

Quantizers follow `quantize_row_iq3_{xxs,s}_impl`, dequantizers `dequantize_row_iq3_*`, dot
products `ggml_vec_dot_iq3_*_q8_K_generic` (see `kernels/iquants/__init__.py`). Byte layouts
(ggml-common.h), per super-block of 256 values:
  IQ3_XXS  d:2 qs:64 scales_and_signs:32 (8 x u32 signs 4x7 bits | scale<<28)
  IQ3_S    d:2 qs:64 qh:8 signs:32 scales:4
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._common import (_imatrix_weights, _max_of, _pack_u, _refit_off_grid, _scale_code, _scale_trials, _signed,
                      _split_signs, _sum_sq, _vmax, register_iq)
from .._numeric import F32, fp16_to_fp32, fp32_to_fp16, get_u16, get_u32, put_u16, put_u32
from llmtk.ggufio.constants import QK_K, GGMLType, type_traits

GROUP_MAX_EPS_IQ3_XXS = F32(1e-8)
IQ3_XXS_SIZE = type_traits("IQ3_XXS").type_size
IQ3_S_SIZE = type_traits("IQ3_S").type_size


# --- dequantization (dequantize_row_*), one block of 256 values into y[0:256] --------------------

@njit(cache=True, error_model="numpy")
def _dq_iq3_xxs(b, y, grid_v, ksigns):
    """dequantize_row_iq3_xxs, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib32 in range(8):
        aux32 = get_u32(b, 2 + 64 + 4 * ib32)
        db = d * (F32(0.5) + F32(aux32 >> 28)) * F32(0.5)
        for l in range(4):
            signs = ksigns[(aux32 >> (7 * l)) & 127]
            g1 = np.int64(b[2 + 8 * ib32 + 2 * l])
            g2 = np.int64(b[2 + 8 * ib32 + 2 * l + 1])
            o = 32 * ib32 + 8 * l
            for j in range(4):
                y[o + j] = _signed(db * F32(grid_v[g1, j]), (signs >> j) & 1)
                y[o + j + 4] = _signed(db * F32(grid_v[g2, j]), (signs >> (j + 4)) & 1)


@njit(cache=True, error_model="numpy")
def _dq_iq3_s(b, y, grid_v, ksigns):
    """dequantize_row_iq3_s, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib32 in range(8):
        sc = np.int64(b[106 + ib32 // 2])
        db = d * F32(1 + 2 * ((sc >> (4 * (ib32 % 2))) & 0xF))
        qh = np.int64(b[66 + ib32])
        for l in range(4):
            g1 = np.int64(b[2 + 8 * ib32 + 2 * l]) | ((qh << (8 - 2 * l)) & 256)
            g2 = np.int64(b[2 + 8 * ib32 + 2 * l + 1]) | ((qh << (7 - 2 * l)) & 256)
            signs = np.int64(b[74 + 4 * ib32 + l])
            o = 32 * ib32 + 8 * l
            for j in range(4):
                y[o + j] = _signed(db * F32(grid_v[g1, j]), (signs >> j) & 1)
                y[o + j + 4] = _signed(db * F32(grid_v[g2, j]), (signs >> (j + 4)) & 1)



# --- quantization (quantize_row_*_impl), one row --------------------------------------------------

@njit(cache=True, error_model="numpy")
def _q_iq3_xxs_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    """quantize_row_iq3_xxs_impl(256, ...) for one row."""
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    kMaxQ = 8
    nbl = x.shape[0] // QK_K
    scales = np.zeros(8, dtype=np.float32)
    weight = np.zeros(32, dtype=np.float32)
    xval = np.zeros(32, dtype=np.float32)
    waux = np.zeros(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int8)
    Laux = np.zeros(32, dtype=np.int8)
    is_on_grid = np.zeros(8, dtype=np.bool_)
    is_on_grid_aux = np.zeros(8, dtype=np.bool_)
    block_signs = np.zeros(4, dtype=np.int64)
    q3 = np.zeros(96, dtype=np.uint8)  # qs:64 scales_and_signs:32
    for ibl in range(nbl):
        yo = ibl * 98
        put_u16(y, yo, 0)
        q3[:] = 0
        max_scale = F32(0.0)
        xo = QK_K * ibl
        sigma2 = F32(2.0) * _sum_sq(x, xo) / F32(QK_K)
        for ib in range(8):
            xb = xo + 32 * ib
            if has_qw:
                _imatrix_weights(x, xb, qw, sigma2, weight, 32)
            else:
                for i in range(32):
                    weight[i] = x[xb + i] * x[xb + i]
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            for k in range(4):
                block_signs[k] = _split_signs(x, xb, weight, xval, k, True) & 127
            vmax = _max_of(xval, 32)
            L[:] = 0
            if vmax < GROUP_MAX_EPS_IQ3_XXS:
                scales[ib] = F32(0.0)
                continue
            is_on_grid[:] = True
            scale = _scale_trials(xval, weight, waux, Laux, L, is_on_grid, is_on_grid_aux, vmax / F32(2 * kMaxQ - 1),
                                  vmax, F32(0.2), -15, 15, kMaxQ, 4, 32, kmap, neigh, levels, tabs, d2, prod)
            if not is_on_grid.all() and scale > F32(0.0):
                scale = _refit_off_grid(xval, weight, waux, L, is_on_grid, True, scale, kMaxQ, 4, 32, kmap, neigh,
                                        levels, tabs, d2, prod)
            if scale < F32(0.0):
                scale = -scale
                for k in range(4):
                    block_signs[k] = (~block_signs[k]) & 127
            for k in range(8):
                gi = kmap[_pack_u(L, 4 * k, 4, 3)]
                q3[8 * ib + k] = gi
            put_u32(q3, 64 + 4 * ib, block_signs[0] | (block_signs[1] << 7) | (block_signs[2] << 14)
                     | (block_signs[3] << 21))
            scales[ib] = scale
            max_scale = _vmax(max_scale, scale)
        if max_scale == F32(0.0):
            y[yo + 2:yo + 98] = 0
            continue
        d = max_scale / F32(31.0)
        put_u16(y, yo, fp32_to_fp16(d * F32(1.0125)))
        id_ = F32(1.0) / d
        for ib in range(8):
            v = get_u32(q3, 64 + 4 * ib) | (_scale_code(id_, scales[ib], 15) << 28)
            put_u32(q3, 64 + 4 * ib, v)
        y[yo + 2:yo + 98] = q3


@njit(cache=True, error_model="numpy")
def _q_iq3_s_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    """quantize_row_iq3_s_impl(32, ...) for one row (block_iq3_s, 110 bytes)."""
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    kMaxQ = 8
    block_size = 32
    bs4 = 8
    bs8 = 4
    nbl = x.shape[0] // QK_K
    scales = np.zeros(8, dtype=np.float32)
    weight = np.zeros(32, dtype=np.float32)
    xval = np.zeros(32, dtype=np.float32)
    waux = np.zeros(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int8)
    Laux = np.zeros(32, dtype=np.int8)
    is_on_grid = np.zeros(8, dtype=np.bool_)
    is_on_grid_aux = np.zeros(8, dtype=np.bool_)
    block_signs = np.zeros(4, dtype=np.int64)
    for ibl in range(nbl):
        yo = ibl * 110
        y[yo:yo + 110] = 0
        qs = yo + 2
        qh = yo + 66
        signs = yo + 74
        max_scale = F32(0.0)
        xo = QK_K * ibl
        sigma2 = F32(2.0) * _sum_sq(x, xo) / F32(QK_K)
        for ib in range(8):
            xb = xo + block_size * ib
            if has_qw:
                _imatrix_weights(x, xb, qw, sigma2, weight, block_size)
            else:
                for i in range(block_size):
                    weight[i] = x[xb + i] * x[xb + i]
            for i in range(block_size):
                waux[i] = np.sqrt(weight[i])
            for k in range(bs8):
                block_signs[k] = _split_signs(x, xb, weight, xval, k, False)
            vmax = _max_of(xval, block_size)
            L[:] = 0
            if vmax == F32(0.0):
                # ggml `continue`s before advancing its qs/signs pointers: later sub-blocks of
                # this super-block are written one slot earlier, as here
                scales[ib] = F32(0.0)
                continue
            is_on_grid[:] = False
            scale = _scale_trials(xval, weight, waux, Laux, L, is_on_grid, is_on_grid_aux, vmax / F32(2 * kMaxQ - 1),
                                  vmax, F32(0.2), -9, 9, kMaxQ, 4, block_size, kmap, neigh, levels, tabs, d2, prod)
            if not is_on_grid.all() and scale > F32(0.0):
                # all groups, on the grid or not (ggml's skip is commented out)
                scale = _refit_off_grid(xval, weight, waux, L, is_on_grid, False, scale, kMaxQ, 4, block_size, kmap,
                                        neigh, levels, tabs, d2, prod)
            if scale < F32(0.0):
                scale = -scale
                for k in range(bs8):
                    block_signs[k] = (~block_signs[k]) & 255
            for k in range(bs4):
                gi = kmap[_pack_u(L, 4 * k, 4, 3)]
                y[qs + k] = gi & 255
                p = ib * bs4 + k
                y[qh + p // 8] |= (gi >> 8) << (p % 8)
            qs += bs4
            for k in range(bs8):
                y[signs + k] = block_signs[k]
            signs += bs8
            scales[ib] = scale
            max_scale = _vmax(max_scale, scale)
        if max_scale == F32(0.0):
            continue
        d = max_scale / F32(31.0)
        put_u16(y, yo, fp32_to_fp16(d * F32(1.033)))
        id_ = F32(1.0) / d
        for ib in range(0, 8, 2):
            y[yo + 106 + ib // 2] = _scale_code(id_, scales[ib], 15) | (_scale_code(id_, scales[ib + 1], 15) << 4)


# --- dot products against Q8_K activations ----------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _vec_dot_iq3_xxs(w, d8, q8, bsums8, grid_v, ksigns):
    """ggml_vec_dot_iq3_xxs_q8_K_generic: one weight row `w` against one Q8_K row (d8 (nb,),
    q8 (cols,) int8): integer sums per sub-block, float per block, in the C order."""
    sumf = F32(0.0)
    for i in range(d8.shape[0]):
        b = w[i * IQ3_XXS_SIZE:(i + 1) * IQ3_XXS_SIZE]
        d = fp16_to_fp32(get_u16(b, 0)) * d8[i]
        bsum = 0
        for ib32 in range(8):
            oq = i * QK_K + 32 * ib32
            aux32 = get_u32(b, 66 + 4 * ib32)
            ls = 2 * (aux32 >> 28) + 1
            sumi = 0
            for l in range(4):
                g1 = np.int64(b[2 + 8 * ib32 + 2 * l])
                g2 = np.int64(b[2 + 8 * ib32 + 2 * l + 1])
                signs = np.int64(ksigns[(aux32 >> (7 * l)) & 127])
                for j in range(4):
                    sumi += _signed(np.int64(grid_v[g1, j]) * np.int64(q8[oq + 8 * l + j]), (signs >> j) & 1)
                    sumi += _signed(np.int64(grid_v[g2, j]) * np.int64(q8[oq + 8 * l + j + 4]), (signs >> (j + 4)) & 1)
            bsum += sumi * ls
        sumf += d * F32(bsum)
    return F32(0.25) * sumf


@njit(cache=True, error_model="numpy")
def _vec_dot_iq3_s(w, d8, q8, bsums8, grid_v, ksigns):
    """ggml_vec_dot_iq3_s_q8_K_generic: one weight row `w` against one Q8_K row (d8 (nb,),
    q8 (cols,) int8): integer sums per sub-block, float per block, in the C order."""
    sumf = F32(0.0)
    for i in range(d8.shape[0]):
        b = w[i * IQ3_S_SIZE:(i + 1) * IQ3_S_SIZE]
        d = fp16_to_fp32(get_u16(b, 0)) * d8[i]
        bsum = 0
        for ib32 in range(8):
            oq = i * QK_K + 32 * ib32
            sc = np.int64(b[106 + ib32 // 2])
            ls = 2 * ((sc >> (4 * (ib32 % 2))) & 0xF) + 1
            qh = np.int64(b[66 + ib32])
            sumi = 0
            for l in range(4):
                g1 = np.int64(b[2 + 8 * ib32 + 2 * l]) | ((qh << (8 - 2 * l)) & 256)
                g2 = np.int64(b[2 + 8 * ib32 + 2 * l + 1]) | ((qh << (7 - 2 * l)) & 256)
                signs = np.int64(b[74 + 4 * ib32 + l])
                for j in range(4):
                    sumi += _signed(np.int64(grid_v[g1, j]) * np.int64(q8[oq + 8 * l + j]), (signs >> j) & 1)
                    sumi += _signed(np.int64(grid_v[g2, j]) * np.int64(q8[oq + 8 * l + j + 4]), (signs >> (j + 4)) & 1)
            bsum += sumi * ls
        sumf += d * F32(bsum)
    return sumf


# --- row drivers and registration -----------------------------------------------------------------
# One driver per operation for the whole family; `type_id` (a GGMLType id) picks the block kernel.
IQ3_XXS_ID = int(GGMLType.IQ3_XXS)
IQ3_S_ID = int(GGMLType.IQ3_S)


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_rows(type_id, data, cols, grid_v, ksigns):
    ts = IQ3_XXS_SIZE if type_id == IQ3_XXS_ID else IQ3_S_SIZE
    out = np.empty((data.shape[0], cols), dtype=np.float32)
    for r in prange(data.shape[0]):
        for i in range(cols // QK_K):
            block, y = data[r, i * ts:(i + 1) * ts], out[r, i * QK_K:(i + 1) * QK_K]
            if type_id == IQ3_XXS_ID:
                _dq_iq3_xxs(block, y, grid_v, ksigns)
            else:
                _dq_iq3_s(block, y, grid_v, ksigns)
    return out


@njit(cache=True, parallel=True)
def _quantize_rows(type_id, x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        if type_id == IQ3_XXS_ID:
            _q_iq3_xxs_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)
        else:
            _q_iq3_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)


@njit(cache=True, parallel=True)
def _matvec_rows(type_id, w, d8, qs8, bsums8, grid_v, ksigns, out):
    # out[t, r] = dot(weight row r, activation row t); each weight row owned by one thread
    for r in prange(w.shape[0]):
        for t in range(d8.shape[0]):
            if type_id == IQ3_XXS_ID:
                out[t, r] = _vec_dot_iq3_xxs(w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)
            else:
                out[t, r] = _vec_dot_iq3_s(w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)


for _name in ('IQ3_XXS', 'IQ3_S'):
    register_iq(_name, dequantize_rows=_dequantize_rows, quantize_rows=_quantize_rows, matvec_rows=_matvec_rows)
