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

from llmtk.kernels.activations import _through_half

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


@njit(cache=True, nogil=True)
def _layer_norm(x, w, b, eps, out):
    # ggml_compute_forward_norm_f32: mean from a double sum, variance of the centred row in
    # double, scale = 1/sqrtf(var + eps); then ggml_mul by w and ggml_add of b (build_norm).
    # w, b: (n_w, d), row r of x takes w[r % n_w] (one weight row per head for q/k norms)
    rows, d = x.shape
    n_w = w.shape[0]
    for r in range(rows):
        s = 0.0
        for i in range(d):
            s += np.float64(x[r, i])
        mean = np.float32(s / d)
        v = 0.0
        for i in range(d):
            c = x[r, i] - mean
            out[r, i] = c
            v += np.float64(c) * np.float64(c)
        scale = np.float32(1.0) / np.sqrt(np.float32(v / d) + eps)
        wr = r % n_w
        for i in range(d):
            out[r, i] = out[r, i] * scale * w[wr, i] + b[wr, i]


def layer_norm(x: npt.NDArray[np.float32], w: npt.NDArray[np.float32], b: npt.NDArray[np.float32] | None,
               eps: float, rows: Rows = INLINE) -> npt.NDArray[np.float32]:
    """LayerNorm of the last axis of `x` (..., d), times `w`, plus `b` (zeros when None); `w`/`b` are
    (d,) or (k, d) for the last two axes of x (..., k, d), as command-r's per-head q/k norms.

    ggml's LLM_NORM (`ggml_norm`, then ggml_mul/ggml_add in build_norm): starcoder2, command-r, cohere2.
    """
    shape = x.shape
    d = shape[-1]
    x2 = np.ascontiguousarray(x, dtype=F32).reshape(-1, d)
    w2 = np.ascontiguousarray(w, dtype=F32).reshape(-1, d)
    b2 = np.zeros_like(w2) if b is None else np.ascontiguousarray(b, dtype=F32).reshape(-1, d)
    out = np.empty_like(x2)
    n_w = w2.shape[0]
    # split on whole groups of n_w rows so that every part starts on weight row 0
    groups = x2.shape[0] // n_w
    rows(groups, lambda a, c: _layer_norm(x2[a * n_w:c * n_w], w2, b2, F32(eps), out[a * n_w:c * n_w]))
    return out.reshape(shape)


_GELU_C = F32(math.sqrt(2.0 / math.pi))


def glu(act: str, g: npt.NDArray[np.float32], u: npt.NDArray[np.float32],
        rows: Rows = INLINE) -> npt.NDArray[np.float32]:
    """act(g) * u for the gated FFN; `act` is "silu", "gelu_tanh" (HF gelu_pytorch_tanh, in float32)
    or "gelu_f16" (ggml-cpu's GELU: the same function read from a float16 table).

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
    elif act == "gelu_f16":
        t = _gelu_ggml(g)
    else:
        t = _gelu_tanh(g)
    t *= u
    return t


def _gelu_tanh(g: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))): HF's gelu_pytorch_tanh, ggml's gelu
    t = g * g
    t *= F32(0.044715)
    t += F32(1.0)
    t *= g
    t *= _GELU_C
    np.tanh(t, out=t)
    t += F32(1.0)
    t *= g
    t *= F32(0.5)
    return t


_GELU_F16: npt.NDArray[np.float32] | None = None


def _gelu_f16_table() -> npt.NDArray[np.float32]:
    # ggml_table_gelu_f16: ggml_gelu_f32 of every float16 value, rounded to float16; float32
    # arithmetic, tanhf taken as correctly rounded (NumPy's float32 tanh is off by an ulp near -1,
    # which the table would keep as a subnormal instead of 0)
    global _GELU_F16
    if _GELU_F16 is None:
        x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(F32)
        with np.errstate(all="ignore"):
            t = np.tanh((_GELU_C * x * (F32(1.0) + F32(0.044715) * x * x)).astype(np.float64)).astype(F32)
            y = F32(0.5) * x * (F32(1.0) + t)
        _GELU_F16 = y.astype(np.float16).astype(F32)
    return _GELU_F16


def _gelu_ggml(g: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # ggml-cpu's ggml_vec_gelu_f32 with GGML_GELU_FP16: 0 at or below -10, x at or above 10, else
    # the table at x rounded to float16
    with np.errstate(over="ignore", invalid="ignore"):
        y = _gelu_f16_table()[g.astype(np.float16).view(np.uint16)]
    y = np.where(g <= F32(-10.0), F32(0.0), y)
    return np.where(g >= F32(10.0), g, y).astype(F32, copy=False)


def softplus(v: float) -> np.float32:
    """ggml_compute_softplus_f32 in float32: v above 20, else log(1 + exp(v))."""
    v = F32(v)
    return v if v > F32(20.0) else F32(np.log(F32(1.0) + np.exp(v)))


def xielu(x: npt.NDArray[np.float32], alpha_n: float, alpha_p: float, beta: float,
          eps: float) -> npt.NDArray[np.float32]:
    """ggml's xIELU unary op (apertus), with ggml_xielu's effective parameters already applied:
    alpha_n = beta + softplus(raw alpha_n), alpha_p = softplus(raw alpha_p).
    x > 0: alpha_p x^2 + beta x; else (expm1(min(x, eps)) - x) alpha_n + beta x."""
    a_n, a_p, b, e = F32(alpha_n), F32(alpha_p), F32(beta), F32(eps)
    pos = a_p * x * x + b * x
    neg = (np.expm1(np.minimum(x, e)) - x) * a_n + b * x
    return np.where(x > 0, pos, neg).astype(F32, copy=False)


def act(name: str, x: npt.NDArray[np.float32], params: tuple[float, ...] = (),
        rows: Rows = INLINE) -> npt.NDArray[np.float32]:
    """The activation of a non-gated FFN (build_ffn without a gate): "gelu_tanh"/"gelu_f16" (starcoder2),
    "relu_sqr" (arcee, LLM_FFN_RELU_SQR), "xielu" (apertus; `params` its four per-layer values)."""
    if x.ndim == 2 and x.shape[0] >= SPLIT_MIN_ROWS and rows.parts > 1:
        out = np.empty(x.shape, dtype=F32)

        def part(a: int, b: int) -> None:
            out[a:b] = act(name, x[a:b], params)
        rows(x.shape[0], part)
        return out
    if name == "gelu_tanh":
        return _gelu_tanh(x)
    if name == "gelu_f16":
        return _gelu_ggml(x)
    if name == "relu_sqr":
        t = np.maximum(x, F32(0.0))
        t *= t
        return t
    if name == "xielu":
        return xielu(x, *params)
    raise ValueError(f"unknown activation {name!r}")


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


# the dot products may be summed in SIMD lanes (reassociated), as BLAS sums the batch path's
@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _attend_heads(Qh, K, V, t0, t1, mask, sinks, softcap, g, h0, h1, out):
    # query heads h0..h1-1 of Qh (n_head, n, head_k); head h reads kv head h // g
    n = Qh.shape[1]
    hv = V.shape[2]
    s = np.empty(t1 - t0, dtype=np.float32)
    acc = np.empty(hv, dtype=np.float32)
    for h in range(h0, h1):
        kvh = h // g
        for i in range(n):
            q = Qh[h, i]
            mx = np.float32(-np.inf)
            for t in range(t1 - t0):
                kt = K[kvh, t0 + t]
                d = np.float32(0.0)
                for j in range(q.shape[0]):
                    d += q[j] * kt[j]
                if softcap != 0.0:
                    d = np.float32(softcap) * np.tanh(d * (np.float32(1.0) / np.float32(softcap)))
                d += mask[i, t]
                s[t] = d
                mx = d if d > mx else mx
            if sinks.shape[0]:
                mx = sinks[h] if sinks[h] > mx else mx
            total = np.float32(0.0)
            for t in range(t1 - t0):
                e = np.exp(s[t] - mx)
                s[t] = e
                total += e
            if sinks.shape[0]:
                total += np.exp(sinks[h] - mx)
            inv = np.float32(1.0) / total
            acc[:] = 0.0
            for t in range(t1 - t0):
                p = s[t] * inv
                vt = V[kvh, t0 + t]
                for j in range(hv):
                    acc[j] += p * vt[j]
            out[i, h] = acc


@njit(cache=True, nogil=True)
def _decode_attention(q, k, v, cos, sin, n_rot, neox, scale, K, V, p0, half_k, half_v, t0, mask,
                      sinks, softcap, out):
    n, n_head, hk = q.shape
    n_kv = k.shape[1]
    Qh = np.empty((n_head, n, hk), dtype=np.float32)
    _rope_heads(q, cos, sin, n_rot, neox, scale, Qh)
    _rope_heads(k, cos, sin, n_rot, neox, np.float32(1.0), K[:, p0:p0 + n])
    for h in range(n_kv):
        for t in range(n):
            for j in range(v.shape[2]):
                V[h, p0 + t, j] = v[t, h, j]
            if half_k:
                for j in range(hk):
                    K[h, p0 + t, j] = _through_half(K[h, p0 + t, j])
            if half_v:
                for j in range(v.shape[2]):
                    V[h, p0 + t, j] = _through_half(V[h, p0 + t, j])
    _attend_heads(Qh, K, V, t0, p0 + n, mask, sinks, softcap, n_head // n_kv, 0, n_head, out)


def decode_attention(q: npt.NDArray[np.float32], k: npt.NDArray[np.float32], v: npt.NDArray[np.float32],
                     cos: npt.NDArray[np.float32], sin: npt.NDArray[np.float32], n_rot: int, neox: bool,
                     scale: float, K: npt.NDArray[np.float32], V: npt.NDArray[np.float32], p0: int,
                     half_k: bool, half_v: bool, t0: int, mask: npt.NDArray[np.float32],
                     sinks: npt.NDArray[np.float32] | None, softcap: float) -> npt.NDArray[np.float32]:
    """A decoding step's attention in one call, for a few new tokens: RoPE of q (times `scale`)
    and k, the new keys and values stored in the cache K, V (n_head_kv, n_ctx, head) at p0..
    (rounded to f16 where `half_k`/`half_v`), then softmax(q K^T + mask) V over key positions
    t0..p0+n-1 for every query head (head h reads kv head h // (n_head / n_head_kv)), with
    build_attn_mha's soft-capping and ggml_soft_max_add_sinks' sinks where given.

    The same arithmetic as the batch path (rope, cache rounding, float32 dot products, softmax)
    in one compiled loop, so a step does not pay a Python call per op and head.
    q: (n, n_head, head_k), k: (n, n_head_kv, head_k), v: (n, n_head_kv, head_v);
    returns (n, n_head, head_v).
    """
    n, n_head, _ = q.shape
    out = np.empty((n, n_head, V.shape[2]), dtype=F32)
    sk = np.zeros(0, dtype=F32) if sinks is None else np.ascontiguousarray(sinks, dtype=F32)
    _decode_attention(q, k, v, cos, sin, n_rot, neox, F32(scale), K, V, p0, half_k, half_v, t0,
                      mask, sk, F32(softcap), out)
    return out


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


def causal_mask(q_pos: npt.NDArray[np.int64], k0: int, k1: int, n_swa: int,
                chunked: bool = False) -> npt.NDArray[np.float32]:
    """Additive mask (len(q_pos), k1-k0): 0 where query at p may see key position j, else -inf.

    Causal (j <= p) and, with a sliding window, llama_hparams::is_masked_swa's p - j < n_swa, or
    with `chunked` (LLAMA_SWA_TYPE_CHUNKED, llama4) j in p's chunk: j >= (p // n_swa) * n_swa.
    """
    j = np.arange(k0, k1)[None, :]
    p = q_pos[:, None]
    ok = j <= p
    if n_swa > 0 and chunked:
        ok &= j >= (p // n_swa) * n_swa
    elif n_swa > 0:
        ok &= (p - j) < n_swa
    return np.where(ok, F32(0.0), F32(-np.inf)).astype(F32)


def softcap_(s: npt.NDArray[np.float32], cap: float) -> None:
    """In place: s = cap * tanh(s * (1/cap)), build_attn_mha's attention logit soft-capping (gemma2)."""
    s *= F32(1.0) / F32(cap)
    np.tanh(s, out=s)
    s *= F32(cap)


def softmax_(s: npt.NDArray[np.float32]) -> None:
    """In-place float32 softmax over the last axis (every row has an unmasked entry)."""
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s *= F32(1.0) / s.sum(axis=-1, keepdims=True)


def softmax_sinks_(s: npt.NDArray[np.float32], sinks: npt.NDArray[np.float32]) -> None:
    """In-place softmax over the last axis of s (rows, t) where row r also competes with a value-less
    logit sinks[r] (ggml_soft_max_add_sinks: the sink joins the max and the denominator)."""
    sinks = np.asarray(sinks, dtype=F32)[:, None]
    mx = np.maximum(s.max(axis=-1, keepdims=True), sinks)
    s -= mx
    np.exp(s, out=s)
    s *= F32(1.0) / (s.sum(axis=-1, keepdims=True) + np.exp(sinks - mx))


def softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise softmax of x (rows, d) in float32, as a new array."""
    s = np.array(x, dtype=F32)
    softmax_(s)
    return s
