"""Grid-based i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, bit-exact with ggml.

Quantizers follow `quantize_row_<type>_impl` in ggml-quants.c: per group of 8 (or 4) values a
lattice point is searched on the type's grid (`_iq_grids`), with ggml's neighbour tables for the
points off the grid. Arithmetic is float32 in the C order (ints converted to float32 first),
no fastmath, no FMA. Dequantizers follow `dequantize_row_<type>`; dot products against Q8_K
activations follow `ggml_vec_dot_<type>_q8_K_generic`.

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

import numpy as np
from numba import njit, prange

from ._iq_grids import KSIGNS, grid
from ._kquant_search import make_qp_quants
from ._numeric import F32, fp16_to_fp32, fp32_to_fp16, get_u16, nearest_int, put_u16
from ._registry import register
from llmtk.constants import GGMLType, type_traits

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


_KIND = {"IQ2_XXS": 0, "IQ2_XS": 1, "IQ2_S": 2, "IQ3_XXS": 3, "IQ3_S": 4, "IQ1_S": 5, "IQ1_M": 6}


def _dequantizer(name: str):
    kind, ts = _KIND[name], _TS[name]

    def dequantize(data: np.ndarray, cols: int) -> np.ndarray:
        g = grid(name).values
        gv = g.astype(np.int16)  # uint8 and int8 grids share one compiled signature
        return _dequantize_rows(kind, np.ascontiguousarray(data), cols, ts, gv, KSIGNS)

    dequantize.__doc__ = f"dequantize_row_{name.lower()}: (rows, row_bytes) uint8 -> (rows, cols) float32."
    return dequantize


for _name in _KIND:
    register(GGMLType[_name], dequantize=_dequantizer(_name))
