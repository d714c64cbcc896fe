"""Unpacked int8 blocks and their matvecs (llmtk.kernels.unpack) against llmtk's dequantize."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from llmtk import kernels
from llmtk.ggufio.constants import GGMLType
from llmtk.kernels import unpack as up

AFFINE = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"]


def _weights(rows: int = 40, cols: int = 512) -> np.ndarray:
    w = (np.random.default_rng(0).standard_normal((rows, cols)) * 0.05).astype(np.float32)
    w[0, :6] = [0.0, -0.0, 1e-6, -3e-7, 60000.0, -2.5]  # zeros, f16 subnormals, large values
    return w


def test_affine_types_are_the_unpack_table():
    assert up.AFFINE_TYPES == {GGMLType[t] for t in AFFINE}


def test_half_conversion_is_exact_for_every_finite_half():
    from numba import njit

    @njit
    def all_halves(out):
        for h in range(65536):
            out[h] = up._half(np.uint16(h))

    got = np.empty(65536, np.float32)
    all_halves(got)
    ref = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[finite].view(np.uint32), ref[finite].view(np.uint32))


def test_q4_0_hand_block():
    # d:2 qs:16; value j is (low nibble of qs[j] - 8) * d, value 16 + j the high nibble
    qs = bytes((j & 0xF) | ((15 - j) << 4) for j in range(16))
    raw = np.frombuffer(struct.pack("<e", 0.5) + qs, np.uint8)
    aff = up.unpack(raw, GGMLType.Q4_0, 1, 32)
    want_q = [j - 8 for j in range(16)] + [15 - j - 8 for j in range(16)]
    assert aff.q.tolist() == [want_q] and aff.a.tolist() == [[0.5]] and aff.b.shape == (1, 0)


@pytest.mark.parametrize("qtype", AFFINE)
def test_unpacked_blocks_equal_dequantize_bit_for_bit(qtype):
    w = _weights()
    raw = kernels.quantize(w, qtype)
    aff = up.unpack(raw, GGMLType[qtype], *w.shape)
    bs = 16 if qtype == "Q6_K" else 32
    vals = aff.a.repeat(bs, axis=1) * aff.q.astype(np.float32)
    if aff.b.shape[1]:
        vals = vals + aff.b.repeat(bs, axis=1)
    assert aff.a.shape == (w.shape[0], w.shape[1] // bs)
    np.testing.assert_array_equal(vals.astype(np.float32), kernels.dequantize(raw, qtype, w.shape))


def test_unpack_refuses_other_types_and_partial_blocks():
    w = _weights()
    assert up.unpack(kernels.quantize(w, "Q5_K"), GGMLType.Q5_K, *w.shape) is None
    assert up.unpack(kernels.quantize(w, "F16"), GGMLType.F16, *w.shape) is None
    w96 = _weights(cols=96)
    assert up.unpack(kernels.quantize(w96, "Q8_0"), GGMLType.Q4_K, 40, 96) is None  # 96 % 256


@pytest.mark.parametrize("qtype", AFFINE + ["F16", "F32"])
@pytest.mark.parametrize("n", [1, 3])
def test_matvec_matches_dequantized_product(qtype, n):
    w = _weights()
    x = np.random.default_rng(1).standard_normal((n, w.shape[1])).astype(np.float32)
    raw = kernels.quantize(w, qtype)
    deq = kernels.dequantize(raw, qtype, w.shape).astype(np.float64)
    if qtype == "F16":
        got = up.matvec_f16(raw, x)
    elif qtype == "F32":
        got = up.matvec_f32(w, x)
    else:
        got = up.unpack(raw, GGMLType[qtype], *w.shape).matvec(x)
    ref = x.astype(np.float64) @ deq.T
    assert got.shape == (n, w.shape[0]) and got.dtype == np.float32
    # float32 sums in another order than float64: a few ulps of the row's magnitude
    assert np.abs(got - ref).max() < 1e-5 * np.abs(x).max() * np.abs(deq).sum(axis=1).max()


@pytest.mark.parametrize("qtype", ["Q4_1", "Q6_K"])
def test_stacked_matvec_equals_the_parts_and_ignores_thread_count(qtype):
    import numba

    w = _weights(rows=70)
    x = np.random.default_rng(2).standard_normal((2, w.shape[1])).astype(np.float32)
    parts = [up.unpack(kernels.quantize(p, qtype), GGMLType[qtype], *p.shape) for p in (w[:30], w[30:])]
    stacked = up.Affine.stack(parts)
    assert stacked.nbytes == sum(p.nbytes for p in parts)
    got = stacked.matvec(x)
    want = np.concatenate([p.matvec(x) for p in parts], axis=1)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = stacked.matvec(x)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(got.view(np.uint32), one.view(np.uint32))
