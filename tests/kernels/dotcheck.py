"""Helpers for the quantized dot products: hold `kernels.matvec` to dequantize-then-dot."""
from __future__ import annotations

import numpy as np


def check_matvec(qtype: str, cols: int, rows: int = 12, n: int = 3, seed: int = 0) -> None:
    """Two tolerances, both relative to sum |x_i| |w_i| (the scale of the float32 rounding):

    - tight (1e-5; 2e-3 for Q8_1 activations, whose per-block sum s is stored in fp16): matvec
      against float64 dot products of the dequantized weights and the dequantized activations
      (x quantized to the type's vec_dot_type), i.e. only the kernel's own float32 sums differ;
    - loose (2e-2): against the float activations themselves (8-bit activation rounding).
    """
    from llmtk import kernels

    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    x[0, :cols // 2] *= 30.0  # blocks of different scales
    w = kernels.quantize(W, qtype)
    out = kernels.matvec(w, qtype, x)
    assert out.shape == (n, rows) and out.dtype == np.float32
    deq = kernels.dequantize(w, qtype, W.shape).astype(np.float64)

    vdt = kernels.kernel_for(qtype).vec_dot_type
    assert vdt is not None
    xa = kernels.dequantize(kernels.quantize(x, vdt), vdt, x.shape).astype(np.float64)
    scale = np.abs(xa) @ np.abs(deq).T
    tight = 2e-3 if vdt.name == "Q8_1" else 1e-5
    err = np.abs(out - xa @ deq.T)
    assert np.all(err <= tight * scale + 1e-30), (qtype, float((err / scale).max()))

    scale_x = np.abs(x.astype(np.float64)) @ np.abs(deq).T
    err_x = np.abs(out - x.astype(np.float64) @ deq.T)
    assert np.all(err_x <= 2e-2 * scale_x), (qtype, float((err_x / scale_x).max()))

    # one activation row alone gives the same numbers (rows are independent)
    np.testing.assert_array_equal(kernels.matvec(w, qtype, x[1]), out[1])
