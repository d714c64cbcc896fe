"""MXFP4 and NVFP4 against ggml's bytes and floats, scale encodings and the Q8_0 dot products."""
from __future__ import annotations

import numpy as np
import pytest
from dotcheck import check_matvec

from llmtk import kernels

FP4_TYPES = ["MXFP4", "NVFP4"]


def test_mxfp4_hand_block():
    # amax 6 -> e = floor(log2 6) - 2 + 127 = 127, d = 2^-1 on the doubled e2m1 grid
    x = np.array([6.0, -6.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0] + [0.0] * 24, dtype=np.float32)
    q = kernels.quantize(x[None, :], "MXFP4")[0]
    assert q[0] == 127
    np.testing.assert_array_equal(kernels.dequantize(q, "MXFP4", (32,)), x)


def test_ue4m3_round_trip():
    from llmtk.kernels._numeric import fp32_to_ue4m3, ue4m3_to_fp32

    # every code below exponent 15 decodes (halved) and re-encodes to itself; ggml's encoder
    # maps everything at or above 2^8 to 0x7E (448), and decodes 0x7F as 0
    for code in range(1, 0x78):
        v = ue4m3_to_fp32(code) * np.float32(2.0)
        assert fp32_to_ue4m3(np.float32(v)) == code, code
    assert ue4m3_to_fp32(0x7F) == 0.0
    assert fp32_to_ue4m3(np.float32(1e9)) == 0x7E  # saturates at 448
    assert fp32_to_ue4m3(np.float32(0.0)) == 0


def test_e8m0_half():
    from llmtk.kernels._numeric import e8m0_to_fp32_half

    assert e8m0_to_fp32_half(0) == np.float32(2.0 ** -128)
    assert e8m0_to_fp32_half(1) == np.float32(2.0 ** -127)
    assert e8m0_to_fp32_half(127) == np.float32(0.5)
    assert e8m0_to_fp32_half(254) == np.float32(2.0 ** 126)


@pytest.mark.parametrize("qtype", FP4_TYPES)
def test_matvec(qtype):
    check_matvec(qtype, cols=256)
