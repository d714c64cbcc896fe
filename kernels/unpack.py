"""Quantized tensors unpacked to int8 values with a float32 scale (and offset) per block, and
numba matrix-vector products on them and on raw F16 / float32 rows.

`unpack` turns the raw blocks of a Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q6_K tensor into an `Affine`
(value = a * q + b per block, exactly as ggml's `dequantize_row_*` computes it), about 1.1-1.25
bytes a weight instead of float32's 4, for products with a few activation rows where the speed
is the bytes read. The kernels multiply float32 activations by the weights as the types
dequantize, so results equal a float32 product with the dequantized matrix up to summation
order. Rows are independent: `prange` over row groups on numba's threads, each writing its own
outputs, so results do not depend on the thread count.
"""
from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from llmtk.ggufio.constants import GGML_TYPE_TRAITS, GGMLType

from .activations import _through_half

F32 = np.float32
# Only reassociation and FMA contraction: float sums may be reordered into SIMD lanes (these
# products need not match ggml's integer dot products byte for byte, only the float32 product
# with the dequantized weights up to summation order).
_REASSOC = {"reassoc", "contract"}


@intrinsic
def _half(typingctx, h):
    """IEEE binary16 bits (any integer) -> float32, exact: LLVM's fpext from half, which
    vectorises to the CPU's half-conversion instructions (F16C, AVX-512) inside the loops."""
    if isinstance(h, types.Integer):
        def codegen(context, builder, signature, args):
            v = args[0]
            v = builder.trunc(v, ir.IntType(16)) if h.bitwidth > 16 else v
            return builder.fpext(builder.bitcast(v, ir.HalfType()), ir.FloatType())
        return types.float32(h), codegen
    return None


ROWS_PER_TASK = 16


def declare_llvm(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """An LLVM intrinsic (or function) `name` of that signature in the module being built."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


_V16F16, _V16F32 = ir.VectorType(ir.HalfType(), 16), ir.VectorType(ir.FloatType(), 16)


@intrinsic
def dot_f16(typingctx, w, w0, x, n_chunks):
    """sum over j < 32 * n_chunks of fp16 w[w0 + j] (as float32) times float32 x[j], in two
    16-lane fused multiply-add accumulators (ggml_vec_dot_f16's F16C/FMA loop, in LLVM IR: the
    auto-vectorised loop kept its lanes in memory and ran at half the speed).

    w: 1-D uint16 array of IEEE half bits; x: 1-D float32. Returns float32.
    """
    if not (isinstance(w, types.Array) and w.dtype == types.uint16 and isinstance(x, types.Array)
            and x.dtype == types.float32):
        return None
    sig = types.float32(w, w0, x, n_chunks)

    def codegen(context, builder, signature, args):
        wv, w0v, xv, nv = args
        intp = context.get_value_type(types.intp)
        w0v = context.cast(builder, w0v, signature.args[1], types.intp)
        nv = context.cast(builder, nv, signature.args[3], types.intp)
        wa = context.make_array(signature.args[0])(context, builder, wv)
        xa = context.make_array(signature.args[2])(context, builder, xv)
        fma = declare_llvm(builder, "llvm.fma.v16f32", _V16F32, [_V16F32] * 3)
        zero = ir.Constant(_V16F32, [0.0] * 16)
        acc0 = cgutils.alloca_once_value(builder, zero)
        acc1 = cgutils.alloca_once_value(builder, zero)
        wbase = builder.gep(wa.data, [w0v])
        with cgutils.for_range(builder, nv) as loop:
            o = builder.mul(loop.index, ir.Constant(intp, 32))
            for acc, off in ((acc0, 0), (acc1, 16)):
                oo = builder.add(o, ir.Constant(intp, off))
                pw = builder.bitcast(builder.gep(wbase, [oo]), _V16F16.as_pointer())
                px = builder.bitcast(builder.gep(xa.data, [oo]), _V16F32.as_pointer())
                wf = builder.fpext(builder.load(pw, align=2), _V16F32)
                builder.store(builder.call(fma, [wf, builder.load(px, align=4), builder.load(acc)]), acc)
        v = builder.fadd(builder.load(acc0), builder.load(acc1))
        total = builder.extract_element(v, ir.Constant(ir.IntType(32), 0))
        for k in range(1, 16):
            total = builder.fadd(total, builder.extract_element(v, ir.Constant(ir.IntType(32), k)))
        return total

    return sig, codegen


# The kernels accumulate in 32 independent lanes (`lanes[j]`, summed at the end): LLVM turns
# that into SIMD registers, which a single scalar accumulator would prevent.

@njit(cache=True, parallel=True, fastmath=_REASSOC)
def _matvec_f16(ws, starts, x, round_half, out):
    """x @ W.T for F16 rows (ggml_fp16_to_fp32_row, then a float32 dot), x rounded through fp16
    first where `round_half` (ggml-cpu converts F16 weights' inputs to F16). Several tensors of
    one width are multiplied as one stack (q|k|v): ws[p] (rows_p, cols) uint16 holds stacked rows
    starts[p]..starts[p+1]-1, so a decoding step launches one parallel loop for them."""
    if round_half:
        xr = np.empty_like(x)
        for t in range(x.shape[0]):
            for j in range(x.shape[1]):
                xr[t, j] = _through_half(x[t, j])
        x = xr
    rows = starts[-1]
    cols = ws[0].shape[1]
    n = x.shape[0]
    tail = cols - cols % 32
    for task in prange((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        p = 0
        for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
            while r >= starts[p + 1]:
                p += 1
            wr = ws[p][r - starts[p]]
            for t in range(n):
                xt = x[t]
                acc = dot_f16(wr, 0, xt, cols // 32)
                for j in range(tail, cols):
                    acc += _half(wr[j]) * xt[j]
                out[t, r] = acc


@njit(cache=True, parallel=True, fastmath=_REASSOC)
def _matvec_affine(q, a, b, x, xs, out):
    """Blocks of bs = cols / a.shape[1] values a * q (+ b): sum_k a_k (q . x)_k + b_k sum(x)_k."""
    rows, cols = q.shape
    n = x.shape[0]
    nb = a.shape[1]
    bs = cols // nb
    has_b = b.shape[1] > 0
    for task in prange((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        lanes = np.empty(32, dtype=np.float32)
        for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
            qr = q[r]
            ar = a[r]
            for t in range(n):
                xt = x[t]
                lanes[:] = 0.0
                if bs == 32:
                    for k in range(nb):
                        ak = ar[k]
                        for j in range(32):
                            lanes[j] += ak * (np.float32(qr[k * 32 + j]) * xt[k * 32 + j])
                else:  # bs == 16: two blocks per 32 lanes
                    for k in range(nb // 2):
                        a0 = ar[2 * k]
                        a1 = ar[2 * k + 1]
                        for j in range(16):
                            lanes[j] += a0 * (np.float32(qr[k * 32 + j]) * xt[k * 32 + j])
                        for j in range(16, 32):
                            lanes[j] += a1 * (np.float32(qr[k * 32 + j]) * xt[k * 32 + j])
                acc = np.float32(0.0)
                for j in range(32):
                    acc += lanes[j]
                if has_b:
                    for k in range(nb):
                        acc += b[r, k] * xs[t, k]
                out[t, r] = acc


@njit(cache=True, parallel=True, fastmath=_REASSOC)
def _matvec_f32(w, x, out):
    """x @ W.T for float32 rows (the dequantized cache of types without a kernel here)."""
    rows, cols = w.shape
    n = x.shape[0]
    for task in prange((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        lanes = np.empty(32, dtype=np.float32)
        for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
            wr = w[r]
            for t in range(n):
                xt = x[t]
                lanes[:] = 0.0
                for k in range(cols // 32):
                    for j in range(32):
                        lanes[j] += wr[k * 32 + j] * xt[k * 32 + j]
                acc = np.float32(0.0)
                for j in range(cols - cols % 32, cols):
                    acc += wr[j] * xt[j]
                for j in range(32):
                    acc += lanes[j]
                out[t, r] = acc


class Affine:
    """A quantized tensor unpacked for decoding: int8 q (rows, cols), a scale a and offset b per
    block of 32 (16 for Q6_K) values, float32, value = a * q + b as dequantize_row_* computes it."""

    def __init__(self, q: np.ndarray, a: np.ndarray, b: np.ndarray | None):
        self.q = np.ascontiguousarray(q, dtype=np.int8)
        self.a = np.ascontiguousarray(a, dtype=F32)
        self.b = np.zeros((a.shape[0], 0), dtype=F32) if b is None else np.ascontiguousarray(b, dtype=F32)

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.a.nbytes + self.b.nbytes

    @staticmethod
    def stack(parts: "list[Affine]") -> "Affine":
        """The row-wise stack of tensors of one type (q|k|v, gate|up)."""
        if len(parts) == 1:
            return parts[0]
        b = None if parts[0].b.shape[1] == 0 else np.concatenate([p.b for p in parts])
        return Affine(np.concatenate([p.q for p in parts]), np.concatenate([p.a for p in parts]), b)

    def matvec(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """x (n, cols) @ W.T -> (n, rows) float32, on numba threads."""
        x = np.ascontiguousarray(x, dtype=F32)
        bs = self.q.shape[1] // self.a.shape[1]
        xs = x.reshape(x.shape[0], -1, bs).sum(axis=2, dtype=F32) if self.b.shape[1] else x[:, :0]
        out = np.empty((x.shape[0], self.q.shape[0]), dtype=F32)
        _matvec_affine(self.q, self.a, self.b, x, np.ascontiguousarray(xs), out)
        return out

    def matvec_int8(self, x: npt.NDArray[np.float32], vdt: GGMLType) -> npt.NDArray[np.float32]:
        """The same product with x quantized to `vdt` (Q8_0, Q8_1, Q8_K) and integer dot
        products per block, as ggml's vec_dot kernels (`llmtk.kernels.int8dot`)."""
        from .int8dot import matvec_affine

        return matvec_affine(self.q, self.a, self.b, x, vdt)


def _halves(blocks: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, :, at:at + 2]).view(np.float16)[..., 0].astype(F32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    # qs (rows, nb, 16): low nibbles are values 0..15 of the block, high nibbles 16..31
    return np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.int16)


def _fifth_bits(blocks: np.ndarray, at: int) -> np.ndarray:
    qh = np.ascontiguousarray(blocks[:, :, at:at + 4]).view("<u4")  # (rows, nb, 1)
    return (((qh >> np.arange(32, dtype=np.uint32)) & 1) << 4).astype(np.int16)


AFFINE_TYPES = frozenset({GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1,
                          GGMLType.Q4_K, GGMLType.Q6_K})


def _scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # ggml get_scale_min_k4 for j = 0..7 over scales (..., 12): 6-bit scales and mins
    s = s.astype(np.int32)
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0xF) | ((s[..., 0:4] >> 6) << 4)], axis=-1)
    m = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], axis=-1)
    return sc, m


def unpack(raw: npt.NDArray[np.uint8], qtype: GGMLType, rows: int, cols: int) -> Affine | None:
    """The Affine form of a (rows, cols) tensor of a type in AFFINE_TYPES given as its raw bytes
    (rows * row_size uint8, any shape); None for other types or a row its blocks do not divide."""
    if qtype not in AFFINE_TYPES:
        return None
    tt = GGML_TYPE_TRAITS[qtype]
    if cols % tt.block_size:
        return None
    blocks = raw.reshape(rows, cols // tt.block_size, tt.type_size)  # (rows, nb, type_size)
    if qtype in (GGMLType.Q4_K, GGMLType.Q6_K):
        return _unpack_k(blocks, qtype, rows, cols)
    if qtype == GGMLType.Q8_0:        # d:2 qs:32
        q = blocks[:, :, 2:].view(np.int8)
        return Affine(q.reshape(rows, cols), _halves(blocks, 0), None)
    if qtype == GGMLType.Q4_0:        # d:2 qs:16, value (q - 8) * d
        return Affine((_nibbles(blocks[:, :, 2:]) - 8).reshape(rows, cols), _halves(blocks, 0), None)
    if qtype == GGMLType.Q4_1:        # d:2 m:2 qs:16, value q * d + m
        return Affine(_nibbles(blocks[:, :, 4:]).reshape(rows, cols), _halves(blocks, 0), _halves(blocks, 2))
    if qtype == GGMLType.Q5_0:        # d:2 qh:4 qs:16, value (q - 16) * d
        q = _nibbles(blocks[:, :, 6:]) | _fifth_bits(blocks, 2)
        return Affine((q - 16).reshape(rows, cols), _halves(blocks, 0), None)
    # Q5_1: d:2 m:2 qh:4 qs:16, value q * d + m
    q = _nibbles(blocks[:, :, 8:]) | _fifth_bits(blocks, 4)
    return Affine(q.reshape(rows, cols), _halves(blocks, 0), _halves(blocks, 2))


def _unpack_k(blocks: np.ndarray, qtype: GGMLType, rows: int, cols: int) -> Affine:
    # blocks (rows, nbk, type_size), QK_K values a block
    nbk = blocks.shape[1]
    if qtype == GGMLType.Q4_K:        # d:2 dmin:2 scales:12 qs:128; value d*sc * q - dmin*m per 32
        d, dmin = _halves(blocks, 0), _halves(blocks, 2)                  # (rows, nbk)
        sc, m = _scale_min_k4(blocks[:, :, 4:16])                         # (rows, nbk, 8)
        a = d[..., None] * sc.astype(F32)
        b = -(dmin[..., None] * m.astype(F32))
        qs = blocks[:, :, 16:].reshape(rows, nbk, 4, 32)
        q = np.stack([qs & 0x0F, qs >> 4], axis=3)                        # (rows, nbk, 4, 2, 32)
        return Affine(q.reshape(rows, cols), a.reshape(rows, -1), b.reshape(rows, -1))
    # Q6_K: ql:128 qh:64 scales:16 d:2; value (d*sc) * q per 16, scales in value order
    ql = blocks[:, :, 0:128].reshape(rows, nbk, 2, 64).astype(np.int16)
    qh = blocks[:, :, 128:192].reshape(rows, nbk, 2, 32).astype(np.int16)
    sc = blocks[:, :, 192:208].view(np.int8).astype(F32)                 # (rows, nbk, 16)
    d = _halves(blocks, 208)
    q = np.stack([(ql[..., :32] & 0xF) | ((qh & 3) << 4), (ql[..., 32:] & 0xF) | (((qh >> 2) & 3) << 4),
                  (ql[..., :32] >> 4) | (((qh >> 4) & 3) << 4), (ql[..., 32:] >> 4) | (((qh >> 6) & 3) << 4)],
                 axis=3) - 32                                             # (rows, nbk, 2, 4, 32)
    return Affine(q.reshape(rows, cols), (d[..., None] * sc).reshape(rows, -1), None)


class F16Rows:
    """F16 tensors of one width read in place (rows of raw bytes, e.g. views of the memory-mapped
    file) as one stack of rows for `matvec`."""

    def __init__(self, parts: "list[npt.NDArray[np.uint8]]"):
        self.parts = tuple(np.ascontiguousarray(p).view(np.uint16) for p in parts)
        if any(p.ndim != 2 or p.shape[1] != self.parts[0].shape[1] for p in self.parts):
            raise ValueError("F16 tensors of one width expected")
        self.starts = np.array([0, *itertools.accumulate(p.shape[0] for p in self.parts)], dtype=np.int64)
        self.rows = int(self.starts[-1])

    def matvec(self, x: npt.NDArray[np.float32], round_half: bool = False) -> npt.NDArray[np.float32]:
        """x (n, cols) @ [W1; W2; ...].T -> (n, rows) float32; `round_half` rounds x through
        fp16 first (F16's vec_dot_type), inside the same call."""
        out = np.empty((x.shape[0], self.rows), dtype=F32)
        _matvec_f16(self.parts, self.starts, np.ascontiguousarray(x, dtype=F32), round_half, out)
        return out


def matvec_f16(raw: "npt.NDArray[np.uint8] | list[npt.NDArray[np.uint8]]",
               x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """x (n, cols) @ W.T -> (n, rows) float32 for F16 weights given as raw bytes (rows, 2 * cols),
    or x @ [W1; W2; ...].T for a list of such tensors of one width (one parallel loop)."""
    return F16Rows(list(raw) if isinstance(raw, (list, tuple)) else [raw]).matvec(x)


def matvec_f32(w: npt.NDArray[np.float32], x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """x (n, cols) @ w.T -> (n, rows) float32 with w (rows, cols) float32, on numba threads."""
    out = np.empty((x.shape[0], w.shape[0]), dtype=F32)
    _matvec_f32(w, np.ascontiguousarray(x, dtype=F32), out)
    return out
