"""Grid-based i-quants against ggml's own bytes and floats (../shared/quants/ggml-quants.npz)."""
from __future__ import annotations

import numpy as np
import pytest
from reference import check_dequantize, check_quantize, parametrize_reference

IQ_TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]


@parametrize_reference(IQ_TYPES)
def test_dequantize_matches_ggml(ggml_quants, qtype, mode, case, cols):
    check_dequantize(ggml_quants, qtype, mode, case, cols)


@parametrize_reference(IQ_TYPES)
def test_quantize_matches_ggml(ggml_quants, qtype, mode, case, cols):
    check_quantize(ggml_quants, qtype, mode, case, cols)
