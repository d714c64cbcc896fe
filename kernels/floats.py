"""Float types F32, F16 and BF16: conversions exactly as ggml rounds them.

F16 is ggml_compute_fp32_to_fp16 (IEEE round-to-nearest-even, NaN -> 0x7E00 with its sign), BF16
is ggml_compute_fp32_to_bf16 (round-to-nearest-even on the bits, NaNs forced quiet), the
reference paths `ggml_quantize_chunk` takes. Dot products use ggml's vec_dot_type (the type
itself): activations are rounded to the type, then multiplied in float64 by NumPy.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numeric import F32, f32_bits, f32_from_bits, fp32_to_bf16_bits, fp32_to_fp16
from ._registry import register


# --- F16 -----------------------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_f16(x, out):
    """ggml_fp32_to_fp16_row: one GGML_FP32_TO_FP16 per value."""
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[r, j] = fp32_to_fp16(x[r, j])


_U32 = np.uint32


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_f16(h, out):
    """ggml_fp16_to_fp32_row: ggml_compute_fp16_to_fp32's bit arithmetic, which (unlike a table
    lookup) the loop vectorizer turns into SIMD; `out` is the uint32 view of the float32 result.
    numba widens uint32 arithmetic to 64 bits, so every step is cast back to uint32 (the
    32-bit wrap of `w + w` is part of the algorithm, and 32-bit lanes vectorize twice as wide)."""
    for r in prange(h.shape[0]):
        for j in range(h.shape[1]):
            w = _U32(_U32(h[r, j]) << _U32(16))
            sign = _U32(w & _U32(0x80000000))
            two_w = _U32(w + w)
            normalized = f32_from_bits(_U32(_U32(two_w >> _U32(4)) + _U32(0xE0 << 23))) * F32(2.0 ** -112)
            denormalized = f32_from_bits(_U32(_U32(two_w >> _U32(17)) | _U32(126 << 23))) - F32(0.5)
            nb = _U32(f32_bits(normalized))
            db = _U32(f32_bits(denormalized))
            out[r, j] = _U32(sign | (db if two_w < _U32(1 << 27) else nb))


def quantize_f16(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.uint16)
    _quantize_f16(x, out)
    return out.view(np.uint8)


def dequantize_f16(data: np.ndarray, cols: int) -> np.ndarray:
    out = np.empty((data.shape[0], cols), dtype=np.uint32)
    _dequantize_f16(np.ascontiguousarray(data).view(np.uint16), out)
    return out.view(np.float32)


# --- BF16 ----------------------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_bf16(u, out):
    """ggml_fp32_to_bf16_row_ref: ggml_compute_fp32_to_bf16 per value."""
    for r in prange(u.shape[0]):
        for j in range(u.shape[1]):
            out[r, j] = fp32_to_bf16_bits(np.int64(u[r, j]))


@njit(cache=True, parallel=True, error_model="numpy")
def _dequantize_bf16(h, out):
    """ggml_bf16_to_fp32_row: the bits shifted into the top half of a float32."""
    for r in prange(h.shape[0]):
        for j in range(h.shape[1]):
            out[r, j] = np.uint32(h[r, j]) << np.uint32(16)


def quantize_bf16(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.uint16)
    _quantize_bf16(x.view(np.uint32), out)
    return out.view(np.uint8)


def dequantize_bf16(data: np.ndarray, cols: int) -> np.ndarray:
    out = np.empty((data.shape[0], cols), dtype=np.uint32)
    _dequantize_bf16(np.ascontiguousarray(data).view(np.uint16), out)
    return out.view(np.float32)


# --- F32 -----------------------------------------------------------------------------------

def quantize_f32(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).copy().view(np.uint8)


def dequantize_f32(data: np.ndarray, cols: int) -> np.ndarray:
    return np.ascontiguousarray(data).view(np.float32).reshape(data.shape[0], cols).copy()


# --- dot products ---------------------------------------------------------------------------

def _matvec_via(quantize, dequantize):
    def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """ggml_vec_dot_{f16,bf16,f32}: activations rounded to the weight type, float64 sums."""
        cols = x.shape[1]
        xq = dequantize(quantize(x), cols).astype(np.float64)
        return (xq @ dequantize(w, cols).astype(np.float64).T).astype(np.float32)
    return matvec


register("F32", quantize=quantize_f32, dequantize=dequantize_f32,
         matvec=_matvec_via(quantize_f32, dequantize_f32), vec_dot_type="F32")
register("F16", quantize=quantize_f16, dequantize=dequantize_f16,
         matvec=_matvec_via(quantize_f16, dequantize_f16), vec_dot_type="F16")
register("BF16", quantize=quantize_bf16, dequantize=dequantize_bf16,
         matvec=_matvec_via(quantize_bf16, dequantize_bf16), vec_dot_type="BF16")
