"""TQ1_0 and TQ2_0 against ggml's bytes and floats, a hand block and the Q8_K dot products."""
from __future__ import annotations

import numpy as np
import pytest
from dotcheck import check_matvec

from llmtk import kernels
from llmtk.errors import ShapeError

TERNARY_TYPES = ["TQ1_0", "TQ2_0"]


@pytest.mark.parametrize("qtype", TERNARY_TYPES)
def test_ternary_round_trip_is_exact(qtype):
    # values in {-d, 0, d} with d a power of two survive both packings unchanged
    rng = np.random.default_rng(6)
    x = (rng.integers(-1, 2, (3, 512)) * 0.25).astype(np.float32)
    x[:, 0] = 0.25
    q = kernels.quantize(x, qtype)
    assert q.shape == (3, 2 * (54 if qtype == "TQ1_0" else 66))
    np.testing.assert_array_equal(kernels.dequantize(q, qtype, x.shape), x)


def test_tq2_0_hand_block():
    # codes are trit + 1 in 2 bits, value m + 32n of each 128 in byte m, bits 2n
    x = np.zeros(256, np.float32)
    x[0], x[32], x[64], x[96] = 1.0, -1.0, 0.0, 1.0
    q = kernels.quantize(x[None, :], "TQ2_0")[0]
    assert q[0] == (2 | 0 << 2 | 1 << 4 | 2 << 6)
    assert q[64:66].tobytes() == b"\x00\x3c"  # d = 1.0


def test_bad_cols():
    with pytest.raises(ShapeError, match="TQ1_0"):
        kernels.quantize(np.zeros((1, 576), np.float32), "TQ1_0")


@pytest.mark.parametrize("qtype", TERNARY_TYPES)
def test_matvec(qtype):
    check_matvec(qtype, cols=512)
