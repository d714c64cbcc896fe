"""Grid-based i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, bit-exact with ggml.

Quantizers follow `quantize_row_<type>_impl` in ggml-quants.c: per group of 8 (or 4) values a
lattice point is searched on the type's grid (`_iq_grids`), with ggml's neighbour tables for the
points off the grid. Arithmetic is float32 in the C order (ints converted to float32 first),
no fastmath, no FMA. Dequantizers follow `dequantize_row_<type>`; dot products against Q8_K
activations follow `ggml_vec_dot_<type>_q8_K_generic`.

Speed without changing a single float: ggml's hot loops are latency-bound scalar chains, so
the work is regrouped where C's order allows it. A neighbour list is scored in SIMD lanes (one
point per lane, its sum over coordinates in C's order); the per-value level rounding of a scale
trial is one vector loop; IQ1's split-point search computes the terms that depend on one split
only once, fills each row of candidates in a vector pass and scans them in C's order only when
one can beat the best so far; its stable sort is a rank count.

Byte layouts (ggml-common.h), per super-block of 256 values:
  IQ2_XXS  d:2 qs:64 (8 x [4 grid bytes, u32 signs 4x7 bits | scale<<28])
  IQ2_XS   d:2 qs:64 (32 x u16 grid 9 bits | signs<<9) scales:8
  IQ2_S    d:2 qs:32 signs:32 qh:8 scales:8
  IQ3_XXS  d:2 qs:64 scales_and_signs:32 (8 x u32 signs 4x7 bits | scale<<28)
  IQ3_S    d:2 qs:64 qh:8 signs:32 scales:4
  IQ1_S    d:2 qs:32 qh:16 (8 x u16 grid high 3x3 bits | scale<<12 | delta sign<<15)
  IQ1_M    qs:32 qh:16 scales:8 (4 x u16: 3-bit scales, the fp16 d spread over the top nibbles)
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange

from ._iq_grids import KSIGNS, grid, grid_values
from ._kquant_search import make_qp_quants
from ._numeric import F32, fp16_to_fp32, fp32_to_fp16, get_u16, nearest_int, put_u16
from ._registry import register
from llmtk.ggufio.constants import GGMLType, type_traits

QK_K = 256
IQ1S_DELTA = F32(0.125)
IQ1M_DELTA = F32(0.125)
GROUP_MAX_EPS = F32(1e-15)
GROUP_MAX_EPS_IQ3_XXS = F32(1e-8)
GROUP_MAX_EPS_IQ2_S = F32(1e-8)
GROUP_MAX_EPS_IQ1_M = F32(1e-7)
GROUP_MAX_EPS_IQ1_S = F32(1e-12)
FLT_MAX = F32(3.4028234663852886e38)

_TS = {t: type_traits(t).type_size for t in ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S",
                                             "IQ1_S", "IQ1_M")}


@njit(cache=True, inline="always")
def _get_u32(b, off):
    return (np.int64(b[off]) | (np.int64(b[off + 1]) << 8) | (np.int64(b[off + 2]) << 16)
            | (np.int64(b[off + 3]) << 24))


@njit(cache=True, inline="always")
def _put_u32(y, off, v):
    y[off] = v & 0xFF
    y[off + 1] = (v >> 8) & 0xFF
    y[off + 2] = (v >> 16) & 0xFF
    y[off + 3] = (v >> 24) & 0xFF


@njit(cache=True, inline="always")
def _signed(v, negative):
    # C: v * (cond ? -1.f : 1.f); multiplying by -1 only flips the sign
    return -v if negative else v


# ---------------------------------------------------------------------------------------------
# dequantization (dequantize_row_*), one block of 256 values into y[0:256]
# ---------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _dq_iq2_xxs(b, y, grid_v, ksigns):
    """dequantize_row_iq2_xxs, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib32 in range(8):
        o = 2 + 8 * ib32
        aux1 = _get_u32(b, o + 4)
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
def _dq_iq2_s(b, y, grid_v):
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


@njit(cache=True, error_model="numpy")
def _dq_iq3_xxs(b, y, grid_v, ksigns):
    """dequantize_row_iq3_xxs, one block."""
    d = fp16_to_fp32(get_u16(b, 0))
    for ib32 in range(8):
        aux32 = _get_u32(b, 2 + 64 + 4 * ib32)
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
def _dq_iq3_s(b, y, grid_v):
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


@njit(cache=True, error_model="numpy")
def _dq_iq1_s(b, y, grid_v):
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
def _dq_iq1_m(b, y, grid_v):
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
            delta = -IQ1S_DELTA if neg else IQ1S_DELTA
            dl = dl1 if l < 2 else dl2
            for j in range(8):
                y[32 * ib + 8 * l + j] = dl * (F32(grid_v[g, j]) + delta)


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_rows(kind, data, cols, ts, grid_v, ksigns):
    rows = data.shape[0]
    out = np.empty((rows, cols), dtype=np.float32)
    nb = cols // QK_K
    for r in prange(rows):
        for i in range(nb):
            b = data[r, i * ts:(i + 1) * ts]
            y = out[r, i * QK_K:(i + 1) * QK_K]
            if kind == 0:
                _dq_iq2_xxs(b, y, grid_v, ksigns)
            elif kind == 1:
                _dq_iq2_xs(b, y, grid_v, ksigns)
            elif kind == 2:
                _dq_iq2_s(b, y, grid_v)
            elif kind == 3:
                _dq_iq3_xxs(b, y, grid_v, ksigns)
            elif kind == 4:
                _dq_iq3_s(b, y, grid_v)
            elif kind == 5:
                _dq_iq1_s(b, y, grid_v)
            else:
                _dq_iq1_m(b, y, grid_v)
    return out


# ---------------------------------------------------------------------------------------------
# quantization helpers
# ---------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _vmax(a, b):
    return a if a > b else b  # C's MAX(a, b)


# The neighbour searches score every point of a list at once: the list's coordinates are stored
# coordinate-major (`_iq_grids`), the loop runs over points, and LLVM turns it into SIMD lanes.
# Each lane still sums its coordinates in C's order, so every distance is ggml's float. Indices
# are unsigned so that numba emits no negative-index wraparound, which blocks vectorization.

@njit(cache=True, inline="always")
def _list_dist8(tab, base, cp, q0, scale, xv, xo, w, wo, d2):
    """d2[j] = sum_i w[wo+i] * (scale*(tab[base + i*cp + j] + q0) - xv[xo+i])^2 for j < cp."""
    x0, x1, x2, x3 = xv[xo], xv[xo + 1], xv[xo + 2], xv[xo + 3]
    x4, x5, x6, x7 = xv[xo + 4], xv[xo + 5], xv[xo + 6], xv[xo + 7]
    w0, w1, w2, w3 = w[wo], w[wo + 1], w[wo + 2], w[wo + 3]
    w4, w5, w6, w7 = w[wo + 4], w[wo + 5], w[wo + 6], w[wo + 7]
    ub = np.uint64(base)
    ucp = np.uint64(cp)
    for j in range(cp):
        o = ub + np.uint64(j)
        diff = scale * (tab[o] + q0) - x0
        acc = F32(0.0) + w0 * diff * diff
        diff = scale * (tab[o + ucp] + q0) - x1
        acc += w1 * diff * diff
        diff = scale * (tab[o + np.uint64(2) * ucp] + q0) - x2
        acc += w2 * diff * diff
        diff = scale * (tab[o + np.uint64(3) * ucp] + q0) - x3
        acc += w3 * diff * diff
        diff = scale * (tab[o + np.uint64(4) * ucp] + q0) - x4
        acc += w4 * diff * diff
        diff = scale * (tab[o + np.uint64(5) * ucp] + q0) - x5
        acc += w5 * diff * diff
        diff = scale * (tab[o + np.uint64(6) * ucp] + q0) - x6
        acc += w6 * diff * diff
        diff = scale * (tab[o + np.uint64(7) * ucp] + q0) - x7
        acc += w7 * diff * diff
        d2[np.uint64(j)] = acc


@njit(cache=True, inline="always")
def _list_dist4(tab, base, cp, q0, scale, xv, xo, w, wo, d2):
    """_list_dist8 for 4 coordinates (the IQ3 grids)."""
    x0, x1, x2, x3 = xv[xo], xv[xo + 1], xv[xo + 2], xv[xo + 3]
    w0, w1, w2, w3 = w[wo], w[wo + 1], w[wo + 2], w[wo + 3]
    ub = np.uint64(base)
    ucp = np.uint64(cp)
    for j in range(cp):
        o = ub + np.uint64(j)
        diff = scale * (tab[o] + q0) - x0
        acc = F32(0.0) + w0 * diff * diff
        diff = scale * (tab[o + ucp] + q0) - x1
        acc += w1 * diff * diff
        diff = scale * (tab[o + np.uint64(2) * ucp] + q0) - x2
        acc += w2 * diff * diff
        diff = scale * (tab[o + np.uint64(3) * ucp] + q0) - x3
        acc += w3 * diff * diff
        d2[np.uint64(j)] = acc


@njit(cache=True, inline="always")
def _argmin_first(d2, n):
    # C's `if (d2 < best_d2)` scan from FLT_MAX: first smallest, -1 if none is below FLT_MAX
    best_d2 = FLT_MAX
    jbest = -1
    for j in range(n):
        if d2[j] < best_d2:
            best_d2 = d2[j]
            jbest = j
    return jbest


@njit(cache=True, inline="always")
def _find_best_neighbour(neigh, u_entry, levels, tabs, xval, xo, waux, scale, L, dim, pad, d2):
    """iq2_find_best_neighbour / iq3_find_best_neighbour: the listed neighbour of an off-grid
    point with the smallest weighted distance to xval[xo:xo+dim]; writes its levels into L."""
    nq, qoff = tabs
    off = -u_entry - 1
    n = np.int64(neigh[off])
    cp = (n + pad - 1) // pad * pad
    if dim == 8:
        _list_dist8(nq, qoff[off], cp, F32(0.0), scale, xval, xo, waux, xo, d2)
    else:
        _list_dist4(nq, qoff[off], cp, F32(0.0), scale, xval, xo, waux, xo, d2)
    grid_index = np.int64(neigh[off + 1 + _argmin_first(d2, n)])
    for i in range(dim):
        L[xo + i] = levels[grid_index, i]
    return grid_index


@njit(cache=True, inline="always")
def _split_signs(x, xo, weight, xval, k, parity):
    """|x| into xval for the 8 values of group k, their sign bits returned; with `parity` the
    sign of the least important value is given up so the count of flipped signs is even."""
    nflip = 0
    s = 0
    for i in range(8):
        v = x[xo + 8 * k + i]
        if v >= F32(0.0):
            xval[8 * k + i] = v
        else:
            xval[8 * k + i] = -v
            nflip += 1
            s |= 1 << i
    if parity and nflip % 2 == 1:
        imin = 0
        v0 = x[xo + 8 * k]
        vmin = weight[8 * k] * v0 * v0
        for i in range(1, 8):
            v = x[xo + 8 * k + i]
            ax = weight[8 * k + i] * v * v
            if ax < vmin:
                vmin = ax
                imin = i
        xval[8 * k + imin] = -xval[8 * k + imin]
        s ^= 1 << imin
    return s


@njit(cache=True, inline="always")
def _sum_sq(x, xo):
    sumx2 = F32(0.0)
    for i in range(QK_K):
        sumx2 += x[xo + i] * x[xo + i]
    return sumx2


@njit(cache=True, inline="always")
def _sumqx_q2(weight, xval, L, n, prod):
    # C's sums of w*x*q and w*q*q over q = 2l+1: the products in one SIMD pass, then the two
    # sums added strictly in order (the same floats, without C's serial multiply latency)
    for i in range(n):
        w = weight[i]
        q = F32(2 * L[i] + 1)
        prod[0, i] = w * xval[i] * q
        prod[1, i] = w * q * q
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for i in range(n):
        sumqx += prod[0, i]
        sumq2 += prod[1, i]
    return sumqx, sumq2


@njit(cache=True, inline="always")
def _round_levels(xval, id_, kMaxQ, Laux, n):
    # C's per-value nearest_int(0.5f*(id*xval-1)) clamped to [0, kMaxQ-1], as one SIMD loop
    for i in range(n):
        l = nearest_int(F32(0.5) * (id_ * xval[i] - F32(1.0)))
        Laux[i] = max(0, min(kMaxQ - 1, l))


@njit(cache=True, inline="always")
def _pack_u(L, o, dim, bits):
    u = 0
    for i in range(dim):
        u |= np.int64(L[o + i]) << (bits * i)
    return u


# ---------------------------------------------------------------------------------------------
# IQ3_XXS, IQ3_S
# ---------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _q_iq3_xxs_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    """quantize_row_iq3_xxs_impl(256, ...) for one row."""
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
                for i in range(32):
                    weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
            else:
                for i in range(32):
                    weight[i] = x[xb + i] * x[xb + i]
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            for k in range(4):
                block_signs[k] = _split_signs(x, xb, weight, xval, k, True) & 127
            vmax = xval[0]
            for i in range(1, 32):
                vmax = _vmax(vmax, xval[i])
            L[:] = 0
            if vmax < GROUP_MAX_EPS_IQ3_XXS:
                scales[ib] = F32(0.0)
                continue
            best = F32(0.0)
            scale = vmax / F32(2 * kMaxQ - 1)
            is_on_grid[:] = True
            for is_ in range(-15, 16):
                id_ = (F32(2 * kMaxQ - 1) + F32(is_) * F32(0.2)) / vmax
                this_scale = F32(1.0) / id_
                _round_levels(xval, id_, kMaxQ, Laux, 8 * 4)
                for k in range(8):
                    u = _pack_u(Laux, 4 * k, 4, 3)
                    gi = kmap[u]
                    is_on_grid_aux[k] = True
                    if gi < 0:
                        is_on_grid_aux[k] = False
                        _find_best_neighbour(neigh, gi, levels, tabs, xval, 4 * k, waux, this_scale, Laux, 4, 8, d2)
                sumqx, sumq2 = _sumqx_q2(weight, xval, Laux, 32, prod)
                if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    L[:] = Laux
                    is_on_grid[:] = is_on_grid_aux
            n_not_ongrid = 0
            for k in range(8):
                if not is_on_grid[k]:
                    n_not_ongrid += 1
            if n_not_ongrid > 0 and scale > F32(0.0):
                id_ = F32(1.0) / scale
                for k in range(8):
                    if is_on_grid[k]:
                        continue
                    u = 0
                    for i in range(4):
                        l = nearest_int(F32(0.5) * (id_ * xval[4 * k + i] - F32(1.0)))
                        l = max(0, min(kMaxQ - 1, l))
                        u |= l << (3 * i)
                    gi = kmap[u]
                    if gi < 0:
                        gi = _find_best_neighbour(neigh, gi, levels, tabs, xval, 4 * k, waux, scale, L, 4, 8, d2)
                    for i in range(4):
                        L[4 * k + i] = levels[gi, i]
                sumqx, sumq2 = _sumqx_q2(weight, xval, L, 32, prod)
                if sumq2 > F32(0.0):
                    scale = sumqx / sumq2
            if scale < F32(0.0):
                scale = -scale
                for k in range(4):
                    block_signs[k] = (~block_signs[k]) & 127
            for k in range(8):
                gi = kmap[_pack_u(L, 4 * k, 4, 3)]
                q3[8 * ib + k] = gi
            _put_u32(q3, 64 + 4 * ib, block_signs[0] | (block_signs[1] << 7) | (block_signs[2] << 14)
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
            l = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
            l = max(0, min(15, l))
            v = _get_u32(q3, 64 + 4 * ib) | (l << 28)
            _put_u32(q3, 64 + 4 * ib, v)
        y[yo + 2:yo + 98] = q3


@njit(cache=True, error_model="numpy")
def _q_iq3_s_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    """quantize_row_iq3_s_impl(32, ...) for one row (block_iq3_s, 110 bytes)."""
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
                for i in range(block_size):
                    weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
            else:
                for i in range(block_size):
                    weight[i] = x[xb + i] * x[xb + i]
            for i in range(block_size):
                waux[i] = np.sqrt(weight[i])
            for k in range(bs8):
                block_signs[k] = _split_signs(x, xb, weight, xval, k, False)
            vmax = xval[0]
            for i in range(1, block_size):
                vmax = _vmax(vmax, xval[i])
            L[:] = 0
            if vmax == F32(0.0):
                # ggml `continue`s before advancing its qs/signs pointers: later sub-blocks of
                # this super-block are written one slot earlier, as here
                scales[ib] = F32(0.0)
                continue
            best = F32(0.0)
            scale = vmax / F32(2 * kMaxQ - 1)
            is_on_grid[:] = False
            for is_ in range(-9, 10):
                id_ = (F32(2 * kMaxQ - 1) + F32(is_) * F32(0.2)) / vmax
                this_scale = F32(1.0) / id_
                _round_levels(xval, id_, kMaxQ, Laux, bs4 * 4)
                for k in range(bs4):
                    u = _pack_u(Laux, 4 * k, 4, 3)
                    gi = kmap[u]
                    is_on_grid_aux[k] = True
                    if gi < 0:
                        is_on_grid_aux[k] = False
                        _find_best_neighbour(neigh, gi, levels, tabs, xval, 4 * k, waux, this_scale, Laux, 4, 8, d2)
                sumqx, sumq2 = _sumqx_q2(weight, xval, Laux, block_size, prod)
                if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    L[:] = Laux
                    is_on_grid[:] = is_on_grid_aux
            n_not_ongrid = 0
            for k in range(bs4):
                if not is_on_grid[k]:
                    n_not_ongrid += 1
            if n_not_ongrid > 0 and scale > F32(0.0):
                id_ = F32(1.0) / scale
                for k in range(bs4):  # all groups, on the grid or not (ggml's skip is commented out)
                    u = 0
                    for i in range(4):
                        l = nearest_int(F32(0.5) * (id_ * xval[4 * k + i] - F32(1.0)))
                        l = max(0, min(kMaxQ - 1, l))
                        u |= l << (3 * i)
                    gi = kmap[u]
                    if gi < 0:
                        gi = _find_best_neighbour(neigh, gi, levels, tabs, xval, 4 * k, waux, scale, L, 4, 8, d2)
                    for i in range(4):
                        L[4 * k + i] = levels[gi, i]
                sumqx, sumq2 = _sumqx_q2(weight, xval, L, block_size, prod)
                if sumq2 > F32(0.0):
                    scale = sumqx / sumq2
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
            l1 = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
            l1 = max(0, min(15, l1))
            l2 = nearest_int(F32(0.5) * (id_ * scales[ib + 1] - F32(1.0)))
            l2 = max(0, min(15, l2))
            y[yo + 106 + ib // 2] = l1 | (l2 << 4)


# ---------------------------------------------------------------------------------------------
# IQ2_XXS, IQ2_XS, IQ2_S
# ---------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _q_iq2_xxs_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list):
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    """quantize_row_iq2_xxs_impl for one row (imatrix required)."""
    kMaxQ = 3
    nbl = x.shape[0] // QK_K
    scales = np.zeros(8, dtype=np.float32)
    weight = np.zeros(32, dtype=np.float32)
    xval = np.zeros(32, dtype=np.float32)
    waux = np.zeros(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int8)
    Lqp = np.zeros(32, dtype=np.uint8)
    Laux = np.zeros(32, dtype=np.int8)
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
            for i in range(32):
                weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            for k in range(4):
                block_signs[k] = _split_signs(x, xb, weight, xval, k, True) & 127
            vmax = xval[0]
            for i in range(1, 32):
                vmax = _vmax(vmax, xval[i])
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
            best = F32(0.0)
            for is_ in range(-6, 7):
                id_ = (F32(2 * kMaxQ - 1) + F32(is_) * F32(0.1)) / eff_max
                this_scale = F32(1.0) / id_
                _round_levels(xval, id_, kMaxQ, Laux, 4 * 8)
                for k in range(4):
                    gi = kmap[_pack_u(Laux, 8 * k, 8, 2)]
                    if gi < 0:
                        _find_best_neighbour(neigh, gi, levels, tabs, xval, 8 * k, waux, this_scale, Laux, 8, 16, d2)
                sumqx, sumq2 = _sumqx_q2(weight, xval, Laux, 32, prod)
                if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    L[:] = Laux
            if scale > F32(0.0):
                id_ = F32(1.0) / scale
                for k in range(4):
                    u = 0
                    for i in range(8):
                        l = nearest_int(F32(0.5) * (id_ * xval[8 * k + i] - F32(1.0)))
                        l = max(0, min(kMaxQ - 1, l))
                        u |= l << (2 * i)
                    gi = kmap[u]
                    if gi < 0:
                        gi = _find_best_neighbour(neigh, gi, levels, tabs, xval, 8 * k, waux, scale, L, 8, 16, d2)
                    for i in range(8):
                        L[8 * k + i] = levels[gi, i]
                sumqx, sumq2 = _sumqx_q2(weight, xval, L, 32, prod)
                if sumq2 > F32(0.0):
                    scale = sumqx / sumq2
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
            l = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
            l = max(0, min(15, l))
            q2[2 * ib + 1] |= l << 28
        for w in range(16):
            _put_u32(y, yo + 2 + 4 * w, q2[w])


@njit(cache=True, error_model="numpy")
def _q_iq2_xs_s_row(x, qw, has_qw, y, levels, kmap, neigh, tabs, max_list, is_s):
    d2 = np.zeros(max_list, dtype=np.float32)
    prod = np.zeros((2, 32), dtype=np.float32)
    """quantize_row_iq2_xs_impl (is_s False, imatrix required) and quantize_row_iq2_s_impl
    (is_s True): 16 sub-blocks of 16, the same search with ggml's small differences."""
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
                for i in range(16):
                    weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
            else:
                for i in range(16):
                    weight[i] = F32(0.25) * sigma2 + x[xb + i] * x[xb + i]
            for i in range(16):
                waux[i] = np.sqrt(weight[i])
            for k in range(2):
                s = _split_signs(x, xb, weight, xval, k, not is_s)
                block_signs[k] = s if is_s else s & 127
            vmax = xval[0]
            for i in range(1, 16):
                vmax = _vmax(vmax, xval[i])
            L[:] = 0
            if vmax < eps:
                scales[ib] = F32(0.0)
                continue
            best = F32(0.0)
            scale = vmax / F32(2 * kMaxQ - 1)
            is_on_grid[0] = True
            is_on_grid[1] = True
            for is_ in range(-9, 10):
                id_ = (F32(2 * kMaxQ - 1) + F32(is_) * F32(0.1)) / vmax
                this_scale = F32(1.0) / id_
                _round_levels(xval, id_, kMaxQ, Laux, 2 * 8)
                for k in range(2):
                    gi = kmap[_pack_u(Laux, 8 * k, 8, 2)]
                    is_on_grid_aux[k] = True
                    if gi < 0:
                        is_on_grid_aux[k] = False
                        _find_best_neighbour(neigh, gi, levels, tabs, xval, 8 * k, waux, this_scale, Laux, 8, 16, d2)
                sumqx, sumq2 = _sumqx_q2(weight, xval, Laux, 16, prod)
                if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    L[:] = Laux
                    is_on_grid[:] = is_on_grid_aux
            n_not_ongrid = 0
            for k in range(2):
                if not is_on_grid[k]:
                    n_not_ongrid += 1
            if n_not_ongrid > 0 and scale > F32(0.0):
                id_ = F32(1.0) / scale
                for k in range(2):
                    if is_on_grid[k]:
                        continue
                    u = 0
                    for i in range(8):
                        l = nearest_int(F32(0.5) * (id_ * xval[8 * k + i] - F32(1.0)))
                        l = max(0, min(kMaxQ - 1, l))
                        u |= l << (2 * i)
                        L[8 * k + i] = l
                    gi = kmap[u]
                    if gi < 0:
                        _find_best_neighbour(neigh, gi, levels, tabs, xval, 8 * k, waux, scale, L, 8, 16, d2)
                sumqx, sumq2 = _sumqx_q2(weight, xval, L, 16, prod)
                if sumq2 > F32(0.0):
                    scale = sumqx / sumq2
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
            l = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
            l = max(0, min(15, l))
            if ib % 2 == 0:
                y[so + ib // 2] = l
            else:
                y[so + ib // 2] |= l << 4


# ---------------------------------------------------------------------------------------------
# IQ1_S, IQ1_M
# ---------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _stable_argsort(x, xo, n, idx):
    """Indices of x[xo:xo+n] in ascending order, equal values (also -0.0 and 0.0) kept in index
    order: what glibc's qsort (a merge sort for arrays this small) gives ggml's iq1_sort_helper.

    Ties broken by index make the order total, so each value's place is its rank: the count of
    smaller values plus equal ones before it (branch-free, vectorizable)."""
    for i in range(n):
        v = x[xo + i]
        r = 0
        for j in range(n):
            r += x[xo + j] < v
        for j in range(i):
            r += x[xo + j] == v
        idx[r] = i


@njit(cache=True, inline="always")
def _find_best_neighbour2(neigh, u_entry, levels, tabs, x, xo, weight, wo, scale, xg, L, lo, d2):
    """iq1_find_best_neighbour2: nearest listed neighbour, distances weighted by `weight`, grid
    levels mapped through the shifted values `xg`; writes its levels into L[lo:lo+8]."""
    nlev, qoff = tabs
    off = -u_entry - 1
    n = np.int64(neigh[off])
    # xg[l] == xg[0] + l exactly for both shifted value sets (-0.875, 0.125, 1.125) and
    # (-1.125, -0.125, 0.875), so the lanes compute C's q = xg[l] from the stored levels
    _list_dist8(nlev, qoff[off], (n + 15) // 16 * 16, xg[0], scale, x, xo, weight, wo, d2)
    best_score = FLT_MAX
    j = _argmin_first(d2, n)
    grid_index = np.int64(neigh[off + 1 + j]) if j >= 0 else -1
    if grid_index < 0:
        # only when every distance is NaN or overflows; ggml then scans the whole grid, reading
        # xval[i] with the grid index i (past the group of 8: further along the input row)
        for gi in range(levels.shape[0]):
            dd = F32(0.0)
            xi = xo + gi
            xv = x[xi] if xi < x.shape[0] else F32(0.0)
            for jj in range(8):
                w = weight[wo + jj]
                q = xg[levels[gi, jj]]
                diff = scale * q - xv
                dd += w * diff * diff
            if dd < best_score:
                best_score = dd
                grid_index = gi
        if grid_index < 0:
            grid_index = 0
    for i in range(8):
        L[lo + i] = levels[grid_index, i]
    return grid_index


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
            for i in range(block_size):
                weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
            vmax = abs(x[xb])
            for i in range(1, block_size):
                vmax = _vmax(vmax, abs(x[xb + i]))
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
            for j in range(besti1):
                L[idx[j]] = 0
            for j in range(besti1, besti2):
                L[idx[j]] = 1
            for j in range(besti2, block_size):
                L[idx[j]] = 2
            if scale < F32(0.0):
                for j in range(block_size):
                    L[j] = 2 - L[j]
                scale = -scale
                best_shift = -best_shift
            all_on_grid = True
            xx = x_p if best_shift == 1 else x_m
            for k in range(4):
                gi = kmap[_pack_u(L, 8 * k, 8, 2)]
                if gi < 0:
                    all_on_grid = False
                    gi = _find_best_neighbour2(neigh, gi, levels, tabs, x, xb + 8 * k, weight, 8 * k, scale, xx, L, 8 * k, d2)
                index[k] = gi
            if not all_on_grid:
                sumqx = F32(0.0)
                sumq2 = F32(0.0)
                for k in range(4):
                    for j in range(8):
                        w = weight[8 * k + j]
                        q = xx[levels[index[k], j]]
                        sumqx += w * q * x[xb + 8 * k + j]
                        sumq2 += w * q * q
                if sumqx > F32(0.0) and sumq2 > F32(0.0):
                    scale = sumqx / sumq2
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
            l = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
            l = max(0, min(7, l))
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
                for i in range(block_size):
                    weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
            else:
                for i in range(block_size):
                    weight[i] = x[xb + i] * x[xb + i]
            vmax = abs(x[xb])
            for i in range(1, block_size):
                vmax = _vmax(vmax, abs(x[xb + i]))
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
            for j in range(besti1):
                L[idx[j]] = 0
            for j in range(besti1, besti2):
                L[idx[j]] = 1
            for j in range(besti2, block_size):
                L[idx[j]] = 2
            if scale < F32(0.0):
                for j in range(block_size):
                    L[j] = 2 - L[j]
                scale = -scale
                best_k = 3 - best_k
            all_on_grid = True
            for k in range(2):
                if k == 0:
                    xx = x_p if best_k < 2 else x_m
                else:
                    xx = x_p if best_k % 2 == 0 else x_m
                gi = kmap[_pack_u(L, 8 * k, 8, 2)]
                if gi < 0:
                    all_on_grid = False
                    gi = _find_best_neighbour2(neigh, gi, levels, tabs, x, xb + 8 * k, weight, 8 * k, scale, xx, L, 8 * k, d2)
                index[k] = gi
            if not all_on_grid:
                sumqx_f = F32(0.0)
                sumq2_f = F32(0.0)
                for k in range(2):
                    if k == 0:
                        xx = x_p if best_k < 2 else x_m
                    else:
                        xx = x_p if best_k % 2 == 0 else x_m
                    for j in range(8):
                        w = weight[8 * k + j]
                        q = xx[levels[index[k], j]]
                        sumqx_f += w * q * x[xb + 8 * k + j]
                        sumq2_f += w * q * q
                if sumqx_f > F32(0.0) and sumq2_f > F32(0.0):
                    scale = sumqx_f / sumq2_f
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
            l = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
            l = max(0, min(7, l))
            sc[ib // 4] |= l << (3 * (ib % 4))
            y[yo + 32 + ib] |= masks[shifts[ib]]
            xb = xo + block_size * ib
            if has_qw:
                for i in range(block_size):
                    weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
            else:
                for i in range(block_size):
                    weight[i] = x[xb + i] * x[xb + i]
            qh = np.int64(y[yo + 32 + ib])
            for k in range(2):
                if k == 0:
                    xx = x_p if shifts[ib] < 2 else x_m
                else:
                    xx = x_p if shifts[ib] % 2 == 0 else x_m
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


# ---------------------------------------------------------------------------------------------
# dot products against Q8_K activations (ggml_vec_dot_<type>_q8_K_generic)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _vec_dot(kind, ts, w, d8, q8, bsums8, grid_v, ksigns):
    """One weight row `w` against one Q8_K row (d8 (nb,), q8 (cols,) int8, bsums8 (nb*16,)):
    integer sums per sub-block, float per block, as the generic C kernels order them."""
    nb = d8.shape[0]
    sumf = F32(0.0)
    for i in range(nb):
        b = w[i * ts:(i + 1) * ts]
        o8 = i * QK_K
        if kind == 5:  # IQ1_S
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
            continue
        if kind == 6:  # IQ1_M
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
            continue
        d = fp16_to_fp32(get_u16(b, 0)) * d8[i]
        bsum = 0
        for ib32 in range(8):
            oq = o8 + 32 * ib32
            if kind == 0:  # IQ2_XXS
                aux1 = _get_u32(b, 2 + 8 * ib32 + 4)
                ls = 2 * (aux1 >> 28) + 1
                sumi = 0
                for l in range(4):
                    g = np.int64(b[2 + 8 * ib32 + l])
                    signs = np.int64(ksigns[(aux1 >> (7 * l)) & 127])
                    for j in range(8):
                        sumi += _signed(np.int64(grid_v[g, j]) * np.int64(q8[oq + 8 * l + j]), (signs >> j) & 1)
                bsum += sumi * ls
            elif kind == 1:  # IQ2_XS
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
            elif kind == 2:  # IQ2_S
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
            elif kind == 3:  # IQ3_XXS
                aux32 = _get_u32(b, 66 + 4 * ib32)
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
            else:  # IQ3_S
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
    if kind == 0 or kind == 1 or kind == 2:
        return F32(0.125) * sumf
    if kind == 3:
        return F32(0.25) * sumf
    return sumf


@njit(cache=True, parallel=True)
def _matvec_rows(kind, ts, w, d8, qs8, bsums8, grid_v, ksigns, out):
    # out[t, r] = dot(weight row r, activation row t); each weight row owned by one thread
    for r in prange(w.shape[0]):
        for t in range(d8.shape[0]):
            out[t, r] = _vec_dot(kind, ts, w[r], d8[t], qs8[t], bsums8[t], grid_v, ksigns)


_KIND = {"IQ2_XXS": 0, "IQ2_XS": 1, "IQ2_S": 2, "IQ3_XXS": 3, "IQ3_S": 4, "IQ1_S": 5, "IQ1_M": 6}


@lru_cache(maxsize=None)
def _grid_values(name: str) -> np.ndarray:
    # int16 so that the uint8 (IQ2/IQ3) and int8 (IQ1) grids share one compiled signature
    return grid_values(name).astype(np.int16)


@lru_cache(maxsize=None)
def _grid_floats(name: str) -> np.ndarray:
    # the same small integers as float32 (exact): C's int-to-float conversion done once
    return grid_values(name).astype(np.float32)


def _dequantizer(name: str):
    kind, ts = _KIND[name], _TS[name]

    def dequantize(data: np.ndarray, cols: int) -> np.ndarray:
        return _dequantize_rows(kind, np.ascontiguousarray(data), cols, ts, _grid_floats(name), KSIGNS)

    dequantize.__doc__ = f"dequantize_row_{name.lower()}: (rows, row_bytes) uint8 -> (rows, cols) float32."
    return dequantize


@njit(cache=True, parallel=True)
def _quantize_iq3_xxs(x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        _q_iq3_xxs_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)


@njit(cache=True, parallel=True)
def _quantize_iq3_s(x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        _q_iq3_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)


@njit(cache=True, parallel=True)
def _quantize_iq2_xxs(x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        _q_iq2_xxs_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)


@njit(cache=True, parallel=True)
def _quantize_iq2_xs(x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        _q_iq2_xs_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list, False)


@njit(cache=True, parallel=True)
def _quantize_iq2_s(x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        _q_iq2_xs_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list, True)


@njit(cache=True, parallel=True)
def _quantize_iq1_s(x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        _q_iq1_s_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)


@njit(cache=True, parallel=True)
def _quantize_iq1_m(x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list):
    for r in prange(x.shape[0]):
        _q_iq1_m_row(x[r], qw, has_qw, out[r], levels, kmap, neigh, tabs, max_list)


_QUANTIZE_ROWS = {"IQ1_S": _quantize_iq1_s, "IQ1_M": _quantize_iq1_m, "IQ2_XXS": _quantize_iq2_xxs, "IQ2_XS": _quantize_iq2_xs, "IQ2_S": _quantize_iq2_s, "IQ3_XXS": _quantize_iq3_xxs, "IQ3_S": _quantize_iq3_s}


def _quantizer(name: str):
    rows_fn, ts = _QUANTIZE_ROWS[name], _TS[name]

    def quantize(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        g = grid(name)
        out = np.empty((x.shape[0], (x.shape[1] // QK_K) * ts), dtype=np.uint8)
        has_qw = imatrix is not None
        qw = np.ascontiguousarray(imatrix, dtype=np.float32) if has_qw else np.zeros(x.shape[1], np.float32)
        rows_fn(np.ascontiguousarray(x, dtype=np.float32), qw, has_qw, out, g.levels, g.kmap, g.neighbours,
                (g.tab, g.qoff), g.max_list)
        return out

    quantize.__doc__ = f"quantize_{name.lower()}: (rows, cols) float32, imatrix (cols,) or None -> uint8."
    return quantize


def _matvec(name: str):
    kind, ts = _KIND[name], _TS[name]

    def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        from .kquants import quantize_q8_K

        d8, qs8, bsums8 = quantize_q8_K(np.ascontiguousarray(x, dtype=np.float32))
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        _matvec_rows(kind, ts, np.ascontiguousarray(w), d8, qs8, bsums8, _grid_values(name), KSIGNS, out)
        return out

    matvec.__doc__ = f"x @ W.T via Q8_K activations and ggml_vec_dot_{name.lower()}_q8_K_generic."
    return matvec


for _name in _KIND:
    register(GGMLType[_name], dequantize=_dequantizer(_name),
             quantize=_quantizer(_name), matvec=_matvec(_name), vec_dot_type="Q8_K")
