"""Activation rounding (llmtk.kernels.activations) against llmtk's quantize/dequantize, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk import kernels
from llmtk.ggufio.constants import GGMLType
from llmtk.kernels.activations import round_activations, round_to_storage


def _split_unevenly(n, fn):
    # rows in uneven chunks, as a thread pool would hand them out
    bounds = [0, 1, 3, n // 2, n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            fn(a, b)


def test_bf16_rounding_equals_ggml_fp32_to_bf16():
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 100
    x[:2] = [0.0, -0.0]
    x[2:6] = np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x7F7FFFFF], np.uint32).view(np.float32)  # ties, max
    got = x.copy()
    round_to_storage(got, "bf16")
    ref = kernels.dequantize(kernels.quantize(x, GGMLType.BF16), GGMLType.BF16, x.shape)
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_bf16_rounding_keeps_nan_quiet_and_inf():
    # ggml_compute_fp32_to_bf16: a NaN keeps its top bits with the quiet bit set; no error raised
    x = np.array([0x7F800001, 0xFF800000, 0x7F800000, 0x3F800000], np.uint32).view(np.float32)
    got = x.copy()
    round_to_storage(got, "bf16")
    assert got.view(np.uint32).tolist() == [0x7FC00000, 0xFF800000, 0x7F800000, 0x3F800000]


def test_f16_rounding_is_ieee_half():
    x = np.random.default_rng(1).standard_normal(4096).astype(np.float32)
    got = x.copy()
    round_to_storage(got, "f16")
    assert np.array_equal(got, x.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f32"])
def test_rounding_a_strided_cache_slice_touches_only_the_slice(dtype):
    # a KV-cache slice (n_head_kv, n_ctx, head_dim)[:, p0:p1]: heads contiguous, the whole not
    cache = np.random.default_rng(2).standard_normal((3, 10, 64)).astype(np.float32) * 10
    before = cache.copy()
    round_to_storage(cache[:, 4:7], dtype)
    want = before[:, 4:7].copy()
    round_to_storage(want, dtype)
    assert np.array_equal(cache[:, 4:7].view(np.uint32), want.view(np.uint32))
    rest = np.ones(10, bool)
    rest[4:7] = False
    assert np.array_equal(cache[:, rest].view(np.uint32), before[:, rest].view(np.uint32))
    x = before[:, :, ::2]  # neither contiguous nor made of contiguous heads
    got = x.copy()
    round_to_storage(x, dtype)
    round_to_storage(got, dtype)
    assert np.array_equal(x.view(np.uint32), got.view(np.uint32))


def test_unknown_storage_type_is_refused():
    with pytest.raises(ValueError, match="q8_0"):
        round_to_storage(np.zeros(4, np.float32), "q8_0")


def test_round_activations_follows_the_vec_dot_type():
    x = np.random.default_rng(3).standard_normal((5, 256)).astype(np.float32)
    assert round_activations(x, GGMLType.F32) is x
    np.testing.assert_array_equal(round_activations(x, GGMLType.F16), x.astype(np.float16).astype(np.float32))
    x[0, :40] = 0.0  # an all-zero block
    x[1, 7] = 0.5 / 127  # ties for roundf
    for vdt in ("Q8_0", "Q8_1", "Q8_K", "BF16"):
        want = kernels.dequantize(kernels.quantize(x, vdt), vdt, x.shape)
        np.testing.assert_array_equal(round_activations(x, GGMLType[vdt]), want)
    x96 = x[:, :96]
    assert round_activations(x96, GGMLType.Q8_K) is x96  # 96 is no Q8_K row: unchanged


def test_q8_K_hand_block():
    # one block whose largest magnitude is -2 (first of two): iscale = -127 / -2 = 63.5,
    # d = 1 / 63.5; q = round_half_even(63.5 x), at most 127
    x = np.zeros((1, 256), np.float32)
    x[0, :4] = [-2.0, 2.0, 1.0, 0.5]
    iscale = np.float32(63.5)
    q = np.minimum(np.rint(x * iscale), np.float32(127.0))
    want = q * (np.float32(1.0) / iscale)
    got = round_activations(x, GGMLType.Q8_K)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got[0, 2] == np.float32(64.0) / iscale  # 63.5 rounds half to even: 64


def test_q8_0_activations_round_as_ggml_cpu_on_x86():
    """quantize_row_q8_0 of ggml-cpu's x86 code: scale 127/amax and half-to-even rounding (the
    reference C code, which llmtk's quantizer follows, uses 1/d and roundf)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 96)).astype(np.float32)
    x[0, :32] = np.arange(32, dtype=np.float32) - 15.5   # amax 15.5: many x*127/amax near halves
    x[1, :32] = 0.0
    x[1, 0], x[1, 1], x[1, 2] = 127.0, 2.5, -3.5        # id = 1: exact ties 2.5 -> 2, -3.5 -> -4
    blocks = x.reshape(64, 3, 32)
    amax = np.abs(blocks).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    d16 = (amax / np.float32(127.0)).astype(np.float16).astype(np.float32)
    want = (np.rint(blocks * inv) * d16).reshape(64, 96)
    got = round_activations(x, GGMLType.Q8_0)
    np.testing.assert_array_equal(got, want)
    assert got[1, 1] == 2.0 and got[1, 2] == -4.0


@pytest.mark.parametrize("vdt", ["F16", "Q8_0", "Q8_K"])
def test_row_splitting_does_not_change_the_bits(vdt):
    x = np.random.default_rng(5).standard_normal((40, 512)).astype(np.float32)
    inline = round_activations(x, GGMLType[vdt])
    split = round_activations(x, GGMLType[vdt], _split_unevenly)
    assert np.array_equal(inline.view(np.uint32), split.view(np.uint32))
