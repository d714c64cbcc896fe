"""Element-wise transformer ops; the matmuls go to BLAS through NumPy.

The kernels are serial numba functions that release the GIL (or NumPy's SIMD exp/tanh); given
an executor (`Rows`), a batch's rows are split over the model's worker threads, the same
threads that run its single-threaded sgemms and attention tasks, so no other thread pool
(numba's, OpenBLAS's) competes for the cores. Arithmetic is float32 like ggml's CPU ops, with
ggml's float64 accumulation of the RMS-norm sum of squares.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np
import numpy.typing as npt
from numba import njit

if TYPE_CHECKING:
    from concurrent.futures import Executor

F32 = np.float32
SPLIT_MIN_ROWS = 32  # fewer rows than this are not worth handing to other threads


class Rows:
    """Runs fn(a, b) over row ranges a..b of 0..n: on `parts` worker threads, or inline."""

    def __init__(self, pool: "Executor | None" = None, parts: int = 1):
        self.pool, self.parts = pool, parts

    def __call__(self, n: int, fn: Callable[[int, int], object]) -> None:
        if self.pool is None or self.parts <= 1 or n < SPLIT_MIN_ROWS:
            fn(0, n)
            return
        bounds = [n * i // self.parts for i in range(self.parts + 1)]
        for f in [self.pool.submit(fn, a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]:
            f.result()


INLINE = Rows()


@njit(cache=True, nogil=True)
def _rms_norm(x, w, eps, out):
    # ggml_compute_forward_rms_norm_f32: sum of squares in double, scale = 1/sqrtf(mean + eps)
    rows, d = x.shape
    for r in range(rows):
        s = 0.0
        for i in range(d):
            v = np.float64(x[r, i])
            s += v * v
        scale = np.float32(1.0) / np.sqrt(np.float32(s / d) + eps)
        for i in range(d):
            out[r, i] = x[r, i] * scale * w[i]


def rms_norm(x: npt.NDArray[np.float32], w: npt.NDArray[np.float32], eps: float,
             rows: Rows = INLINE) -> npt.NDArray[np.float32]:
    """RMS-normalise the last axis of `x` (..., d) and multiply by `w` (d,)."""
    shape = x.shape
    x2 = np.ascontiguousarray(x, dtype=F32).reshape(-1, shape[-1])
    out = np.empty_like(x2)
    w = np.ascontiguousarray(w, dtype=F32)
    rows(x2.shape[0], lambda a, b: _rms_norm(x2[a:b], w, F32(eps), out[a:b]))
    return out.reshape(shape)


_GELU_C = F32(math.sqrt(2.0 / math.pi))


def glu(act: str, g: npt.NDArray[np.float32], u: npt.NDArray[np.float32],
        rows: Rows = INLINE) -> npt.NDArray[np.float32]:
    """act(g) * u for the gated FFN; `act` is "silu" or "gelu_tanh" (HF gelu_pytorch_tanh).

    g, u: (rows, n_ff) float32, may be views of one fused gate|up product.
    """
    if g.ndim == 2 and g.shape[0] >= SPLIT_MIN_ROWS and rows.parts > 1:
        out = np.empty(g.shape, dtype=F32)

        def part(a: int, b: int) -> None:
            out[a:b] = glu(act, g[a:b], u[a:b])
        rows(g.shape[0], part)
        return out
    if act == "silu":
        t = np.negative(g)
        np.exp(t, out=t)
        t += F32(1.0)
        np.divide(g, t, out=t)
    else:
        t = g * g
        t *= F32(0.044715)
        t += F32(1.0)
        t *= g
        t *= _GELU_C
        np.tanh(t, out=t)
        t += F32(1.0)
        t *= g
        t *= F32(0.5)
    t *= u
    return t


@njit(cache=True, nogil=True)
def _rope_heads(x, cos, sin, n_rot, neox, scale, out):
    # x: (n, n_heads, head_dim), any strides; out: (n_heads, n, head_dim) head-major, times scale
    n, nh, hd = x.shape
    half = n_rot // 2
    for h in range(nh):
        for t in range(n):
            for i in range(half):
                if neox:
                    i0 = i
                    i1 = i + half
                else:
                    i0 = 2 * i
                    i1 = 2 * i + 1
                x0 = x[t, h, i0]
                x1 = x[t, h, i1]
                c = cos[t, i]
                s = sin[t, i]
                out[h, t, i0] = (x0 * c - x1 * s) * scale
                out[h, t, i1] = (x0 * s + x1 * c) * scale
            for i in range(n_rot, hd):
                out[h, t, i] = x[t, h, i] * scale


def rope_tables(pos: npt.NDArray[np.int64], n_rot: int, base: float, freq_scale: float,
                attn_factor: float = 1.0, freq_factors: npt.NDArray[np.float32] | None = None
                ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """cos/sin (n, n_rot/2) of ggml's rope without YaRN: theta = p * s * base^(-2i/n_rot) / ff_i."""
    inv = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        inv = inv / freq_factors.astype(np.float64)
    theta = pos.astype(np.float64)[:, None] * (freq_scale * inv)[None, :]
    return (np.cos(theta) * attn_factor).astype(F32), (np.sin(theta) * attn_factor).astype(F32)


def rope(x: npt.NDArray[np.float32], cos: npt.NDArray[np.float32], sin: npt.NDArray[np.float32],
         n_rot: int, neox: bool, out: npt.NDArray[np.float32] | None = None, rows: Rows = INLINE,
         scale: float = 1.0) -> npt.NDArray[np.float32]:
    """RoPE on the first n_rot dims of every head of x (n, n_heads, head_dim), in ggml's
    normal (adjacent pairs) or neox (halves) mode, then times `scale` (the kq scale folded into
    the queries); returns (n_heads, n, head_dim), into `out` (which may be a strided view such
    as a KV-cache slice) when given."""
    n, nh, hd = x.shape
    if out is None:
        out = np.empty((nh, n, hd), dtype=F32)
    rows(n, lambda a, b: _rope_heads(x[a:b], cos[a:b], sin[a:b], n_rot, neox, F32(scale), out[:, a:b]))
    return out


def add(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], rows: Rows = INLINE) -> npt.NDArray[np.float32]:
    """x + y for (n, d) float32 arrays (the residual stream), split by rows."""
    out = np.empty(np.broadcast_shapes(x.shape, y.shape), dtype=F32)
    rows(out.shape[0], lambda a, b: np.add(x[a:b], y[a:b], out=out[a:b]))
    return out


def causal_mask(q_pos: npt.NDArray[np.int64], k0: int, k1: int, n_swa: int) -> npt.NDArray[np.float32]:
    """Additive mask (len(q_pos), k1-k0): 0 where query at p may see key position j, else -inf.

    Causal (j <= p) and, with a sliding window, llama_hparams::is_masked_swa's p - j < n_swa.
    """
    j = np.arange(k0, k1)[None, :]
    p = q_pos[:, None]
    ok = j <= p
    if n_swa > 0:
        ok &= (p - j) < n_swa
    return np.where(ok, F32(0.0), F32(-np.inf)).astype(F32)


def softmax_(s: npt.NDArray[np.float32]) -> None:
    """In-place float32 softmax over the last axis (every row has an unmasked entry)."""
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s *= F32(1.0) / s.sum(axis=-1, keepdims=True)


def softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise softmax of x (rows, d) in float32, as a new array."""
    s = np.array(x, dtype=F32)
    softmax_(s)
    return s
