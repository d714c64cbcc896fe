"""Element-wise transformer ops as numba kernels (the matmuls go to BLAS through NumPy).

Each kernel parallelises over independent rows, each writing its own slice of a preallocated
output, so results do not depend on the thread count. Arithmetic is float32 like ggml's CPU ops,
with ggml's float64 accumulation of the RMS-norm sum of squares.
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit, prange

F32 = np.float32


@njit(cache=True, parallel=True)
def _rms_norm(x, w, eps, out):
    # ggml_compute_forward_rms_norm_f32: sum of squares in double, scale = 1/sqrtf(mean + eps)
    rows, d = x.shape
    for r in prange(rows):
        s = 0.0
        for i in range(d):
            v = np.float64(x[r, i])
            s += v * v
        scale = np.float32(1.0) / np.sqrt(np.float32(s / d) + eps)
        for i in range(d):
            out[r, i] = x[r, i] * scale * w[i]


def rms_norm(x: npt.NDArray[np.float32], w: npt.NDArray[np.float32], eps: float) -> npt.NDArray[np.float32]:
    """RMS-normalise the last axis of `x` (..., d) and multiply by `w` (d,)."""
    shape = x.shape
    x2 = np.ascontiguousarray(x, dtype=F32).reshape(-1, shape[-1])
    out = np.empty_like(x2)
    _rms_norm(x2, np.ascontiguousarray(w, dtype=F32), F32(eps), out)
    return out.reshape(shape)


@njit(cache=True, parallel=True)
def _swiglu(g, u, out):
    rows, d = g.shape
    for r in prange(rows):
        for i in range(d):
            a = g[r, i]
            out[r, i] = a / (np.float32(1.0) + np.exp(-a)) * u[r, i]


@njit(cache=True, parallel=True)
def _geglu_tanh(g, u, out):
    # GELU with the tanh approximation (HF gelu_pytorch_tanh, ggml_gelu's formula)
    c = np.float32(math.sqrt(2.0 / math.pi))
    rows, d = g.shape
    for r in prange(rows):
        for i in range(d):
            a = g[r, i]
            t = np.tanh(c * (a + np.float32(0.044715) * a * a * a))
            out[r, i] = np.float32(0.5) * a * (np.float32(1.0) + t) * u[r, i]


def glu(act: str, g: npt.NDArray[np.float32], u: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """act(g) * u for the gated FFN; `act` is "silu" or "gelu_tanh". g, u: (rows, n_ff), may be views."""
    out = np.empty(g.shape, dtype=F32)
    fn = _swiglu if act == "silu" else _geglu_tanh
    fn(g, u, out)
    return out


@njit(cache=True, parallel=True)
def _rope(x, cos, sin, n_rot, neox):
    # x: (n, n_heads, head_dim) rotated in place; cos/sin: (n, n_rot // 2)
    n, nh, _ = x.shape
    half = n_rot // 2
    for t in prange(n):
        for h in range(nh):
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
                x[t, h, i0] = x0 * c - x1 * s
                x[t, h, i1] = x0 * s + x1 * c


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
         n_rot: int, neox: bool) -> None:
    """Rotate the first n_rot dims of every head of x (n, n_heads, head_dim) in place."""
    _rope(x, cos, sin, n_rot, neox)


@njit(cache=True, parallel=True)
def _softmax_causal(s, scale, n_q, pos0, n_swa, softcap):
    # s: (n_kv_head, rows, n_kv) where row r is query r % n_q at position pos0 + r % n_q;
    # key j sits at position j. Masked keys get probability 0 (ggml's -INF mask).
    b, rows, n_kv = s.shape
    for k in prange(b * rows):
        bi = k // rows
        r = k % rows
        p = pos0 + r % n_q
        lo = 0
        if n_swa > 0:
            lo = max(0, p - n_swa + 1)  # llama_hparams::is_masked_swa: masked when p - j >= n_swa
        hi = min(p + 1, n_kv)
        m = -np.inf
        for j in range(lo, hi):
            v = s[bi, r, j] * scale
            if softcap > 0:
                v = softcap * np.tanh(v / softcap)
            s[bi, r, j] = v
            if v > m:
                m = v
        tot = 0.0
        for j in range(lo, hi):
            e = np.exp(s[bi, r, j] - m)
            s[bi, r, j] = e
            tot += e
        inv = np.float32(1.0 / tot)
        for j in range(0, lo):
            s[bi, r, j] = 0.0
        for j in range(lo, hi):
            s[bi, r, j] *= inv
        for j in range(hi, n_kv):
            s[bi, r, j] = 0.0


def softmax_causal(s: npt.NDArray[np.float32], scale: float, n_q: int, pos0: int, n_swa: int,
                   softcap: float = 0.0) -> None:
    """Scaled, causally (and sliding-window) masked softmax over the last axis of s, in place."""
    _softmax_causal(s, F32(scale), n_q, pos0, n_swa, F32(softcap))


@njit(cache=True, parallel=True)
def _softmax_rows(x, out):
    rows, d = x.shape
    for r in prange(rows):
        m = -np.inf
        for i in range(d):
            if x[r, i] > m:
                m = x[r, i]
        tot = 0.0
        for i in range(d):
            e = np.exp(x[r, i] - m)
            out[r, i] = e
            tot += e
        inv = np.float32(1.0 / tot)
        for i in range(d):
            out[r, i] *= inv


def softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise softmax of x (rows, d) in float32."""
    x = np.ascontiguousarray(x, dtype=F32)
    out = np.empty_like(x)
    _softmax_rows(x, out)
    return out
