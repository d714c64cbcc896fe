"""Integer dot products of int8 weight blocks with int8-quantized activations, as ggml-cpu decodes.

ggml's CPU backend quantizes a matmul's input to the weight type's vec_dot_type (Q8_0 blocks of
32 for the legacy quants, Q8_K blocks of 256 for the K-quants) and multiplies integers:
`ggml_vec_dot_q8_0_q8_0` sums `d_w * d_x * sum(q_w * q_x)` per block, the others likewise with
their own scales and offsets. For decoding (a few activation rows) that is also what makes it
fast: one AVX2 `vpmaddubsw` multiplies 32 int8 pairs, where the float path converts, multiplies
and adds every weight (llmtk measured 2.3x the float kernel's weights/s, in L2 and from memory).

`dot_blocks` emits, through LLVM's x86 intrinsics, the sign trick of ggml's `mul_sum_i8_pairs`
(|w| as unsigned times x with w's sign, `vpsignb` + `vpmaddubsw` + `vpmaddwd`) inside a loop over
blocks that keeps eight float lanes and multiplies each block's integer sums by its scale. The
integer sums are exact (|q_x| <= 127, so no pair saturates int16), so results equal the float
product with the rounded activations up to float summation order. `AVAILABLE` is False on a CPU
without AVX2; callers then keep the float kernels (`llmtk.kernels.unpack`).

Activations are quantized here exactly as `llmtk.kernels.activations.round_activations` rounds them
(ggml-cpu's x86 `quantize_row_q8_0`, `quantize_row_q8_K_ref`), but kept as int8 and scales.
"""
from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from llmtk.ggufio.constants import GGML_TYPE_TRAITS, QK_K, GGMLType

from .activations import QK8_0, _RINT_MAGIC, _block_amax, q8_0_scales, q8_K_iscale
from .unpack import ROWS_PER_TASK, _half, declare_llvm


def _host_has_avx2() -> bool:
    """Whether numba compiles for a CPU with AVX2: the host's features, unless NUMBA_CPU_NAME /
    NUMBA_CPU_FEATURES name another target (portable caches), whose features then decide."""
    try:
        import llvmlite.binding as llvm
        from numba.core import config

        name, features = config.CPU_NAME, config.CPU_FEATURES
        if features:
            return "+avx2" in features.split(",")
        if name and name != "host":
            return False  # a named target without a feature list: do not assume AVX2
        return bool(llvm.get_host_cpu_features().get("avx2", False))
    except Exception:  # an unknown host: keep the float kernels
        return False


AVAILABLE = _host_has_avx2()

# activation types whose int8 form these kernels take, with their block sizes
INT8_ACTIVATIONS = {GGMLType.Q8_0: QK8_0, GGMLType.Q8_1: QK8_0, GGMLType.Q8_K: QK_K}

_I8, _I16, _I32, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
_V32I8, _V16I16 = ir.VectorType(_I8, 32), ir.VectorType(_I16, 16)
_V8I32, _V8F32 = ir.VectorType(_I32, 8), ir.VectorType(_F32, 8)


def _splat(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    one = builder.insert_element(ir.Constant(_V8F32, ir.Undefined), v, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(_V8F32, ir.Undefined), ir.Constant(_V8I32, [0] * 8))


SCALES, HALF_SCALES, D_BEFORE = 0, 1, 2  # dot_blocks' `mode`


@intrinsic
def dot_blocks(typingctx, w, w0, w_stride, x, sc, sc2, n_blocks, mode):
    """sum over b < n_blocks of the int8 dot of 32 weights w[w0 + b * w_stride : +32] with
    x[32 b : 32 b + 32], each block's sum times its scale, by `mode` (a compile-time literal):
    SCALES: sc[b] * sc2[b]; HALF_SCALES: sc[2 b] * sc2[2 b] for its first 16 values and
    sc[2 b + 1] * sc2[2 b + 1] for the last 16 (Q6_K's blocks of 16); D_BEFORE: the fp16 d
    stored in the two bytes before the block (Q8_0's d:2 qs:32) times sc[b] (sc2 unused).

    w, x: 1-D int8 arrays (x in [-127, 127]); sc, sc2: 1-D float32. Returns float32.
    """
    if not (isinstance(w, types.Array) and isinstance(x, types.Array) and w.dtype == types.int8
            and x.dtype == types.int8 and isinstance(sc, types.Array) and sc.dtype == types.float32
            and isinstance(sc2, types.Array) and sc2.dtype == types.float32):
        return None
    if not isinstance(mode, types.IntegerLiteral) or mode.literal_value not in (SCALES, HALF_SCALES, D_BEFORE):
        return None
    kind = mode.literal_value
    sig = types.float32(w, w0, w_stride, x, sc, sc2, n_blocks, mode)

    def codegen(context, builder, signature, args):
        wv, w0v, wsv, xv, scv, sc2v, nbv, _ = args
        intp = context.get_value_type(types.intp)
        w0v = context.cast(builder, w0v, signature.args[1], types.intp)
        wsv = context.cast(builder, wsv, signature.args[2], types.intp)
        nbv = context.cast(builder, nbv, signature.args[6], types.intp)
        wa = context.make_array(signature.args[0])(context, builder, wv)
        xa = context.make_array(signature.args[3])(context, builder, xv)
        sa = context.make_array(signature.args[4])(context, builder, scv)
        sa2 = context.make_array(signature.args[5])(context, builder, sc2v)

        def scale_at(i):  # sc[i] * sc2[i]
            return builder.fmul(builder.load(builder.gep(sa.data, [i])), builder.load(builder.gep(sa2.data, [i])))
        pabs = declare_llvm(builder, "llvm.abs.v32i8", _V32I8, [_V32I8, ir.IntType(1)])
        psign = declare_llvm(builder, "llvm.x86.avx2.psign.b", _V32I8, [_V32I8, _V32I8])
        maddubs = declare_llvm(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, [_V32I8, _V32I8])
        maddwd = declare_llvm(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [_V16I16, _V16I16])
        ones = ir.Constant(_V16I16, [1] * 16)
        acc = cgutils.alloca_once_value(builder, ir.Constant(_V8F32, [0.0] * 8))
        wbase = builder.gep(wa.data, [w0v])
        with cgutils.for_range(builder, nbv) as loop:
            b = loop.index
            pw = builder.gep(wbase, [builder.mul(b, wsv)])
            px = builder.gep(xa.data, [builder.mul(b, ir.Constant(intp, 32))])
            vw = builder.load(builder.bitcast(pw, _V32I8.as_pointer()), align=1)
            vx = builder.load(builder.bitcast(px, _V32I8.as_pointer()), align=1)
            # ggml's mul_sum_i8_pairs: |w| (unsigned) times x carrying w's sign, pairs to int16,
            # then quads to int32: lanes 0-3 hold values 0-15, lanes 4-7 values 16-31
            prod = builder.call(maddubs, [builder.call(pabs, [vw, ir.Constant(ir.IntType(1), 0)]),
                                          builder.call(psign, [vx, vw])])
            sums = builder.sitofp(builder.call(maddwd, [prod, ones]), _V8F32)
            if kind == HALF_SCALES:
                s0 = scale_at(builder.mul(b, ir.Constant(intp, 2)))
                s1 = scale_at(builder.add(builder.mul(b, ir.Constant(intp, 2)), ir.Constant(intp, 1)))
                pair = builder.insert_element(ir.Constant(_V8F32, ir.Undefined), s0, ir.Constant(_I32, 0))
                pair = builder.insert_element(pair, s1, ir.Constant(_I32, 1))
                scale = builder.shuffle_vector(pair, ir.Constant(_V8F32, ir.Undefined),
                                               ir.Constant(_V8I32, [0, 0, 0, 0, 1, 1, 1, 1]))
            elif kind == D_BEFORE:
                pd = builder.bitcast(builder.gep(pw, [ir.Constant(intp, -2)]), ir.HalfType().as_pointer())
                d = builder.fpext(builder.load(pd, align=1), _F32)
                scale = _splat(builder, builder.fmul(d, builder.load(builder.gep(sa.data, [b]))))
            else:
                scale = _splat(builder, scale_at(b))
            builder.store(builder.fadd(builder.load(acc), builder.fmul(sums, scale)), acc)
        v = builder.load(acc)
        total = builder.extract_element(v, ir.Constant(_I32, 0))
        for k in range(1, 8):
            total = builder.fadd(total, builder.extract_element(v, ir.Constant(_I32, k)))
        return total

    return sig, codegen


# -- activations as int8 blocks -----------------------------------------------------------------

@njit(cache=True, nogil=True)
def _quantize_q8_0(x, q, d):
    # quantize_row_q8_0 as activations._round_q8_0 rounds (q8_0_scales), kept as int8
    rows, cols = x.shape
    nb = cols // QK8_0
    inv = np.empty(nb, dtype=np.float32)
    for r in range(rows):
        xr = x[r]
        q8_0_scales(xr, inv, d[r])
        for b in range(nb):
            o = b * QK8_0
            for j in range(QK8_0):
                q[r, o + j] = np.int8(np.int32((xr[o + j] * inv[b] + _RINT_MAGIC) - _RINT_MAGIC))


@njit(cache=True, nogil=True)
def _quantize_q8_K(x, q, d):
    # quantize_row_q8_K_ref as activations._round_q8_K rounds (q8_K_iscale), kept as int8
    rows, cols = x.shape
    nb = cols // QK_K
    amax = np.empty(nb, dtype=np.float32)
    for r in range(rows):
        xr = x[r]
        _block_amax(xr, QK_K, amax)
        for b in range(nb):
            o = b * QK_K
            if amax[b] == 0:
                d[r, b] = 0.0
                for j in range(QK_K):
                    q[r, o + j] = 0
                continue
            iscale = q8_K_iscale(xr, o, amax[b])
            d[r, b] = np.float32(1.0) / iscale
            for j in range(QK_K):
                v = (iscale * xr[o + j] + _RINT_MAGIC) - _RINT_MAGIC
                q[r, o + j] = np.int8(np.int32(v if v < np.float32(127.0) else np.float32(127.0)))


@njit(cache=True, nogil=True)
def _quantize(x, block):
    """x (n, cols) float32 -> int8 values (n, cols) and a scale per block of `block` values:
    Q8_0's for block 32, Q8_K's for QK_K."""
    n, cols = x.shape
    q = np.empty((n, cols), dtype=np.int8)
    d = np.empty((n, cols // block), dtype=np.float32)
    if block == QK_K:
        _quantize_q8_K(x, q, d)
    else:
        _quantize_q8_0(x, q, d)
    return q, d


@njit(cache=True, nogil=True)
def _weight_block_scales(q, d, block, bs, with_sums):
    """x's scale per weight block of bs values (n, cols / bs) and, `with_sums`, the rounded
    values' sums per weight block (what an offset per block, Q4_1's m or Q4_K's -dmin * m,
    multiplies; else an empty array)."""
    n, cols = q.shape
    nw = cols // bs
    xs = np.empty((n, nw), dtype=np.float32)
    xsum = np.empty((n, nw if with_sums else 0), dtype=np.float32)
    for t in range(n):
        for k in range(nw):
            xs[t, k] = d[t, (k * bs) // block]
            if with_sums:
                acc = np.int32(0)
                for j in range(k * bs, (k + 1) * bs):
                    acc += np.int32(q[t, j])
                xsum[t, k] = np.float32(acc) * xs[t, k]
    return xs, xsum


class Int8Activations:
    """x (n, cols) float32 as ggml's `from_float` makes it for a vec_dot_type: int8 values `q`
    (n, cols) and a scale `d` (n, cols / block) per block of `block` values (32 for Q8_0/Q8_1,
    256 for Q8_K); q * d are `round_activations`' values exactly. (The matvec kernels quantize
    their input themselves, the same way; this is the same conversion for callers and tests.)"""

    def __init__(self, x: npt.NDArray[np.float32], vdt: GGMLType):
        self.block = INT8_ACTIVATIONS[vdt]
        self.q, self.d = _quantize(np.ascontiguousarray(x, dtype=np.float32), self.block)


def supports(vdt: GGMLType | None, cols: int) -> bool:
    """Whether activations of type `vdt` and width `cols` can take the int8 kernels."""
    return AVAILABLE and vdt in INT8_ACTIVATIONS and cols % INT8_ACTIVATIONS[vdt] == 0


# -- matrix-vector products -------------------------------------------------------------------
# Each kernel takes the float32 activations and quantizes them first (serially, before its
# parallel loop), so that a decoding step's product is one call.

@njit(cache=True, parallel=True)
def _matvec_affine_i8(q, a, b, x, x_block, out):
    """Unpacked blocks (value a * q + b per block of bs = cols / a.shape[1] values, bs 32 or 16)
    times x quantized to int8 blocks of x_block values (ggml_vec_dot_*_q8_*)."""
    rows, cols = q.shape
    na = a.shape[1]
    bs = cols // na
    has_b = b.shape[1] > 0
    xq, xd = _quantize(x, x_block)
    xs, xsum = _weight_block_scales(xq, xd, x_block, bs, has_b)
    n = xq.shape[0]
    qf = q.reshape(-1)
    for task in prange((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
            ar = a[r]
            for t in range(n):
                if bs == 32:
                    acc = dot_blocks(qf, r * cols, 32, xq[t], ar, xs[t], na, SCALES)
                else:
                    acc = dot_blocks(qf, r * cols, 32, xq[t], ar, xs[t], na // 2, HALF_SCALES)
                if has_b:
                    for k in range(na):
                        acc += b[r, k] * xsum[t, k]
                out[t, r] = acc


@njit(cache=True, parallel=True)
def _matvec_q8_0_blocks(qs, starts, row_bytes, x, out):
    """Q8_0 weights read from their own blocks (d:2 qs:32) times x quantized to Q8_0:
    ggml_vec_dot_q8_0_q8_0, sum_b d_w * d_x * (qs_w . qs_x). Several tensors of one width are
    multiplied as one stack (q|k|v, gate|up): part p, its bytes as one int8 array qs[p], holds
    stacked rows starts[p]..starts[p+1]-1."""
    rows = starts[-1]
    nb = row_bytes // 34
    xq, xd = _quantize(x, QK8_0)
    n = xq.shape[0]
    for task in prange((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        p = 0
        for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
            while r >= starts[p + 1]:
                p += 1
            o = (r - starts[p]) * row_bytes + 2
            for t in range(n):
                out[t, r] = dot_blocks(qs[p], o, 34, xq[t], xd[t], xd[t], nb, D_BEFORE)


def matvec_affine(q: npt.NDArray[np.int8], a: npt.NDArray[np.float32], b: npt.NDArray[np.float32],
                  x: npt.NDArray[np.float32], vdt: GGMLType) -> npt.NDArray[np.float32]:
    """x @ W.T (n, rows) for unpacked weights (q, a, b as `unpack.Affine`), x (n, cols) float32
    quantized to `vdt` (Q8_0, Q8_1 or Q8_K) as ggml-cpu does before its integer dot products."""
    out = np.empty((x.shape[0], q.shape[0]), dtype=np.float32)
    _matvec_affine_i8(q, a, b, np.ascontiguousarray(x, dtype=np.float32), INT8_ACTIVATIONS[vdt], out)
    return out


class Q8_0Blocks:
    """Q8_0 tensors of one width, read in place (e.g. views of the memory-mapped file) as one
    stack of rows for `matvec`: nothing is copied or unpacked."""

    def __init__(self, parts: "list[npt.NDArray[np.uint8]]", rows: "list[int]"):
        blocks = [np.ascontiguousarray(p).reshape(r, -1) for p, r in zip(parts, rows)]
        self.row_bytes = blocks[0].shape[1]
        if any(b.shape[1] != self.row_bytes for b in blocks) or \
                self.row_bytes % GGML_TYPE_TRAITS[GGMLType.Q8_0].type_size:
            raise ValueError("Q8_0 tensors of one width expected")
        self.qs = tuple(b.reshape(-1).view(np.int8) for b in blocks)
        self.starts = np.array([0, *itertools.accumulate(rows)], dtype=np.int64)
        self.rows = int(self.starts[-1])

    def matvec(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """x @ [W1; W2; ...].T (n, rows), x (n, cols) float32 quantized to Q8_0 first."""
        out = np.empty((x.shape[0], self.rows), dtype=np.float32)
        _matvec_q8_0_blocks(self.qs, self.starts, self.row_bytes, np.ascontiguousarray(x, dtype=np.float32), out)
        return out
