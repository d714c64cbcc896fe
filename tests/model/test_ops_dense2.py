"""The element-wise ops the dense architectures added: LayerNorm (starcoder2, command-r's per-head
q/k norms), ggml-cpu's float16 GELU table, xIELU (apertus), ReLU^2 (arcee), soft-capping (gemma2)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from llmtk.model import ops


def _layer_norm_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    c = x - x.mean(axis=-1, keepdims=True)
    return c / np.sqrt((c * c).mean(axis=-1, keepdims=True) + eps) * w + b


def test_layer_norm_matches_float64_reference():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 48)) * 3 + 1.5).astype(np.float32)
    w, b = rng.standard_normal(48).astype(np.float32), rng.standard_normal(48).astype(np.float32)
    got = ops.layer_norm(x, w, b, 1e-5)
    assert got.dtype == np.float32
    # float32 arithmetic on values of order 1: a few ulp
    np.testing.assert_allclose(got, _layer_norm_ref(x, w, b, 1e-5), rtol=0, atol=2e-5)
    np.testing.assert_allclose(ops.layer_norm(x, w, None, 1e-5), _layer_norm_ref(x, w, 0.0, 1e-5), rtol=0, atol=2e-5)


def test_layer_norm_per_head_weights_and_threads_agree():
    """command-r's q norm: one weight row per head over (tokens, heads, head_dim); split over
    threads it gives the same bytes."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((40, 4, 8)).astype(np.float32)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    got = ops.layer_norm(q, w, None, 1e-5)
    want = np.stack([_layer_norm_ref(q[:, h], w[h], 0.0, 1e-5) for h in range(4)], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    with ThreadPoolExecutor(2) as pool:
        split = ops.layer_norm(q, w, None, 1e-5, ops.Rows(pool, 2))
    assert np.array_equal(split, got)


def test_gelu_f16_is_the_table_ggml_reads():
    """ggml_vec_gelu_f32 with GGML_GELU_FP16: 0 at or below -10, x at or above 10, else the f16
    rounding of GELU at the f16 rounding of x."""
    x = np.concatenate([np.linspace(-12, 12, 20001), [-10.0, 10.0, 0.0, -0.0]]).astype(np.float32)
    got = ops.act("gelu_f16", x)
    h = x.astype(np.float16).astype(np.float64)
    table = (0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * h * (1 + 0.044715 * h * h)))).astype(np.float16)
    want = np.where(x <= -10, 0.0, np.where(x >= 10, x, table.astype(np.float32)))
    # ggml computes the table in float32: a float16 step apart at most where float32 and float64
    # round a value near a float16 boundary apart, and near x = -5 the float32 1 + tanh(.) keeps
    # multiples of 2^-24 (a few float16 subnormals) where float64 has less
    step = np.abs(np.spacing(want.astype(np.float16)).astype(np.float32))
    assert np.all(np.abs(got - want) <= step + 2.4e-7)
    away = x > -3  # left of it GELU is a difference of near-equal float32 values
    assert np.mean(got[away] == want[away]) > 0.999
    # the float32 GELU differs by the input's float16 rounding (GELU' <= 1.13) and the output's
    bound = 1.13 * np.abs(x - x.astype(np.float16).astype(np.float32)) + step + 2.4e-7
    assert np.all(np.abs(ops.act("gelu_tanh", x) - got) <= bound)


def test_xielu_and_relu_sqr():
    x = np.linspace(-6, 6, 1001).astype(np.float32)
    a_n, a_p, beta, eps = 0.8, 0.7, 0.5, -1e-6
    want = np.where(x > 0, a_p * x.astype(np.float64) ** 2 + beta * x,
                    (np.expm1(np.minimum(x.astype(np.float64), eps)) - x) * a_n + beta * x)
    np.testing.assert_allclose(ops.act("xielu", x, (a_n, a_p, beta, eps)), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ops.act("relu_sqr", x), np.maximum(x, 0) ** 2)
    # ggml_compute_softplus_f32: the input itself above 20
    assert ops.softplus(25.0) == np.float32(25.0) and abs(ops.softplus(0.0) - np.log(2)) < 1e-7


def test_softcap():
    s = np.array([[-200.0, -50.0, 0.0, 1.0, 50.0, 200.0]], np.float32)
    ops.softcap_(s, 50.0)
    np.testing.assert_allclose(s, 50 * np.tanh(np.array([[-4, -1, 0, 0.02, 1, 4]])), rtol=1e-6)
