"""What the grid i-quants (IQ2_*, IQ3_*, IQ1_*) share: the lattice-point searches over a grid's
neighbour lists, level rounding and bit packing, and the Python wrappers that register a type.

Every kernel is `@njit(cache=True)`, float32 in the C order, no fastmath, no FMA. numba keys its
on-disk cache on a file's mtime and size only: after editing a kernel here, touch `iq1.py`,
`iq2.py`, `iq3.py` (they inline these) or delete `kernels/**/__pycache__/*.nb[ic]`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from numba import njit

from .._iq_grids import KSIGNS, grid, grid_values
from .._numeric import F32, nearest_int
from .._registry import register
from llmtk.ggufio.constants import QK_K, GGMLType, type_traits

FLT_MAX = F32(3.4028234663852886e38)


@njit(cache=True, inline="always")
def _signed(v, negative):
    # C: v * (cond ? -1.f : 1.f); multiplying by -1 only flips the sign
    return -v if negative else v


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


@njit(cache=True, inline="always")
def _imatrix_weights(x, xb, qw, sigma2, weight, n):
    # the importance weights of quantize_row_iq{2,3}_*_impl: qw * sqrt(sigma2 + x^2)
    for i in range(n):
        weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])


@njit(cache=True, inline="always")
def _max_of(v, n):
    vmax = v[0]
    for i in range(1, n):
        vmax = _vmax(vmax, v[i])
    return vmax


@njit(cache=True, inline="always")
def _scale_trials(xval, weight, waux, Laux, L, is_on_grid, is_on_grid_aux, scale, vmax, step, is_lo, is_hi, kMaxQ,
                  dim, n, kmap, neigh, levels, tabs, d2, prod):
    """The scale search of quantize_row_iq2_*/iq3_*_impl over n values in groups of dim (8: IQ2,
    4: IQ3): for each trial id = (2*kMaxQ-1 + is*step)/vmax, is in [is_lo, is_hi], round to levels,
    move off-grid groups to their best neighbour, keep the levels (in L, with is_on_grid) of the
    best least-squares score. Returns the scale, `scale` if no trial scores."""
    bits = 2 if dim == 8 else 3
    best = F32(0.0)
    for is_ in range(is_lo, is_hi + 1):
        id_ = (F32(2 * kMaxQ - 1) + F32(is_) * step) / vmax
        this_scale = F32(1.0) / id_
        _round_levels(xval, id_, kMaxQ, Laux, n)
        for k in range(n // dim):
            gi = kmap[_pack_u(Laux, dim * k, dim, bits)]
            is_on_grid_aux[k] = gi >= 0
            if gi < 0:
                _find_best_neighbour(neigh, gi, levels, tabs, xval, dim * k, waux, this_scale, Laux, dim, 2 * dim, d2)
        sumqx, sumq2 = _sumqx_q2(weight, xval, Laux, n, prod)
        if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            L[:] = Laux
            is_on_grid[:] = is_on_grid_aux
    return scale


@njit(cache=True, inline="always")
def _refit_off_grid(xval, weight, waux, L, is_on_grid, only_off_grid, scale, kMaxQ, dim, n, kmap, neigh, levels, tabs,
                    d2, prod):
    """The "not on grid" fix-up of quantize_row_iq2_*/iq3_*_impl: at the best scale, round each
    group again (with only_off_grid, only those off the grid), move it to its best neighbour if
    still off, then refit the scale by least squares over the n values."""
    bits = 2 if dim == 8 else 3
    id_ = F32(1.0) / scale
    for k in range(n // dim):
        if only_off_grid and is_on_grid[k]:
            continue
        u = 0
        for i in range(dim):
            l = nearest_int(F32(0.5) * (id_ * xval[dim * k + i] - F32(1.0)))
            u |= max(0, min(kMaxQ - 1, l)) << (bits * i)
        gi = kmap[u]
        if gi < 0:
            gi = _find_best_neighbour(neigh, gi, levels, tabs, xval, dim * k, waux, scale, L, dim, 2 * dim, d2)
        for i in range(dim):
            L[dim * k + i] = levels[gi, i]
    sumqx, sumq2 = _sumqx_q2(weight, xval, L, n, prod)
    if sumq2 > F32(0.0):
        scale = sumqx / sumq2
    return scale


@njit(cache=True, inline="always")
def _scale_code(id_, s, nmax):
    # a sub-block scale s as the odd multiple (2l+1) of d = 1/id nearest to it, l in [0, nmax]
    return max(0, min(nmax, nearest_int(F32(0.5) * (id_ * s - F32(1.0)))))




# IQ1_S / IQ1_M: values sorted, split into levels 0, 1, 2, the groups of 8 snapped to the grid

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


@njit(cache=True, inline="always")
def _abs_max(x, xb, n):
    vmax = abs(x[xb])
    for i in range(1, n):
        vmax = _vmax(vmax, abs(x[xb + i]))
    return vmax


@njit(cache=True, inline="always")
def _split_levels(L, idx, i1, i2, n, flip):
    # levels 0, 1, 2 of the sorted values split at i1 <= i2; `flip` (a negative scale) mirrors them
    for j in range(i1):
        L[idx[j]] = 0
    for j in range(i1, i2):
        L[idx[j]] = 1
    for j in range(i2, n):
        L[idx[j]] = 2
    if flip:
        for j in range(n):
            L[j] = 2 - L[j]


@njit(cache=True, inline="always")
def _iq1_snap_to_grid(L, kmap, neigh, levels, tabs, x, xb, weight, scale, xlo, xhi, index, n_groups, d2):
    """Grid index of each group of 8 levels into index[:n_groups], off-grid groups moved to their
    best neighbour (levels mapped through the shifted values xlo in the first half of the groups,
    xhi in the second); if any was off the grid, ggml refits the scale. Returns the scale."""
    all_on_grid = True
    for k in range(n_groups):
        gi = kmap[_pack_u(L, 8 * k, 8, 2)]
        if gi < 0:
            all_on_grid = False
            xx = xlo if 2 * k < n_groups else xhi
            gi = _find_best_neighbour2(neigh, gi, levels, tabs, x, xb + 8 * k, weight, 8 * k, scale, xx, L, 8 * k, d2)
        index[k] = gi
    if not all_on_grid:
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for k in range(n_groups):
            xx = xlo if 2 * k < n_groups else xhi
            for j in range(8):
                w = weight[8 * k + j]
                q = xx[levels[index[k], j]]
                sumqx += w * q * x[xb + 8 * k + j]
                sumq2 += w * q * q
        if sumqx > F32(0.0) and sumq2 > F32(0.0):
            scale = sumqx / sumq2
    return scale


@njit(cache=True, inline="always")
def _iq1_m_shift_values(shift, x_p, x_m):
    # IQ1_M's shift code (0..3) picks x_p or x_m for each half: bit 1 the first, bit 0 the second
    return (x_p if shift < 2 else x_m), (x_p if shift % 2 == 0 else x_m)


# ---------------------------------------------------------------------------------------------
# wrappers: one table row per type (its jitted row drivers), registered with the kernel registry
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _grid_values(name: str) -> np.ndarray:
    # int16 so that the uint8 (IQ2/IQ3) and int8 (IQ1) grids share one compiled signature
    return grid_values(name).astype(np.int16)


@lru_cache(maxsize=None)
def _grid_floats(name: str) -> np.ndarray:
    # the same small integers as float32 (exact): C's int-to-float conversion done once
    return grid_values(name).astype(np.float32)


def register_iq(name: str, *, dequantize_rows: Callable, quantize_rows: Callable, matvec_rows: Callable) -> None:
    """Register one grid i-quant from its family's three jitted row drivers, each taking the type's
    GGMLType id first:

    - `dequantize_rows(id, data, cols, grid_v, ksigns) -> (rows, cols) f32` (dequantize_row_<type>);
    - `quantize_rows(id, x, qw, has_qw, out, levels, kmap, neigh, tabs, max_list)` (quantize_<type>);
    - `matvec_rows(id, w, d8, qs8, bsums8, grid_v, ksigns, out)` (ggml_vec_dot_<type>_q8_K_generic).
    """
    ts = type_traits(name).type_size
    type_id = int(GGMLType[name])

    def dequantize(data: np.ndarray, cols: int) -> np.ndarray:
        return dequantize_rows(type_id, np.ascontiguousarray(data), cols, _grid_floats(name), KSIGNS)

    def quantize(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        g = grid(name)
        out = np.empty((x.shape[0], (x.shape[1] // QK_K) * ts), dtype=np.uint8)
        has_qw = imatrix is not None
        qw = np.ascontiguousarray(imatrix, dtype=np.float32) if has_qw else np.zeros(x.shape[1], np.float32)
        quantize_rows(type_id, np.ascontiguousarray(x, dtype=np.float32), qw, has_qw, out, g.levels, g.kmap, g.neighbours,
                      (g.tab, g.qoff), g.max_list)
        return out

    def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        from ..kquants import quantize_q8_K

        d8, qs8, bsums8 = quantize_q8_K(np.ascontiguousarray(x, dtype=np.float32))
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        matvec_rows(type_id, np.ascontiguousarray(w), d8, qs8, bsums8, _grid_values(name), KSIGNS, out)
        return out

    dequantize.__doc__ = f"dequantize_row_{name.lower()}: (rows, row_bytes) uint8 -> (rows, cols) float32."
    quantize.__doc__ = f"quantize_{name.lower()}: (rows, cols) float32, imatrix (cols,) or None -> uint8."
    matvec.__doc__ = f"x @ W.T via Q8_K activations and ggml_vec_dot_{name.lower()}_q8_K_generic."
    register(GGMLType[name], dequantize=dequantize, quantize=quantize, matvec=matvec, vec_dot_type="Q8_K")
