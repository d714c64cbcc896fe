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
