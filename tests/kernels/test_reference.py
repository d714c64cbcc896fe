"""Every registered kernel against ggml's own bytes and floats (../shared/quants/ggml-quants.npz).

Parametrised over `llmtk.kernels.registered_types()`, so a new kernel is held to ggml as soon as
it registers; a type the reference file does not cover shows up as a skip with the reason.
"""
from __future__ import annotations

import numpy as np
import pytest
from reference import check_dequantize, check_quantize, reference_params

from llmtk import kernels

# types ggml has no standalone reference for: F32 is a copy, Q8_1 and Q8_K are activation-only
_QUANTIZABLE = [t.name for t in kernels.registered_types() if kernels.kernel_for(t).quantize is not None]
_ALL = [t.name for t in kernels.registered_types()]


@pytest.mark.parametrize("qtype,mode,case,cols", reference_params(_QUANTIZABLE, "quantize"))
def test_quantize_matches_ggml(ggml_quants, qtype, mode, case, cols):
    check_quantize(ggml_quants, qtype, mode, case, cols)


@pytest.mark.parametrize("qtype,mode,case,cols", reference_params(_ALL, "dequantize"))
def test_dequantize_matches_ggml(ggml_quants, qtype, mode, case, cols):
    check_dequantize(ggml_quants, qtype, mode, case, cols)


@pytest.mark.parametrize("qtype", [t.name for t in kernels.registered_types()
                                   if kernels.kernel_for(t).quantize is not None and not kernels.requires_imatrix(t)])
def test_uses_imatrix_says_whether_the_bytes_depend_on_it(qtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    w = (rng.random(256) * 3 + 0.01).astype(np.float32)
    changed = not np.array_equal(kernels.quantize(x, qtype), kernels.quantize(x, qtype, imatrix=w))
    assert changed == kernels.uses_imatrix(qtype)
