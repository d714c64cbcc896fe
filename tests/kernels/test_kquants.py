"""K-quants against ggml's own bytes and floats, plus Q8_K and the quantized dot products."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk import kernels
from llmtk.errors import ShapeError

K_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


# sha256 prefixes of ggml's own bytes (libggml-base quantize_qN_K, baseline x86-64, no FMA) for
# the inputs of _edge_inputs(): (sparse + imatrix zero at half the columns, sparse + all-zero
# imatrix, |x| up to 3.25e38 plain, the same with the imatrix)
GGML_EDGE_SHA256 = {
    "Q2_K": ('59dd12da9980d9ab', 'ad9404a29d115a21', 'bb51da249aca5efa', '8a6db0d138a461ea'),
    "Q3_K": ('d274ba35c9d1112a', '2c09cb1a2fcd5e1e', 'cd535b231a0ce015', 'cd535b231a0ce015'),
    "Q4_K": ('4762dc4fbd296fb3', '64e6b6f3911faf45', '40ab742f393fa8af', '8f07ac85b63c2702'),
    "Q5_K": ('5b4b9576cb0fb337', 'ab0e0a9584bd16d4', 'ba53e2a0ab8b32b3', '411c689b4a2f4a46'),
    "Q6_K": ('04d9cd43884497b6', '065cc6b2b996ca72', '065cc6b2b996ca72', '0851c9e32c38403c'),
}


def _edge_inputs():
    # integer arithmetic only, so the inputs are the same on every platform
    r = np.arange(4)[:, None]
    c = np.arange(512)[None, :]
    v = ((c * 37 + r * 11) % 101 - 50).astype(np.float64)
    sparse = np.where((c * 7 + r) % 23 == 0, v / 17, 0).astype(np.float32)
    imat = np.where(c % 2 == 0, 0, (c % 5 + 1) / 5).astype(np.float32)[0]
    huge = (v * 6.5e36).astype(np.float32)
    return [(sparse, imat), (sparse, np.zeros(512, np.float32)), (huge, None), (huge, imat)]


@pytest.mark.parametrize("qtype", K_TYPES)
def test_zero_importance_and_huge_values_match_ggml(qtype):
    # regression: with an imatrix that is zero where a sparse row is non-zero, the searches
    # divide by zero; ggml gets inf/NaN and carries on, numba's default error model raised
    import hashlib

    got = tuple(hashlib.sha256(kernels.quantize(x, qtype, imatrix=im).tobytes()).hexdigest()[:16]
                for x, im in _edge_inputs())
    assert got == GGML_EDGE_SHA256[qtype]


def test_every_k_type_has_imatrix_cases(ggml_quants):
    # the parametrisation above must really cover both ggml paths (ref and impl)
    from reference import reference_cases

    for q in K_TYPES:
        modes = {m for m, _, _ in reference_cases(ggml_quants, q)}
        assert modes == {"plain", "imatrix"}, (q, modes)


def test_q4_K_hand_block():
    # one block built by hand: d = 1.0, dmin = 0.5, sub-block j has scale j+1 and min j
    # (6-bit pairs packed as get_scale_min_k4 reads them), nibbles l%16 low and 15-l%16 high
    sc = np.arange(1, 9)
    m = np.arange(8)
    scales = np.zeros(12, np.uint8)
    scales[0:4], scales[4:8] = sc[:4], m[:4]
    scales[8:12] = (sc[4:] & 0xF) | ((m[4:] & 0xF) << 4)
    lo = np.arange(128) % 16
    hi = 15 - lo
    block = np.concatenate([np.array([0x00, 0x3C, 0x00, 0x38], np.uint8), scales,
                            (lo | (hi << 4)).astype(np.uint8)])  # d:2 dmin:2 scales:12 qs:128
    want = np.empty(256, np.float32)
    for k in range(4):
        want[64 * k:64 * k + 32] = sc[2 * k] * lo[32 * k:32 * k + 32] - 0.5 * m[2 * k]
        want[64 * k + 32:64 * k + 64] = sc[2 * k + 1] * hi[32 * k:32 * k + 32] - 0.5 * m[2 * k + 1]
    np.testing.assert_array_equal(kernels.dequantize(block, "Q4_K", (1, 256))[0], want)


def test_q8_K_round_trip():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 512)).astype(np.float32)
    x[1, :256] = 0.0  # an all-zero block: d = 0, qs = 0
    q = kernels.quantize(x, "Q8_K")
    assert q.shape == (5, 2 * 292) and q.dtype == np.uint8
    y = kernels.dequantize(q, "Q8_K", x.shape)
    assert np.all(y[1, :256] == 0)
    # |error| <= half a step, step = amax/127 per block
    amax = np.abs(x.reshape(5, 2, 256)).max(axis=2, keepdims=True)
    err = np.abs((y - x).reshape(5, 2, 256))
    assert np.all(err <= amax / 127 * 0.5 * (1 + 1e-5) + 1e-30)
    # the block's largest magnitude maps to exactly -127 (ggml uses iscale = -127/max)
    blocks = q.reshape(5, 2, 292)
    qs = blocks[:, :, 4:260].view(np.int8)
    assert np.all(np.abs(qs[~np.all(qs == 0, axis=2)]).max(axis=1) == 127)
    bsums = blocks[:, :, 260:].copy().view(np.int16)
    np.testing.assert_array_equal(bsums, qs.astype(np.int16).reshape(5, 2, 16, 16).sum(axis=3))


def test_q8_K_python_reference():
    # quantize_row_q8_K_ref written out in NumPy float32 (rint = nearest_int in range)
    from llmtk.kernels.kquants import quantize_q8_K

    rng = np.random.default_rng(3)
    x = (rng.standard_t(3, (4, 768)) * 0.1).astype(np.float32)
    d, qs, bsums = quantize_q8_K(x)
    xb = x.reshape(4, 3, 256)
    idx = np.abs(xb).argmax(axis=2)
    vmax = np.take_along_axis(xb, idx[..., None], axis=2)
    iscale = np.float32(-127.0) / vmax
    ref_qs = np.minimum(127, np.rint(iscale * xb)).astype(np.int8)
    np.testing.assert_array_equal(qs.reshape(4, 3, 256), ref_qs)
    np.testing.assert_array_equal(d, (np.float32(1.0) / iscale)[..., 0])
    np.testing.assert_array_equal(bsums.reshape(4, 3, 16), ref_qs.astype(np.int16).reshape(4, 3, 16, 16).sum(axis=3))


@pytest.mark.parametrize("qtype", K_TYPES)
def test_matvec_against_dequantized_dot(qtype):
    # ggml's integer dot products see Q8_K activations: compare with the float dot of the
    # dequantized weights and the dequantized Q8_K activations, which differs only by float
    # summation order (relative 1e-5 of the sum of absolute products)
    rng = np.random.default_rng(11)
    w = rng.standard_normal((24, 768)).astype(np.float32) * 0.05
    x = rng.standard_normal((3, 768)).astype(np.float32)
    wq = kernels.quantize(w, qtype)
    wd = kernels.dequantize(wq, qtype, w.shape).astype(np.float64)
    xd = kernels.dequantize(kernels.quantize(x, "Q8_K"), "Q8_K", x.shape).astype(np.float64)
    got = kernels.matvec(wq, qtype, x)
    assert got.shape == (3, 24) and got.dtype == np.float32
    want = xd @ wd.T
    scale = np.abs(xd) @ np.abs(wd).T
    assert np.all(np.abs(got - want) <= 1e-5 * scale), np.max(np.abs(got - want) / scale)
    # and the Q8_K rounding itself stays small against the unquantized activations
    exact = x.astype(np.float64) @ wd.T
    assert np.all(np.abs(got - exact) <= 2e-2 * scale)


@pytest.mark.parametrize("qtype", K_TYPES)
def test_matvec_equals_one_row_vec_dot(qtype):
    # the unpacked, lane-parallel matvec must give exactly the floats of the one-row
    # transcription of ggml_vec_dot_<type>_q8_K_generic (an all-zero activation block included);
    # Q2_K's matvec calls its one-row dot directly, so for it this checks only the driver
    from llmtk.kernels import kquants

    rng = np.random.default_rng(13)
    w = kernels.quantize((rng.standard_t(4, (40, 1024)) * 0.05).astype(np.float32), qtype)
    x = rng.standard_normal((3, 1024)).astype(np.float32)
    x[1, :256] = 0.0
    d8, qs8, bsums8 = kquants.quantize_q8_K(x)
    vec_dot = getattr(kquants, f"vec_dot_{qtype[:2].lower()}_K_q8_K")
    want = np.array([[vec_dot(w[r], d8[t], qs8[t], bsums8[t]) for r in range(w.shape[0])] for t in range(3)],
                    dtype=np.float32)
    got = kernels.matvec(w, qtype, x)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("qtype", K_TYPES)
def test_results_do_not_depend_on_threads(qtype):
    import numba

    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 512)).astype(np.float32)
    imatrix = rng.random(512).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kernels.quantize(x, qtype, imatrix=imatrix)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = kernels.quantize(x, qtype, imatrix=imatrix)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize("qtype", K_TYPES + ["Q8_K"])
def test_partial_block_is_refused(qtype):
    with pytest.raises(ShapeError, match="256"):
        kernels.quantize(np.zeros((2, 300), np.float32), qtype)
