"""Activation rounding: float32 values rounded to a storage type and back, as ggml-cpu stores them.

ggml's CPU backend converts a matmul's float32 input to the weight type's vec_dot_type
(`from_float`) before the dot products: f16 for F16 weights, Q8_0 blocks for the legacy quants,
Q8_K for the K-quants. `round_activations` returns those values dequantized again, so a float32
product over them equals ggml's quantized one up to summation order. `round_to_storage` rounds
in place to a KV-cache type ("f16", "bf16", "f32").

Kernels are serial, GIL-free numba functions over rows; the wrappers take an optional `rows`
callable `rows(n, fn)` that runs `fn(a, b)` over row ranges a..b of 0..n (on worker threads or
inline), so the caller owns the threading and results do not depend on how rows are split.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from llmtk.ggufio.constants import GGML_TYPE_TRAITS, QK_K, GGMLType

F32 = np.float32
QK8_0 = GGML_TYPE_TRAITS[GGMLType.Q8_0].block_size  # also Q8_1's

# rows(n, fn): runs fn(a, b) over row ranges a..b covering 0..n
RowSplitter = Callable[[int, Callable[[int, int], object]], object]


def _inline(n: int, fn: Callable[[int, int], object]) -> None:
    fn(0, n)


@intrinsic
def _through_half(typingctx, x):
    """float32 -> IEEE binary16 (nearest even, as F16C's vcvtps2ph in ggml_cpu_fp32_to_fp16)
    -> float32: LLVM's fptrunc/fpext, which vectorise to the CPU's conversion instructions
    (NumPy's astype(float16) converts in software, 20x slower)."""
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def codegen(context, builder, signature, args):
            return builder.fpext(builder.fptrunc(args[0], ir.HalfType()), ir.FloatType())
        return types.float32(x), codegen
    return None


@njit(cache=True, nogil=True)
def _round_half(x, out):
    # flat contiguous arrays, so that LLVM vectorises the conversions
    for i in range(x.size):
        out[i] = _through_half(x[i])


def _round_half_into(x: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
    """out = x rounded through binary16; contiguous blocks of the last two axes go to the kernel."""
    if x.flags.c_contiguous and out.flags.c_contiguous:
        _round_half(x.reshape(-1), out.reshape(-1))
    elif x.ndim == 3 and all(x[i].flags.c_contiguous and out[i].flags.c_contiguous for i in range(x.shape[0])):
        for i in range(x.shape[0]):
            _round_half(x[i].reshape(-1), out[i].reshape(-1))
    else:
        np.copyto(out, x.astype(np.float16))


_RINT_MAGIC = F32(12582912.0)  # 1.5 * 2^23: (v + M) - M rounds |v| < 2^22 half to even in float32


@njit(cache=True, nogil=True)
def _block_amax(xr, bs, amax):
    # max |x| of each bs-wide block of the row xr, into amax (a loop LLVM vectorises)
    for b in range(amax.size):
        o = b * bs
        m = np.float32(0.0)
        for j in range(bs):
            v = abs(xr[o + j])
            m = v if v > m else m
        amax[b] = m


@njit(cache=True, nogil=True)
def q8_0_scales(xr, inv, d):
    """The scales of ggml-cpu's x86 quantize_row_q8_0 / _q8_1 (AVX/AVX2, what llama.cpp runs on
    x86) for one row: per block of 32, d = fp16(amax / 127) is stored but the values are scaled
    by 127 / amax (not 1 / d), into `inv` and `d` (nb,). Block maxima first, then the scales:
    one fused loop does not vectorise."""
    _block_amax(xr, QK8_0, inv)
    for b in range(inv.size):
        amax = inv[b]
        d[b] = _through_half(amax / np.float32(127.0))
        inv[b] = np.float32(127.0) / amax if amax != np.float32(0.0) else np.float32(0.0)


@njit(cache=True, nogil=True)
def q8_K_iscale(xr, o, amax):
    """quantize_row_q8_K_ref's iscale for the block of 256 at o with largest magnitude amax > 0:
    -127 / (the first value of that magnitude); d = 1 / iscale, q = min(127, nearest(iscale * x))."""
    j = 0
    while abs(xr[o + j]) != amax:
        j += 1
    return np.float32(-127.0) / xr[o + j]


@njit(cache=True, nogil=True)
def _round_q8_0(x, out):
    # quantize_row_q8_0 (q8_0_scales), the values rounded half to even as _mm256_round_ps does,
    # then dequantized
    rows, cols = x.shape
    nb = cols // QK8_0
    inv = np.empty(nb, dtype=np.float32)
    dhs = np.empty(nb, dtype=np.float32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        q8_0_scales(xr, inv, dhs)
        for b in range(nb):
            o = b * QK8_0
            id_ = inv[b]
            dh = dhs[b]
            for j in range(QK8_0):
                orow[o + j] = ((xr[o + j] * id_ + _RINT_MAGIC) - _RINT_MAGIC) * dh


@njit(cache=True, nogil=True)
def _round_q8_K(x, out):
    # quantize_row_q8_K_ref (q8_K_iscale), then dequantize: min(127, nearest_int(x * iscale)) * (1 / iscale)
    rows, cols = x.shape
    nb = cols // QK_K
    amax = np.empty(nb, dtype=np.float32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        _block_amax(xr, QK_K, amax)
        for b in range(nb):
            o = b * QK_K
            if amax[b] == 0:
                for j in range(QK_K):
                    orow[o + j] = 0.0
                continue
            iscale = q8_K_iscale(xr, o, amax[b])
            d = np.float32(1.0) / iscale
            for j in range(QK_K):
                q = (iscale * xr[o + j] + _RINT_MAGIC) - _RINT_MAGIC
                orow[o + j] = (q if q < np.float32(127.0) else np.float32(127.0)) * d


def round_to_storage(a: npt.NDArray[np.float32], dtype: str) -> None:
    """Round float32 `a` (any shape, may be a strided view) in place to "f16" (IEEE half,
    nearest even), "bf16" (ggml's fp32_to_bf16: nearest even, NaN kept quiet) or leave it ("f32")."""
    if dtype == "f16":
        _round_half_into(a, a)
    elif dtype == "bf16":
        from . import kernel_for  # the BF16 kernels themselves: no finiteness check, NaN kept

        k = kernel_for(GGMLType.BF16)
        cols = a.shape[-1]
        a[...] = k.dequantize(k.quantize(np.ascontiguousarray(a, dtype=F32).reshape(-1, cols), None),
                              cols).reshape(a.shape)
    elif dtype != "f32":
        raise ValueError(f"unknown storage type {dtype!r}")


def round_activations(x: npt.NDArray[np.float32], vdt: GGMLType,
                      rows: RowSplitter | None = None) -> npt.NDArray[np.float32]:
    """x (n, cols) float32 as ggml's CPU backend feeds it to a matmul: converted to the weight
    type's vec_dot_type `vdt` (`from_float`) and back, e.g. Q8_0 blocks for Q8_0/Q5_0 weights,
    Q8_K for K-quants, f16 for F16. Returns `x` itself for F32 (or a width the type's blocks do
    not divide), else a new (n, cols) float32 array. `rows(n, fn)` splits the rows (default inline).
    """
    if vdt == GGMLType.F32 or x.shape[-1] % GGML_TYPE_TRAITS[vdt].block_size:
        return x
    rows = _inline if rows is None else rows
    if vdt == GGMLType.F16:
        xc = np.ascontiguousarray(x, dtype=F32)
        out = np.empty(x.shape, dtype=F32)
        rows(xc.shape[0], lambda a, b: _round_half_into(xc[a:b], out[a:b]))
        return out
    if vdt in (GGMLType.Q8_0, GGMLType.Q8_1, GGMLType.Q8_K):
        xc = np.ascontiguousarray(x, dtype=F32)
        out = np.empty_like(xc)
        kernel = _round_q8_K if vdt == GGMLType.Q8_K else _round_q8_0
        rows(xc.shape[0], lambda a, b: kernel(xc[a:b], out[a:b]))
        return out
    from . import dequantize, quantize

    return dequantize(quantize(x, vdt), vdt, x.shape)
