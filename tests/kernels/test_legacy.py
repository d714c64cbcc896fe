"""Legacy types (Q4_0 .. Q8_1, Q1_0, Q2_0) against ggml's bytes and floats, hand blocks, errors,
thread independence and the Q8_0/Q8_1 dot products."""
from __future__ import annotations

import numpy as np
import pytest
from dotcheck import check_matvec
from reference import reference_cases

from llmtk import kernels
from llmtk.errors import InputError, ShapeError, UnsupportedError

LEGACY_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q1_0", "Q2_0"]


def test_imatrix_paths_are_covered(ggml_quants):
    # the imatrix outputs differ from the plain ones exactly for the four types whose
    # quantize_*_impl uses the weights, so both code paths are really held to ggml
    for q in LEGACY_TYPES:
        assert {m for m, _, _ in reference_cases(ggml_quants, q)} == {"plain", "imatrix"}
        key = "output/{}/{}/gauss/256"
        differs = not np.array_equal(ggml_quants[key.format(q, "plain")], ggml_quants[key.format(q, "imatrix")])
        assert differs == (q in ("Q4_0", "Q4_1", "Q5_0", "Q5_1")), q


def test_q8_0_hand_block():
    # amax 127 -> d = 1 (fp16 0x3C00); values round half away from zero
    x = np.zeros(32, dtype=np.float32)
    x[:6] = [127.0, -2.5, 2.5, 0.49, -0.5, 3.0]
    q = kernels.quantize(x[None, :], "Q8_0")[0]
    assert q[:2].tobytes() == b"\x00\x3c"
    np.testing.assert_array_equal(q[2:8].view(np.int8), [127, -3, 3, 0, -1, 3])


def test_q4_0_hand_block():
    # max by magnitude is -8 -> d = 1; code = x + 8 truncated after + 0.5, clamped to 15
    x = np.arange(-8, 24, dtype=np.float32) % 16 - 8  # -8..7, twice
    x[16] = -8.0
    q = kernels.quantize(x[None, :], "Q4_0")[0]
    assert q[:2].tobytes() == b"\x00\x3c"
    np.testing.assert_array_equal(kernels.dequantize(q, "Q4_0", (32,)), x)


def test_q8_1_sum_field():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    q = kernels.quantize(x, "Q8_1").reshape(2, 2, 36)
    d = q[:, :, 0:2].copy().view(np.float16).astype(np.float32)[..., 0]
    s = q[:, :, 2:4].copy().view(np.float16).astype(np.float32)[..., 0]
    qs = q[:, :, 4:].view(np.int8).astype(np.int32)
    # s is rounded from the float32 scale amax / 127, not from the stored fp16 d
    d32 = np.abs(x.reshape(2, 2, 32)).max(axis=2) / np.float32(127.0)
    np.testing.assert_array_equal(s, (qs.sum(axis=2).astype(np.float32) * d32).astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(kernels.dequantize(q, "Q8_1", x.shape).reshape(2, 2, 32), qs * d[..., None])


@pytest.mark.parametrize("qtype", LEGACY_TYPES)
def test_results_do_not_depend_on_thread_count(qtype):
    import numba

    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 256)).astype(np.float32)
    imat = rng.random(256).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kernels.quantize(x, qtype, imatrix=imat)
        numba.set_num_threads(before)
        many = kernels.quantize(x, qtype, imatrix=imat)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)
    # and a row quantized alone equals the same row in a batch
    np.testing.assert_array_equal(kernels.quantize(x[3:4], qtype, imatrix=imat), many[3:4])


def test_bad_cols():
    with pytest.raises(ShapeError, match="Q4_0"):
        kernels.quantize(np.zeros((2, 48), np.float32), "Q4_0")
    with pytest.raises(ShapeError, match="Q1_0"):
        kernels.quantize(np.zeros((2, 576), np.float32), "Q1_0")  # 576 is not a multiple of 128
    with pytest.raises(ShapeError):
        kernels.dequantize(np.zeros(17, np.uint8), "Q4_0", (32,))


def test_nan_and_inf_input():
    x = np.zeros((2, 64), np.float32)
    x[1, 5] = np.nan
    with pytest.raises(InputError, match="row 1, col 5"):
        kernels.quantize(x, "Q8_0")
    x[1, 5] = np.inf
    with pytest.raises(InputError):
        kernels.quantize(x, "Q4_1")
    with pytest.raises(InputError):
        kernels.quantize(np.zeros((1, 32), np.float32), "Q4_0", imatrix=np.full(32, np.nan, np.float32))


def test_unknown_type():
    with pytest.raises(UnsupportedError, match="Q4_2"):
        kernels.quantize(np.zeros((1, 32), np.float32), "Q4_2")
    with pytest.raises(UnsupportedError):
        kernels.quantize(np.zeros((1, 32), np.float32), 4)  # an id ggml removed


@pytest.mark.parametrize("qtype", LEGACY_TYPES)
def test_matvec(qtype):
    check_matvec(qtype, cols=256)
