"""Fast K-quant x Q8_K matvec that reproduces ggml's `ggml_vec_dot_qN_K_q8_K_generic` bit for bit.

Q3_K..Q6_K: each weight row is unpacked once (signed quants, per-16 scales and mins, fp16
d/dmin as float32) and then dotted with every activation row. The integer sums may be formed in
any order; the float steps follow the generic C exactly: Q3_K and Q6_K keep 8 float lanes (lane l
holds the values at positions = l mod 8) and sum them at the end; Q4_K and Q5_K do the same and
subtract `dmin*sumi` per block on the way. `kquants.vec_dot_*` are the one-row transcriptions
this is tested against. Q2_K (no lanes: `dall*isum - dmin*summs` per block) runs its one-row
dot straight from the bytes, which is faster than unpacking.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from llmtk.ggufio.constants import QK_K
from llmtk.kernels._kquant_quantize import Q2_K, Q3_K, Q4_K, Q5_K, _b, _i8, _q3_K_scale, get_scale_min_k4
from llmtk.kernels._numeric import get_f16


@njit(cache=True, error_model="numpy", inline="always")
def _unpack_row(qtype, w, a, sc, mn, dx, dmx):
    # w: one weight row; a (cols,) int8 quants with their offsets applied; sc, mn (nb*16,)
    # int64 scale and min multiplier of each 16 values; dx, dmx (nb,) fp16 d and dmin
    for i in range(dx.size):
        k = i * QK_K
        g = i * 16
        if qtype == Q3_K:
            o = i * 110
            dx[i] = get_f16(w, o + 108)
            for j in range(16):
                sc[g + j] = _q3_K_scale(w, o + 96, j)
                mn[g + j] = 0
            for n in range(2):
                for p in range(4):
                    for l in range(32):
                        q = (_b(w, o + 32 + 32 * n + l) >> (2 * p)) & 3
                        a[k + 128 * n + 32 * p + l] = q - (0 if (_b(w, o + l) >> (4 * n + p)) & 1 else 4)
        elif qtype == Q4_K or qtype == Q5_K:
            o = i * (144 if qtype == Q4_K else 176)
            qs = o + (16 if qtype == Q4_K else 48)
            dx[i] = get_f16(w, o)
            dmx[i] = get_f16(w, o + 2)
            for j in range(8):
                s, m = get_scale_min_k4(j, w, o + 4)
                sc[g + 2 * j] = s
                sc[g + 2 * j + 1] = s
                mn[g + 2 * j] = m
                mn[g + 2 * j + 1] = m
                for l in range(32):
                    v = (_b(w, qs + 32 * (j // 2) + l) >> (4 * (j % 2))) & 0xF
                    if qtype == Q5_K:
                        v += 16 if (_b(w, o + 16 + l) >> j) & 1 else 0
                    a[k + 32 * j + l] = v
        else:  # Q6_K
            o = i * 210
            dx[i] = get_f16(w, o + 208)
            for j in range(16):
                sc[g + j] = _i8(_b(w, o + 192 + j))
                mn[g + j] = 0
            for n in range(2):
                for l in range(32):
                    h = _b(w, o + 128 + 32 * n + l)
                    lo = _b(w, o + 64 * n + l)
                    hi = _b(w, o + 64 * n + 32 + l)
                    a[k + 128 * n + l] = ((lo & 0xF) | ((h & 3) << 4)) - 32
                    a[k + 128 * n + 32 + l] = ((hi & 0xF) | (((h >> 2) & 3) << 4)) - 32
                    a[k + 128 * n + 64 + l] = ((lo >> 4) | (((h >> 4) & 3) << 4)) - 32
                    a[k + 128 * n + 96 + l] = ((hi >> 4) | (((h >> 6) & 3) << 4)) - 32


@njit(cache=True, error_model="numpy", inline="always")
def _dot_unpacked(qtype, a, sc, mn, dx, dmx, d8, qs8, bsums8):
    sumf = np.float32(0.0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
    for i in range(dx.size):
        k = i * QK_K
        g = i * 16
        summs = 0
        if qtype == Q4_K or qtype == Q5_K:
            for j in range(16):
                summs += np.int64(bsums8[g + j]) * mn[g + j]
        # eight independent integer lanes (position mod 8), kept in scalars so LLVM can pack them
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0
        for q in range(32):
            s = sc[g + q // 2]
            b = k + 8 * q
            a0 += s * (np.int64(qs8[b]) * np.int64(a[b]))
            a1 += s * (np.int64(qs8[b + 1]) * np.int64(a[b + 1]))
            a2 += s * (np.int64(qs8[b + 2]) * np.int64(a[b + 2]))
            a3 += s * (np.int64(qs8[b + 3]) * np.int64(a[b + 3]))
            a4 += s * (np.int64(qs8[b + 4]) * np.int64(a[b + 4]))
            a5 += s * (np.int64(qs8[b + 5]) * np.int64(a[b + 5]))
            a6 += s * (np.int64(qs8[b + 6]) * np.int64(a[b + 6]))
            a7 += s * (np.int64(qs8[b + 7]) * np.int64(a[b + 7]))
        d = dx[i] * d8[i]
        s0 += d * np.float32(a0)
        s1 += d * np.float32(a1)
        s2 += d * np.float32(a2)
        s3 += d * np.float32(a3)
        s4 += d * np.float32(a4)
        s5 += d * np.float32(a5)
        s6 += d * np.float32(a6)
        s7 += d * np.float32(a7)
        if qtype == Q4_K or qtype == Q5_K:
            dmin = dmx[i] * d8[i]
            sumf -= dmin * np.float32(summs)
    sumf += s0
    sumf += s1
    sumf += s2
    sumf += s3
    sumf += s4
    sumf += s5
    sumf += s6
    sumf += s7
    return sumf


@njit(cache=True, error_model="numpy")
def vec_dot_q2_K_q8_K(x, d8, qs8, bsums8):
    """ggml `ggml_vec_dot_q2_K_q8_K_generic`: one Q2_K row against one Q8_K row."""
    sumf = np.float32(0.0)
    for i in range(d8.size):
        o = i * 84
        summs = 0
        for j in range(16):
            summs += np.int64(bsums8[i * 16 + j]) * (_b(x, o + j) >> 4)
        dall = d8[i] * get_f16(x, o + 80)
        dmin = d8[i] * get_f16(x, o + 82)
        isum = 0
        is_ = 0
        q8 = i * QK_K
        for k in range(QK_K // 128):
            q2 = o + 16 + 32 * k
            for shift in range(0, 8, 2):
                for half in range(2):
                    d = _b(x, o + is_) & 0xF
                    is_ += 1
                    isuml = 0
                    for l in range(16 * half, 16 * half + 16):
                        isuml += np.int64(qs8[q8 + l]) * ((_b(x, q2 + l) >> shift) & 3)
                    isum += d * isuml
                q8 += 32
        sumf += dall * np.float32(isum) - dmin * np.float32(summs)
    return sumf


@njit(cache=True, error_model="numpy", parallel=True)
def matvec_rows(w, d8, qs8, bsums8, out, qtype):
    """out[t, r] = ggml_vec_dot_<qtype>_q8_K(weight row r, Q8_K activation row t).

    w (rows, row_bytes) uint8; d8 (n, nb) f32, qs8 (n, cols) int8, bsums8 (n, nb*16) int16 as
    returned by `kquants.quantize_q8_K`; out (n, rows) f32. One weight row per thread.
    """
    nb = d8.shape[1]
    if qtype == Q2_K:
        # ggml's Q2_K dot needs no lanes and runs fastest straight from the bytes
        for r in prange(w.shape[0]):
            for t in range(d8.shape[0]):
                out[t, r] = vec_dot_q2_K_q8_K(w[r], d8[t], qs8[t], bsums8[t])
        return
    for r in prange(w.shape[0]):
        a = np.empty(nb * QK_K, dtype=np.int8)
        sc = np.empty(nb * 16, dtype=np.int64)
        mn = np.empty(nb * 16, dtype=np.int64)
        dx = np.empty(nb, dtype=np.float32)
        dmx = np.zeros(nb, dtype=np.float32)
        _unpack_row(qtype, w[r], a, sc, mn, dx, dmx)
        for t in range(d8.shape[0]):
            out[t, r] = _dot_unpacked(qtype, a, sc, mn, dx, dmx, d8[t], qs8[t], bsums8[t])
