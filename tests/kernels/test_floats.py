"""F32, F16 and BF16 against ggml's own bytes and floats, its rounding and NaN rules."""
from __future__ import annotations

import numpy as np
import pytest
from dotcheck import check_matvec

from llmtk import kernels

FLOAT_TYPES = ["F16", "BF16"]


def _all_float32_samples() -> np.ndarray:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    # halfway cases and the edges of the fp16 range (subnormals, overflow to inf)
    halves = (np.arange(0, 0x10000, dtype=np.uint32) << 13) | np.uint32(1 << 12)
    bits = np.concatenate([bits, halves, halves | np.uint32(0x80000000)])
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


def test_f16_is_ieee_round_to_nearest_even():
    # ggml_compute_fp32_to_fp16 is IEEE binary16 RNE for finite inputs, which NumPy implements
    x = _all_float32_samples()
    ours = kernels.quantize(x[None, :], "F16").view(np.uint16)[0]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(ours, x.astype(np.float16).view(np.uint16))
    # and the table decoding is exact for every half that is not NaN
    h = np.arange(0x10000, dtype=np.uint16)
    finite = np.isfinite(h.view(np.float16))
    back = kernels.dequantize(h.view(np.uint8), "F16", (0x10000,))
    np.testing.assert_array_equal(back[finite], h.view(np.float16)[finite].astype(np.float32))


def test_f16_decoding_matches_the_table_for_every_half():
    # the vectorized bit arithmetic of the F16 dequantizer against the 65536-entry table built
    # from ggml_compute_fp16_to_fp32 in NumPy (which the other kernels use), NaNs included
    from llmtk.kernels._numeric import FP16_TO_FP32

    h = np.arange(0x10000, dtype=np.uint16)
    back = kernels.dequantize(h.view(np.uint8), "F16", (0x10000,))
    np.testing.assert_array_equal(back.view(np.uint32), FP16_TO_FP32.view(np.uint32))


def test_bf16_rounding_hand_values():
    # 1 + 2^-8 is a tie -> even (1.0); 1 + 3*2^-8 is a tie -> up; 1 + 2^-8 + 2^-20 rounds up
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5, 3.4e38], dtype=np.float32)
    got = kernels.quantize(x[None, :], "BF16").view(np.uint16)[0]
    np.testing.assert_array_equal(got, [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020, 0x7F80])


def test_bf16_nan_is_forced_quiet():
    # ggml_compute_fp32_to_bf16: (bits >> 16) | 64 for NaNs; the public API refuses NaN input,
    # so the kernel is called directly
    from llmtk.kernels.floats import quantize_bf16

    nans = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0x7FA12345], dtype=np.uint32).view(np.float32)
    got = quantize_bf16(nans[None, :]).view(np.uint16)[0]
    np.testing.assert_array_equal(got, [0x7FC0, 0xFFC0, 0x7FC0, 0x7FE1])


def test_f16_nan_and_overflow():
    from llmtk.kernels.floats import quantize_f16

    x = np.array([np.nan, -np.nan, np.inf, 65520.0, 65519.0, 1e-8, -0.0], dtype=np.float32)
    got = quantize_f16(x[None, :]).view(np.uint16)[0]
    np.testing.assert_array_equal(got, [0x7E00, 0xFE00, 0x7C00, 0x7C00, 0x7BFF, 0x0000, 0x8000])


def test_f32_round_trip():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    q = kernels.quantize(x, "F32")
    assert q.shape == (3, 160) and q.dtype == np.uint8
    np.testing.assert_array_equal(kernels.dequantize(q, "F32", x.shape), x)


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16"])
def test_matvec(qtype):
    check_matvec(qtype, cols=96)
