"""IQ2_XXS, IQ2_XS, IQ2_S: 2-bit grid i-quants (8 values per lattice point), bit-exact with ggml.

Quantizers follow `quantize_row_iq2_{xxs,xs,s}_impl`, dequantizers `dequantize_row_iq2_*`, dot
products `ggml_vec_dot_iq2_*_q8_K_generic` (see `kernels/iquants/__init__.py`). Byte layouts
(ggml-common.h), per super-block of 256 values:
  IQ2_XXS  d:2 qs:64 (8 x [4 grid bytes, u32 signs 4x7 bits | scale<<28])
  IQ2_XS   d:2 qs:64 (32 x u16 grid 9 bits | signs<<9) scales:8
  IQ2_S    d:2 qs:32 signs:32 qh:8 scales:8
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._common import (_imatrix_weights, _max_of, _pack_u, _refit_off_grid, _scale_code, _scale_trials, _signed,
                      _split_signs, _sum_sq, _vmax, register_iq)
from .._numeric import F32, GROUP_MAX_EPS, fp16_to_fp32, fp32_to_fp16, get_u16, get_u32, put_u16, put_u32
from .._search import make_qp_quants
from llmtk.ggufio.constants import QK_K, GGMLType, type_traits

GROUP_MAX_EPS_IQ2_S = F32(1e-8)
IQ2_XXS_SIZE = type_traits("IQ2_XXS").type_size
IQ2_XS_SIZE = type_traits("IQ2_XS").type_size
IQ2_S_SIZE = type_traits("IQ2_S").type_size


# --- dequantization (dequantize_row_*), one block of 256 values into y[0:256] --------------------

@njit(cache=True, error_model="numpy")
def _dq_iq2_xxs(b, y, grid_v, ksigns):
    """dequantize_row_iq2_xxs, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib32 in range(8):
        o = 2 + 8 * ib32
        aux1 = get_u32(b, o + 4)
        db = d * (F32(0.5) + F32(aux1 >> 28)) * F32(0.25)
        for l in range(4):
            g = np.int64(b[o + l])
            signs = ksigns[(aux1 >> (7 * l)) & 127]
            for j in range(8):
                y[32 * ib32 + 8 * l + j] = _signed(db * F32(grid_v[g, j]), (signs >> j) & 1)


@njit(cache=True, error_model="numpy")
def _dq_iq2_xs(b, y, grid_v, ksigns):
    """dequantize_row_iq2_xs, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib32 in range(8):
        sc = np.int64(b[66 + ib32])
        db0 = d * (F32(0.5) + F32(sc & 0xF)) * F32(0.25)
        db1 = d * (F32(0.5) + F32(sc >> 4)) * F32(0.25)
        for l in range(4):
            q = get_u16(b, 2 + 2 * (4 * ib32 + l))
            g = q & 511
            signs = ksigns[q >> 9]
            db = db0 if l < 2 else db1
            for j in range(8):
                y[32 * ib32 + 8 * l + j] = _signed(db * F32(grid_v[g, j]), (signs >> j) & 1)


@njit(cache=True, error_model="numpy")
def _dq_iq2_s(b, y, grid_v, ksigns):
    """dequantize_row_iq2_s, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib32 in range(8):
        sc = np.int64(b[74 + ib32])
        qh = np.int64(b[66 + ib32])
        db0 = d * (F32(0.5) + F32(sc & 0xF)) * F32(0.25)
        db1 = d * (F32(0.5) + F32(sc >> 4)) * F32(0.25)
        for l in range(4):
            dl = db0 if l < 2 else db1
            g = np.int64(b[2 + 4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300)
            signs = np.int64(b[2 + 32 + 4 * ib32 + l])
            for j in range(8):
                y[32 * ib32 + 8 * l + j] = _signed(dl * F32(grid_v[g, j]), (signs >> j) & 1)




# --- quantization (quantize_row_*_impl), one row --------------------------------------------------

@njit(cache=True, error_model="numpy")
def _q_iq2_xxs_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    """quantize_row_iq2_xxs_impl for one row (imatrix required)."""
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    kMaxQ = 3
    nbl = x.shape[0] // QK_K
    scales = np.zeros(8, dtype=np.float32)
    weight = np.zeros(32, dtype=np.float32)
    xval = np.zeros(32, dtype=np.float32)
    waux = np.zeros(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int8)
    Lqp = np.zeros(32, dtype=np.uint8)
    Laux = np.zeros(32, dtype=np.int8)
    is_on_grid = np.zeros(4, dtype=np.bool_)  # kept by the shared search, unused here
    is_on_grid_aux = np.zeros(4, dtype=np.bool_)
    block_signs = np.zeros(4, dtype=np.int64)
    q2 = np.zeros(16, dtype=np.int64)  # uint32 words
    for ibl in range(nbl):
        yo = ibl * 66
        put_u16(y, yo, 0)
        q2[:] = 0
        max_scale = F32(0.0)
        xo = QK_K * ibl
        sigma2 = _sum_sq(x, xo) / F32(QK_K)
        for ib in range(8):
            xb = xo + 32 * ib
            _imatrix_weights(x, xb, qw, sigma2, weight, 32)
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            for k in range(4):
                block_signs[k] = _split_signs(x, xb, weight, xval, k, True) & 127
            vmax = _max_of(xval, 32)
            if vmax < GROUP_MAX_EPS:
                scales[ib] = F32(0.0)
                L[:] = 0
                continue
            scale = make_qp_quants(32, kMaxQ + 1, xval, Lqp, weight)
            eff_max = scale * F32(kMaxQ)
            if eff_max <= F32(0.0):
                scales[ib] = F32(0.0)
                L[:] = 0
                continue
            scale = _scale_trials(xval, weight, waux, Laux, L, is_on_grid, is_on_grid_aux, scale, eff_max, F32(0.1),
                                  -6, 6, kMaxQ, 8, 32, kmap, neigh, levels, tabs, d2, prod)
            if scale > F32(0.0):  # every group again, on the grid or not
                scale = _refit_off_grid(xval, weight, waux, L, is_on_grid, False, scale, kMaxQ, 8, 32, kmap, neigh,
                                        levels, tabs, d2, prod)
            if scale < F32(0.0):
                scale = -scale
                for k in range(4):
                    block_signs[k] = (~block_signs[k]) & 127
            for k in range(4):
                gi = kmap[_pack_u(L, 8 * k, 8, 2)]
                q2[2 * ib] |= gi << (8 * k)
                q2[2 * ib + 1] |= block_signs[k] << (7 * k)
            scales[ib] = scale
            max_scale = _vmax(max_scale, scale)
        if max_scale == F32(0.0):
            y[yo + 2:yo + 66] = 0
            continue
        d = max_scale / F32(31.0)
        put_u16(y, yo, fp32_to_fp16(d))
        id_ = F32(1.0) / d
        for ib in range(8):
            q2[2 * ib + 1] |= _scale_code(id_, scales[ib], 15) << 28
        for w in range(16):
            put_u32(y, yo + 2 + 4 * w, q2[w])


@njit(cache=True, error_model="numpy")
def _q_iq2_xs_s_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list, is_s):
    """quantize_row_iq2_xs_impl (is_s False, imatrix required) and quantize_row_iq2_s_impl
    (is_s True): 16 sub-blocks of 16, the same search with ggml's small differences."""
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    kMaxQ = 3
    ts = 82 if is_s else 74
    nbl = x.shape[0] // QK_K
    scales = np.zeros(16, dtype=np.float32)
    weight = np.zeros(16, dtype=np.float32)
    xval = np.zeros(16, dtype=np.float32)
    waux = np.zeros(16, dtype=np.float32)
    L = np.zeros(16, dtype=np.int8)
    Laux = np.zeros(16, dtype=np.int8)
    is_on_grid = np.zeros(2, dtype=np.bool_)
    is_on_grid_aux = np.zeros(2, dtype=np.bool_)
    block_signs = np.zeros(2, dtype=np.int64)
    eps = GROUP_MAX_EPS_IQ2_S if is_s else GROUP_MAX_EPS
    for ibl in range(nbl):
        yo = ibl * ts
        y[yo:yo + ts] = 0
        max_scale = F32(0.0)
        xo = QK_K * ibl
        sumx2 = _sum_sq(x, xo)
        sigma2 = (F32(2.0) * sumx2 if is_s else sumx2) / F32(QK_K)
        for ib in range(16):
            xb = xo + 16 * ib
            if has_qw:
                _imatrix_weights(x, xb, qw, sigma2, weight, 16)
            else:
                for i in range(16):
                    weight[i] = F32(0.25) * sigma2 + x[xb + i] * x[xb + i]
            for i in range(16):
                waux[i] = np.sqrt(weight[i])
            for k in range(2):
                s = _split_signs(x, xb, weight, xval, k, not is_s)
                block_signs[k] = s if is_s else s & 127
            vmax = _max_of(xval, 16)
            L[:] = 0
            if vmax < eps:
                scales[ib] = F32(0.0)
                continue
            is_on_grid[:] = True
            scale = _scale_trials(xval, weight, waux, Laux, L, is_on_grid, is_on_grid_aux, vmax / F32(2 * kMaxQ - 1),
                                  vmax, F32(0.1), -9, 9, kMaxQ, 8, 16, kmap, neigh, levels, tabs, d2, prod)
            if not is_on_grid.all() and scale > F32(0.0):
                scale = _refit_off_grid(xval, weight, waux, L, is_on_grid, True, scale, kMaxQ, 8, 16, kmap, neigh,
                                        levels, tabs, d2, prod)
            if scale < F32(0.0):
                scale = -scale
                for k in range(2):
                    block_signs[k] = (~block_signs[k]) & (255 if is_s else 127)
            for k in range(2):
                gi = kmap[_pack_u(L, 8 * k, 8, 2)]
                if is_s:
                    i8 = 2 * ib + k
                    y[yo + 2 + i8] = gi & 255
                    y[yo + 66 + i8 // 4] |= (gi >> 8) << (2 * (i8 % 4))
                    y[yo + 2 + 32 + i8] = block_signs[k]
                else:
                    put_u16(y, yo + 2 + 2 * (2 * ib + k), gi | (block_signs[k] << 9))
            scales[ib] = scale
            max_scale = _vmax(max_scale, scale)
        if max_scale == F32(0.0):
            if not is_s:
                y[yo + 2:yo + 66] = 0
            continue
        d = max_scale / F32(31.0)
        put_u16(y, yo, fp32_to_fp16(d * F32(0.9875) if is_s else d))
        id_ = F32(1.0) / d
        so = yo + (74 if is_s else 66)
        for ib in range(16):
            l = _scale_code(id_, scales[ib], 15)
            if ib % 2 == 0:
                y[so + ib // 2] = l
            else:
                y[so + ib // 2] |= l << 4



# --- dot products against Q8_K activations ----------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _vec_dot_iq2_xxs(w, d8, q8, bsums8, grid_v, ksigns):
    """ggml_vec_dot_iq2_xxs_q8_K_generic: one weight row `w` against one Q8_K row (d8 (nb,),
    q8 (cols,) int8): integer sums per sub-block, float per block, in the C order."""
    sumf = F32(0.0)
    for i in range(d8.shape[0]):
        b = w[i * IQ2_XXS_SIZE:(i + 1) * IQ2_XXS_SIZE]
        d = fp16_to_fp32(get_u16(b, 0)) * d8[i]
        bsum = 0
        for ib32 in range(8):
            oq = i * QK_K + 32 * ib32
            aux1 = get_u32(b, 2 + 8 * ib32 + 4)
            ls = 2 * (aux1 >> 28) + 1
            sumi = 0
            for l in range(4):
                g = np.int64(b[2 + 8 * ib32 + l])
                signs = np.int64(ksigns[(aux1 >> (7 * l)) & 127])
                for j in range(8):
                    sumi += _signed(np.int64(grid_v[g, j]) * np.int64(q8[oq + 8 * l + j]), (signs >> j) & 1)
            bsum += sumi * ls
        sumf += d * F32(bsum)
    return F32(0.125) * sumf


@njit(cache=True, error_model="numpy")
def _vec_dot_iq2_xs(w, d8, q8, bsums8, grid_v, ksigns):
    """ggml_vec_dot_iq2_xs_q8_K_generic: one weight row `w` against one Q8_K row (d8 (nb,),
    q8 (cols,) int8): integer sums per sub-block, float per block, in the C order."""
    sumf = F32(0.0)
    for i in range(d8.shape[0]):
        b = w[i * IQ2_XS_SIZE:(i + 1) * IQ2_XS_SIZE]
        d = fp16_to_fp32(get_u16(b, 0)) * d8[i]
        bsum = 0
        for ib32 in range(8):
            oq = i * QK_K + 32 * ib32
            sc = np.int64(b[66 + ib32])
            for h in range(2):
                ls = 2 * ((sc >> (4 * h)) & 0xF) + 1
                sumi = 0
                for l in range(2 * h, 2 * h + 2):
                    q = get_u16(b, 2 + 2 * (4 * ib32 + l))
                    g = q & 511
                    signs = np.int64(ksigns[q >> 9])
                    for j in range(8):
                        sumi += _signed(np.int64(grid_v[g, j]) * np.int64(q8[oq + 8 * l + j]), (signs >> j) & 1)
                bsum += sumi * ls
        sumf += d * F32(bsum)
    return F32(0.125) * sumf


@njit(cache=True, error_model="numpy")
def _vec_dot_iq2_s(w, d8, q8, bsums8, grid_v, ksigns):
    """ggml_vec_dot_iq2_s_q8_K_generic: one weight row `w` against one Q8_K row (d8 (nb,),
    q8 (cols,) int8): integer sums per sub-block, float per block, in the C order."""
    sumf = F32(0.0)
    for i in range(d8.shape[0]):
        b = w[i * IQ2_S_SIZE:(i + 1) * IQ2_S_SIZE]
        d = fp16_to_fp32(get_u16(b, 0)) * d8[i]
        bsum = 0
        for ib32 in range(8):
            oq = i * QK_K + 32 * ib32
            sc = np.int64(b[74 + ib32])
            qh = np.int64(b[66 + ib32])
            sumi1 = 0
            sumi2 = 0
            for l in range(4):
                g = np.int64(b[2 + 4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300)
                signs = np.int64(b[34 + 4 * ib32 + l])
                t = 0
                for j in range(8):
                    t += _signed(np.int64(q8[oq + 8 * l + j]) * np.int64(grid_v[g, j]), (signs >> j) & 1)
                if l < 2:
                    sumi1 += t
                else:
                    sumi2 += t
            bsum += (1 + 2 * (sc & 0xF)) * sumi1 + (1 + 2 * (sc >> 4)) * sumi2
        sumf += d * F32(bsum)
    return F32(0.125) * sumf


# --- row drivers and registration -----------------------------------------------------------------
# One driver per operation for the whole family; `type_id` (a GGMLType id) picks the block kernel.
IQ2_XXS_ID = int(GGMLType.IQ2_XXS)
IQ2_XS_ID = int(GGMLType.IQ2_XS)
IQ2_S_ID = int(GGMLType.IQ2_S)


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_rows(type_id, data, cols, grid_v, ksigns):
    ts = IQ2_XXS_SIZE if type_id == IQ2_XXS_ID else (IQ2_XS_SIZE if type_id == IQ2_XS_ID else IQ2_S_SIZE)
    out = np.empty((data.shape[0], cols), dtype=np.float32)
    for r in prange(data.shape[0]):
        for i in range(cols // QK_K):
            block, y = data[r, i * ts:(i + 1) * ts], out[r, i * QK_K:(i + 1) * QK_K]
            if type_id == IQ2_XXS_ID:
                _dq_iq2_xxs(block, y, grid_v, ksigns)
            elif type_id == IQ2_XS_ID:
                _dq_iq2_xs(block, y, grid_v, ksigns)
            else:
                _dq_iq2_s(block, y, grid_v, ksigns)
    return out


@njit(cache=True, parallel=True)
def _quantize_rows(type_id, x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        if type_id == IQ2_XXS_ID:
            _q_iq2_xxs_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)
        elif type_id == IQ2_XS_ID:
            _q_iq2_xs_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list, False)
        else:
            _q_iq2_xs_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list, True)


@njit(cache=True, parallel=True)
def _matvec_rows(type_id, w, d8, qs8, bsums8, grid_v, ksigns, out):
    # out[t, r] = dot(weight row r, activation row t); each weight row owned by one thread
    for r in prange(w.shape[0]):
        for t in range(d8.shape[0]):
            if type_id == IQ2_XXS_ID:
                out[t, r] = _vec_dot_iq2_xxs(w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)
            elif type_id == IQ2_XS_ID:
                out[t, r] = _vec_dot_iq2_xs(w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)
            else:
                out[t, r] = _vec_dot_iq2_s(w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)


for _name in ('IQ2_XXS', 'IQ2_XS', 'IQ2_S'):
    register_iq(_name, dequantize_rows=_dequantize_rows, quantize_rows=_quantize_rows, matvec_rows=_matvec_rows)
