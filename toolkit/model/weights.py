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

from llmtk.ggufio.constants import GGMLType
from llmtk.errors import ShapeError
from llmtk.kernels.unpack import AFFINE_TYPES, Affine, matvec_f16, matvec_f32, unpack

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 2 << 30  # bytes of float32 weights kept dequantized


def open_reader(path: "str | Path | Any") -> Any:
    """llmtk's reader for a path: a GGUFReader, or a ShardedReader over every shard when `path` is
    any shard of a split model; an already open reader is returned as it is."""
    if not isinstance(path, (str, Path)):
        return path
    from llmtk.ggufio.shards import open_gguf
    return open_gguf(path)


def dequantize(raw: npt.NDArray[np.uint8], qtype: GGMLType, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """float32 of `shape` from raw `qtype` bytes through llmtk's kernels."""
    from llmtk.kernels import dequantize as deq
    return deq(raw, qtype, shape)


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

    def _load(self, name: str) -> npt.NDArray[np.float32]:
        info = self.reader.tensors[name]
        if info.qtype == GGMLType.F32:
            return self.reader.array(name).reshape(info.shape)  # zero-copy from the memory map
        return dequantize(self.reader.raw(name), info.qtype, tuple(info.shape))

    def _keep(self, key: str, w: npt.NDArray[np.float32], counted: bool = True) -> None:
        if not counted:
            self._cache[key] = w
        elif self.used + w.nbytes <= self.budget:
            self._cache[key] = w
            self.used += w.nbytes

    def get(self, name: str) -> npt.NDArray[np.float32]:
        """The whole tensor as float32 in NumPy order (rows = output features)."""
        w = self._cache.get(name)
        if w is None:
            w = self._load(name)
            self._keep(name, w, counted=self.reader.tensors[name].qtype != GGMLType.F32)
        return w

    def fused(self, names: tuple[str, ...]) -> npt.NDArray[np.float32]:
        """2-D tensors stacked along their rows (q|k|v, gate|up), so one sgemm serves them all."""
        if len(names) == 1:
            return self.get(names[0])
        key = "|".join(names)
        w = self._cache.get(key)
        if w is None:
            w = np.concatenate([self._cache[n] if n in self._cache else self._load(n) for n in names])
            self._keep(key, w)
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

    def matvec(self, names: str | tuple[str, ...], x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """x (n, cols) @ [W1; W2; ...].T for a few rows of x, reading the file's own blocks where a
        decode kernel exists (F16 from the memory map, legacy and Q4_K/Q6_K quants unpacked once).

        Tensors of one type (q|k|v, gate|up) are unpacked into one stacked matrix, so that a
        decoding step launches one parallel kernel for them instead of one each.
        """
        names = (names,) if isinstance(names, str) else tuple(names)
        aff = self._affine(names)
        if aff is not None:
            return aff.matvec(x)
        if len(names) > 1:
            return np.concatenate([self.matvec(n, x) for n in names], axis=1)
        info = self.reader.tensors[names[0]]
        if info.qtype == GGMLType.F16 and len(info.shape) == 2:
            return matvec_f16(self.reader.raw(names[0]).reshape(info.shape[0], -1), x)
        return matvec_f32(self.get(names[0]), x)

    def _affine(self, names: tuple[str, ...]) -> Affine | None:
        """The unpacked decode form of 2-D tensors of one type in AFFINE_TYPES, stacked
        by rows and kept within the budget; None for other types."""
        infos = [self.reader.tensors[n] for n in names]
        qtype = infos[0].qtype
        if qtype not in AFFINE_TYPES or any(i.qtype != qtype or len(i.shape) != 2 for i in infos):
            return None
        key = "|".join(names) + "#affine"
        aff = self._cache.get(key)
        if aff is None:
            parts = [unpack(self.reader.raw(n), qtype, *i.shape) for n, i in zip(names, infos)]
            aff = None if any(p is None for p in parts) else Affine.stack(parts)
            if aff is not None and self.used + aff.nbytes <= self.budget:
                self._cache[key] = aff
                self.used += aff.nbytes
        return aff
