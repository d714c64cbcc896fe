"""Integer dot products of int8 blocks (llmtk.kernels.int8dot) against float64 references."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk import kernels
from llmtk.ggufio.constants import GGMLType
from llmtk.kernels import int8dot
from llmtk.kernels import unpack as up
from llmtk.kernels.activations import round_activations

AFFINE = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"]

pytestmark = pytest.mark.skipif(not int8dot.AVAILABLE, reason="this CPU has no AVX2: the int8 kernels are not used")


def _x(n: int, cols: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, cols)).astype(np.float32)
    x[0, :32] = 0.0                      # an all-zero block (scale 0)
    x[-1, 40] = 300.0                    # one outlier dominating its block
    return x


@pytest.mark.parametrize("vdt", ["Q8_0", "Q8_1", "Q8_K"])
def test_int8_activations_are_round_activations_exactly(vdt):
    x = _x(3, 512, seed=1)
    xa = int8dot.Int8Activations(x, GGMLType[vdt])
    assert xa.q.dtype == np.int8 and np.abs(xa.q.astype(np.int32)).max() <= 127
    got = xa.q.astype(np.float32) * np.repeat(xa.d, xa.block, axis=1)
    np.testing.assert_array_equal(got, round_activations(x, GGMLType[vdt]))


def test_hand_block_sums_exact_integers():
    # one Q8_0 row of two blocks: q = 127 and -128 against x rounded to +-127 steps
    w = np.zeros((1, 64), np.float32)
    w[0, :32], w[0, 32:] = 1.0, -1.0
    raw = kernels.quantize(w, "Q8_0")
    x = np.ones((1, 64), np.float32)
    got = int8dot.Q8_0Blocks([raw], [1]).matvec(x)
    assert got[0, 0] == np.float32(0.0)  # 32 * 127 * d * dx - 32 * 127 * d * dx, exactly
    x[0, 32:] = -1.0
    want = np.float64(kernels.dequantize(raw, "Q8_0", (1, 64))[0]) @ round_activations(x, GGMLType.Q8_0)[0]
    assert abs(float(int8dot.Q8_0Blocks([raw], [1]).matvec(x)[0, 0]) - want) <= 1e-6 * abs(want)


@pytest.mark.parametrize("qtype", AFFINE)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("seed", [0, 7])
def test_int8_matvec_matches_rounded_float64_product(qtype, n, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((37, 768)) * 0.05).astype(np.float32)
    raw = kernels.quantize(w, qtype)
    vdt = kernels.kernel_for(GGMLType[qtype]).vec_dot_type
    x = _x(n, 768, seed + 1)
    want = round_activations(x, vdt).astype(np.float64) @ kernels.dequantize(raw, qtype, w.shape).astype(np.float64).T
    aff = up.unpack(raw, GGMLType[qtype], *w.shape)
    got = aff.matvec_int8(x, vdt)
    scale = np.abs(want).max()
    # integer sums per block are exact: only the float32 sums of block products differ
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)
    if qtype == "Q8_0":  # read in place from the blocks: the same arithmetic, bit for bit
        blocks = int8dot.Q8_0Blocks([raw[:20], raw[20:]], [20, 17])
        np.testing.assert_array_equal(blocks.matvec(x), got)


def test_results_do_not_depend_on_the_thread_count():
    import numba

    w = (np.random.default_rng(3).standard_normal((300, 512)) * 0.05).astype(np.float32)
    raw = kernels.quantize(w, "Q4_K")
    aff = up.unpack(raw, GGMLType.Q4_K, *w.shape)
    x = _x(2, 512, 4)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = aff.matvec_int8(x, GGMLType.Q8_K)
        numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS))
        np.testing.assert_array_equal(aff.matvec_int8(x, GGMLType.Q8_K), one)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("cols", [64, 96, 600])
def test_f16_matvec_vector_loop_and_tail(cols):
    # dot_f16 takes whole 32-value chunks; the kernel finishes the row's tail itself
    rng = np.random.default_rng(cols)
    w = rng.standard_normal((40, cols)).astype(np.float16)
    x = rng.standard_normal((2, cols)).astype(np.float32)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    got = up.matvec_f16([w[:25].view(np.uint8), w[25:].view(np.uint8)], x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_a_portable_numba_target_keeps_the_float_kernels():
    # NUMBA_CPU_NAME=generic (portable caches) compiles without AVX2: the intrinsics would not
    # select, so the int8 path must stay off
    import subprocess
    import sys

    code = "from llmtk.kernels import int8dot; print(int8dot.AVAILABLE)"
    for env, want in (({"NUMBA_CPU_NAME": "generic"}, "False"),
                      ({"NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": "+avx2,+fma"}, "True")):
        import os

        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == want, env
