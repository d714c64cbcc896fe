"""Weights of a GGUF model as float32, dequantized on demand and cached under a memory budget.

Prompt processing multiplies whole batches by a layer's weights, so one float32 copy per tensor
(dequantized once, then BLAS sgemm through NumPy) beats quantized dot products; when the model's
float32 size exceeds the budget, tensors beyond it are dequantized again on every use.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmtk.constants import GGMLType
from llmtk.errors import ShapeError

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 2 << 30  # bytes of float32 weights kept dequantized


def open_reader(path: "str | Path | Any") -> Any:
    """llmtk's GGUFReader for a path; an already open reader is returned as it is."""
    if not isinstance(path, (str, Path)):
        return path
    try:
        from llmtk.gguf_file import GGUFReader
    except ModuleNotFoundError:  # TEMPORARY until llmtk.gguf_file lands
        return _GGUFPyReader(path)
    return GGUFReader(path)


class _TensorInfo:
    def __init__(self, name, qtype, shape, n_bytes):
        self.name, self.qtype, self.shape, self.n_bytes = name, qtype, shape, n_bytes


class _GGUFPyReader:
    """TEMPORARY adapter over gguf-py's reader with llmtk.gguf_file's API (kv, tensors, raw, array)."""

    def __init__(self, path):
        import gguf
        self._r = gguf.GGUFReader(str(path))
        self.kv = {k: f.contents() for k, f in self._r.fields.items() if not k.startswith("GGUF.")}
        self._t = {t.name: t for t in self._r.tensors}
        self.tensors = {t.name: _TensorInfo(t.name, GGMLType(int(t.tensor_type)),
                                            tuple(int(x) for x in reversed(t.shape)), int(t.n_bytes))
                        for t in self._r.tensors}

    def raw(self, name):
        return self._t[name].data.reshape(-1).view(np.uint8)

    def array(self, name):
        info = self.tensors[name]
        d = self._t[name].data
        if info.qtype in (GGMLType.F32, GGMLType.F16):
            return d.reshape(info.shape)
        return d

    def close(self):
        pass


def dequantize(raw: npt.NDArray[np.uint8], qtype: GGMLType, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """float32 of `shape` from raw `qtype` bytes through llmtk's kernels."""
    from llmtk.kernels import dequantize as deq
    from llmtk.errors import UnsupportedError
    try:
        return deq(raw, qtype, shape)
    except UnsupportedError:  # TEMPORARY: until llmtk's kernels cover the type
        import gguf
        out = gguf.quants.dequantize(np.ascontiguousarray(raw).reshape(-1), gguf.GGMLQuantizationType(int(qtype)))
        return np.asarray(out, dtype=np.float32).reshape(shape)


class Weights:
    """Float32 views of a reader's tensors, cached while they fit `budget` bytes."""

    def __init__(self, reader: Any, budget: int = DEFAULT_BUDGET):
        self.reader = reader
        self.budget = int(budget)
        self.used = 0
        self._cache: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.reader.tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.reader.tensors[name].shape)

    def get(self, name: str) -> npt.NDArray[np.float32]:
        """The whole tensor as float32 in NumPy order (rows = output features)."""
        w = self._cache.get(name)
        if w is not None:
            return w
        info = self.reader.tensors[name]
        if info.qtype == GGMLType.F32:
            w = self.reader.array(name).reshape(info.shape)  # zero-copy from the memory map
            self._cache[name] = w
            return w
        w = dequantize(self.reader.raw(name), info.qtype, tuple(info.shape))
        if self.used + w.nbytes <= self.budget:
            self._cache[name] = w
            self.used += w.nbytes
        return w

    def rows(self, name: str, ids: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
        """Selected rows of a 2-D tensor (embedding lookup) without dequantizing the rest."""
        w = self._cache.get(name)
        if w is not None:
            return w[ids]
        info = self.reader.tensors[name]
        n_rows, cols = info.shape
        if ids.size and (ids.min() < 0 or ids.max() >= n_rows):
            bad = ids[(ids < 0) | (ids >= n_rows)][0]
            raise ShapeError(f"token id {int(bad)} is outside the vocabulary of {n_rows} rows of {name}")
        raw = self.reader.raw(name).reshape(n_rows, -1)
        return dequantize(np.ascontiguousarray(raw[ids]), info.qtype, (len(ids), cols))

    def expert(self, name: str, e: int) -> npt.NDArray[np.float32]:
        """Expert `e`'s (rows, cols) matrix of a 3-D (n_expert, rows, cols) tensor."""
        full = self._cache.get(name)
        if full is not None:
            return full[e]
        info = self.reader.tensors[name]
        n_exp, rows, cols = info.shape
        if self.used + 4 * n_exp * rows * cols <= self.budget:
            return self.get(name)[e]
        raw = self.reader.raw(name).reshape(n_exp * rows, -1)[e * rows:(e + 1) * rows]
        return dequantize(np.ascontiguousarray(raw), info.qtype, (rows, cols))
