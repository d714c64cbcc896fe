"""Registry of quant kernels keyed by ggml type, and the validating public API around them.

Family modules (`floats`, `legacy`, `kquants`, `ternary`, `fp4`, `iq4`, `iquants.iq2`, ...) hold
numba kernels and call `register()` at import. `KERNELS` is an `llmtk.registry.Registry` whose
entries start as `Lazy` family imports, so `import llmtk.kernels` compiles nothing and lists every
type; the first lookup of a type imports its family, which replaces the entry with the kernels.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import numpy.typing as npt

from llmtk.errors import InputError, ShapeError, UnsupportedError
from llmtk.ggufio.constants import GGMLType, parse_ggml_type
from llmtk.ggufio.constants import row_size as _row_size
from llmtk.registry import Lazy, Registry

# (rows, cols) f32 C-contiguous, imatrix (cols,) f32 or None -> (rows, row_bytes) uint8
QuantizeFn = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
# (rows, row_bytes) uint8 C-contiguous, cols -> (rows, cols) f32
DequantizeFn = Callable[[np.ndarray, int], np.ndarray]
# weights (rows, row_bytes) uint8, activations (n, cols) f32 -> (n, rows) f32, through the
# type's vec_dot_type exactly as ggml's CPU backend quantizes activations
MatvecFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

# family module (under llmtk.kernels) -> the types it registers; one row per family
_FAMILIES: dict[str, tuple[str, ...]] = {
    "floats": ("F32", "F16", "BF16"),
    "legacy": ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q1_0", "Q2_0"),
    "kquants": ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"),
    "ternary": ("TQ1_0", "TQ2_0"),
    "fp4": ("MXFP4", "NVFP4"),
    "iq4": ("IQ4_NL", "IQ4_XS"),
    "iquants.iq2": ("IQ2_XXS", "IQ2_XS", "IQ2_S"),
    "iquants.iq3": ("IQ3_XXS", "IQ3_S"),
    "iquants.iq1": ("IQ1_S", "IQ1_M"),
}

# ggml's `ggml_quantize_requires_imatrix`.
_REQUIRES_IMATRIX = frozenset({GGMLType.IQ2_XXS, GGMLType.IQ2_XS, GGMLType.IQ1_S})
# types whose ggml quantizer takes no importance weights (quantize_q8_0, the ternary and FP4
# quantizers, Q1_0/Q2_0, and the float types): an imatrix changes none of their bytes
_IGNORES_IMATRIX = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q8_1,
                              GGMLType.Q8_K, GGMLType.TQ1_0, GGMLType.TQ2_0, GGMLType.MXFP4, GGMLType.NVFP4,
                              GGMLType.Q1_0, GGMLType.Q2_0})


def _type_key(name: str) -> str:
    # a user's spelling ("q4_k", "12", GGMLType.Q4_K) -> the registry key ("Q4_K"); names ggml
    # does not know stay as given so that the registry's error lists the valid ones
    try:
        return parse_ggml_type(name).name
    except Exception:
        return str(name)


@dataclass(frozen=True)
class QuantKernel:
    """The kernels of one ggml type. `quantize` is None for types ggml only dequantizes."""

    qtype: GGMLType
    dequantize: DequantizeFn
    quantize: QuantizeFn | None = None
    matvec: MatvecFn | None = None
    vec_dot_type: GGMLType | None = None


class _Family(Lazy):
    """A built-in type's entry until first use: importing its family module registers it."""

    __slots__ = ("qtype",)

    def __init__(self, family: str, qtype: str) -> None:
        super().__init__(f"llmtk.kernels.{family}:{qtype}")
        self.qtype = qtype

    def load(self) -> QuantKernel:
        importlib.import_module(self.module)
        if self.qtype not in _BUILTIN:
            raise RuntimeError(f"{self.module} did not register kernels for {self.qtype}")
        return _BUILTIN[self.qtype]


KERNELS: Registry[QuantKernel] = Registry("ggml type with llmtk kernels", normalize=_type_key,
                                          error=UnsupportedError)
for _family, _types in _FAMILIES.items():
    for _t in _types:
        KERNELS.add(_t, _Family(_family, _t))
del _family, _types, _t
_BUILTIN: dict[str, QuantKernel] = {}  # kernels of the types in _FAMILIES, filled by their imports


def register(qtype: str | int | GGMLType, *, dequantize: DequantizeFn, quantize: QuantizeFn | None = None,
             matvec: MatvecFn | None = None, vec_dot_type: str | int | GGMLType | None = None) -> None:
    """Register a type's kernels; registering a type twice is an error (ValueError)."""
    t = parse_ggml_type(qtype)
    vdt = parse_ggml_type(vec_dot_type) if vec_dot_type is not None else None
    kernel = QuantKernel(t, dequantize, quantize, matvec, vdt)
    entry = KERNELS.raw(t.name) if t.name in KERNELS else None
    if isinstance(entry, _Family) and t.name not in _BUILTIN:
        _BUILTIN[t.name] = kernel  # its family module's import, which the registry entry awaits
        return
    if entry is not None:
        raise ValueError(f"kernels for {t.name} are already registered")
    KERNELS.add(t.name, kernel)


def kernel_for(qtype: str | int | GGMLType) -> QuantKernel:
    """The registered kernels of `qtype`, importing its family module on first use; a type
    without kernels raises UnsupportedError listing those with kernels."""
    return KERNELS[_type_key(qtype)]


def registered_types() -> list[GGMLType]:
    """Every type with kernels, importing all family modules (for tests parametrised over them)."""
    return sorted(KERNELS[name].qtype for name in KERNELS.names())


def row_size(qtype: str | int | GGMLType, cols: int) -> int:
    """Bytes of one row of `cols` values of `qtype` (ggml's `ggml_row_size`)."""
    return _row_size(qtype, cols)


def requires_imatrix(qtype: str | int | GGMLType) -> bool:
    """True exactly where ggml's `ggml_quantize_requires_imatrix` is."""
    return parse_ggml_type(qtype) in _REQUIRES_IMATRIX


def uses_imatrix(qtype: str | int | GGMLType) -> bool:
    """Whether an importance matrix changes what `quantize` makes of this type."""
    return parse_ggml_type(qtype) not in _IGNORES_IMATRIX


def quantize(x: npt.ArrayLike, qtype: str | int | GGMLType,
             imatrix: npt.ArrayLike | None = None) -> npt.NDArray[np.uint8]:
    """Quantize `x` (rows, cols) float32 to `qtype` as ggml's `ggml_quantize_chunk` does.

    Returns uint8 (rows, row_size(qtype, cols)). `imatrix` is the (cols,) importance weights.
    """
    t = parse_ggml_type(qtype)
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ShapeError(f"quantize takes a (rows, cols) array, got shape {arr.shape}")
    rows, cols = arr.shape
    _row_size(t, cols)  # raises ShapeError on partial blocks
    k = kernel_for(t)
    if k.quantize is None:
        raise UnsupportedError(f"ggml type {t.name} cannot be quantized to, only read")
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(f"cannot quantize to {t.name}: non-finite value {arr[tuple(bad)]} at row {bad[0]}, col {bad[1]}")
    imat = None
    if imatrix is not None:
        imat = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if imat.shape != (cols,):
            raise ShapeError(f"imatrix has {imat.size} values, the rows have {cols} columns")
        if not np.isfinite(imat).all() or (imat < 0).any():
            raise InputError(f"imatrix for {t.name} has negative or non-finite values")
    elif requires_imatrix(t):
        raise InputError(f"quantizing to {t.name} requires an importance matrix (--imatrix)")
    if rows == 0:
        return np.zeros((0, _row_size(t, cols)), dtype=np.uint8)
    out = k.quantize(arr, imat)
    assert out.shape == (rows, _row_size(t, cols)) and out.dtype == np.uint8, (t.name, out.shape, out.dtype)
    return out


def dequantize(data: npt.ArrayLike, qtype: str | int | GGMLType,
               shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Dequantize raw `qtype` bytes to float32 of `shape` (NumPy order, last axis = row length)."""
    t = parse_ggml_type(qtype)
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ShapeError("dequantize needs a non-empty shape")
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    rs = _row_size(t, cols)
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if raw.size != rows * rs:
        raise ShapeError(f"{t.name} data of {raw.size} bytes does not hold shape {shape} "
                         f"({rows} rows of {rs} bytes)")
    k = kernel_for(t)
    out = k.dequantize(raw.reshape(rows, rs), cols)
    return out.reshape(shape)


def matvec(data: npt.ArrayLike, qtype: str | int | GGMLType, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """`x @ W.T` for quantized weights W (rows, row_bytes) and activations x (n, cols) float32.

    Activations are quantized to the type's `vec_dot_type` as ggml's CPU backend does, so
    results match ggml's quantized dot products rather than exact float math.
    """
    t = parse_ggml_type(qtype)
    k = kernel_for(t)
    xa = np.ascontiguousarray(x, dtype=np.float32)
    squeeze = xa.ndim == 1
    xa = xa.reshape(1, -1) if squeeze else xa
    w = np.ascontiguousarray(data).view(np.uint8)
    rs = _row_size(t, xa.shape[1])
    w = w.reshape(-1, rs)
    if k.matvec is None:
        deq = k.dequantize(w, xa.shape[1])
        out = xa @ deq.T
    else:
        out = k.matvec(w, xa)
    return out[0] if squeeze else out
