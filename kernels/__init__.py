"""numba kernels: quantize, dequantize and quantized dot products for every ggml type.

Plain arrays in, plain arrays out. `quantize`/`dequantize` validate and dispatch to the family
module registered for the type (see `_registry`), bit-exact with ggml's reference C code.
"""
from __future__ import annotations

from ._registry import (
    QuantKernel,
    dequantize,
    kernel_for,
    matvec,
    quantize,
    register,
    registered_types,
    requires_imatrix,
    uses_imatrix,
    row_size,
)

__all__ = ["QuantKernel", "dequantize", "kernel_for", "matvec", "quantize", "register",
           "registered_types", "requires_imatrix", "row_size", "uses_imatrix"]
