"""Weights of a GGUF model as float32, dequantized on demand, streamed or cached under budgets.

Prompt processing multiplies whole batches by a layer's weights with BLAS sgemm on float32, so
the file's blocks are dequantized for it. By default nothing of that is kept: a batch's product
dequantizes a few MiB of rows at a time (`StackedRows`) and multiplies them while they are in
the CPU's cache, so peak memory grows with one block of one tensor, not with the model (llama.cpp
likewise keeps only the mapped file). Dequantizing runs at 20-40 GB/s of float32 and a 512-token
batch spends ~1000 flops per weight, so streaming costs a few percent of a batch. A `budget`
keeps float32 copies between calls instead. Decoding (a few rows) reads the file's blocks (F16, Q8_0) or
their unpacked int8 form (`decode_budget`), never float32 copies of quantized types it can read.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmtk.ggufio.constants import GGMLType
from llmtk.errors import ShapeError
from llmtk.kernels import int8dot
from llmtk.kernels.activations import round_activations
from llmtk.kernels.unpack import AFFINE_TYPES, Affine, F16Rows, matvec_f32, unpack

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 0  # bytes of float32 copies of weights kept between calls (0: stream them)
DECODE_BUDGET = 2 << 30  # bytes of decode forms (unpacked int8, float32 for other types) kept
STREAM_BLOCK_BYTES = 4 << 20  # float32 bytes of weight rows dequantized at a time when streaming


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


class StackedRows:
    """2-D tensors stacked by rows ([W1; W2; ...], all of one width) read as float32 only where
    sliced: `rows[a:b]` dequantizes rows a..b-1 from the file's blocks (float32 tensors are
    views of the memory map), so a product can stream a tensor in blocks (`dot_rows`)."""

    def __init__(self, reader: Any, names: tuple[str, ...]):
        self.reader = reader
        self.parts: list[tuple[str, int, int]] = []  # (name, first row, end row) in the stack
        r0, cols = 0, None
        for name in names:
            info = reader.tensors[name]
            rows, c = (int(d) for d in info.shape)
            if cols is not None and c != cols:
                raise ShapeError(f"tensors {names[0]!r} and {name!r} have different widths ({cols}, {c})")
            cols = c
            self.parts.append((name, r0, r0 + rows))
            r0 += rows
        self.shape = (r0, int(cols or 0))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def _piece(self, name: str, a: int, b: int) -> npt.NDArray[np.float32]:
        info = self.reader.tensors[name]
        rows, cols = (int(d) for d in info.shape)
        if info.qtype == GGMLType.F32:
            return self.reader.array(name).reshape(rows, cols)[a:b]
        raw = self.reader.raw(name).reshape(rows, -1)[a:b]
        return dequantize(raw, info.qtype, (b - a, cols))

    def __getitem__(self, key: slice) -> npt.NDArray[np.float32]:
        if not isinstance(key, slice):
            raise TypeError("StackedRows takes a slice of rows")
        a, b, step = key.indices(self.shape[0])
        if step != 1:
            raise TypeError("StackedRows takes a contiguous slice of rows")
        pieces = [self._piece(name, max(a, r0) - r0, min(b, r1) - r0)
                  for name, r0, r1 in self.parts if r0 < b and r1 > a]
        if not pieces:
            return np.empty((0, self.shape[1]), dtype=np.float32)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def stream_rows(cols: int) -> int:
    """Weight rows dequantized at a time when streaming a product: STREAM_BLOCK_BYTES of float32,
    at least 64 rows so each sgemm stays large."""
    return max(64, STREAM_BLOCK_BYTES // (4 * max(1, cols)))


def dot_rows(x: npt.NDArray[np.float32], w: npt.NDArray[np.float32] | StackedRows, a: int, b: int,
             out: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    """x (n, k) @ w[a:b].T, into `out` (n, b - a) when given: one sgemm for an array; for
    `StackedRows` one sgemm per block of `stream_rows` rows, each dequantized just before it is
    multiplied and freed after, so the float32 weights alive at once are one block per calling
    thread. numba's own threads are held to one inside: the caller's worker threads are the
    parallelism."""
    if isinstance(w, np.ndarray) or b - a <= stream_rows(w.shape[1]):
        if isinstance(w, np.ndarray):
            y = np.dot(x, w[a:b].T)
        else:
            from ._blas import numba_threads
            with numba_threads(1):
                y = np.dot(x, w[a:b].T)
        if out is None:
            return y
        out[...] = y
        return out
    from ._blas import numba_threads

    step = stream_rows(w.shape[1])
    y = np.empty((x.shape[0], b - a), dtype=np.float32) if out is None else out
    with numba_threads(1):
        for r in range(a, b, step):
            e = min(b, r + step)
            y[:, r - a:e - a] = np.dot(x, w[r:e].T)
    return y


class Weights:
    """Float32 views of a reader's tensors: float32 copies of whole tensors kept while they fit
    `budget` bytes (default none: batches stream through `StackedRows`), decode forms while they
    fit `decode_budget`."""

    def __init__(self, reader: Any, budget: int = DEFAULT_BUDGET, decode_budget: int = DECODE_BUDGET):
        self.reader = reader
        self.budget = int(budget)
        self.decode_budget = int(decode_budget)
        self.used = 0          # bytes of float32 copies kept
        self.decode_used = 0   # bytes of decode forms kept
        self._cache: dict[str, np.ndarray] = {}
        self._decode: dict[str, Any] = {}
        # (names, vdt) -> the product of a stack whose decode form is settled (Q8_0/F16 read in
        # place, unpacked forms kept): a decoding step's matvec is one look-up and one kernel
        self._decoders: dict[tuple[tuple[str, ...], Any], Any] = {}

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

    def fused(self, names: tuple[str, ...]) -> npt.NDArray[np.float32] | StackedRows:
        """2-D tensors stacked along their rows (q|k|v, gate|up), so one sgemm serves them all:
        a float32 array when kept (or float32 in the file), else `StackedRows` to stream through
        `dot_rows`; a copy is made and kept only when it fits the budget."""
        key = "|".join(names)
        w = self._cache.get(key)
        if w is not None:
            return w
        infos = [self.reader.tensors[n] for n in names]
        if len(names) == 1 and infos[0].qtype == GGMLType.F32:
            return self.get(names[0])
        size = 4 * sum(int(np.prod(i.shape)) for i in infos)
        if self.used + size > self.budget:
            return StackedRows(self.reader, names)
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

    def matvec(self, names: str | tuple[str, ...], x: npt.NDArray[np.float32],
               vdt: GGMLType | None = None) -> npt.NDArray[np.float32]:
        """x (n, cols) @ [W1; W2; ...].T for a few rows of x, reading the file's own blocks where a
        decode kernel exists. `vdt` is the type the activations are rounded to first, as ggml-cpu
        converts a matmul's input to the weights' vec_dot_type (None: exact float32).

        Q8_0 and F16 tensors are read in place from the memory map; the other legacy quants and
        Q4_K/Q6_K are unpacked once to int8 (`llmtk.kernels.unpack`). With 8-bit activations
        (Q8_0/Q8_1/Q8_K) the products are integer dot products of int8 blocks, as ggml's
        `ggml_vec_dot_*_q8_*` (`llmtk.kernels.int8dot`), else float32 ones. Tensors of one type
        (q|k|v, gate|up) are multiplied as one stack, so that a decoding step launches one
        parallel kernel for them instead of one each.
        """
        names = (names,) if isinstance(names, str) else tuple(names)
        fast = self._decoders.get((names, vdt))
        if fast is not None:
            return fast(x)
        infos = [self.reader.tensors[n] for n in names]
        qtype = infos[0].qtype
        one_type = all(i.qtype == qtype and len(i.shape) == 2 for i in infos)
        int8 = vdt is not None and int8dot.supports(vdt, x.shape[1])
        if one_type and qtype == GGMLType.Q8_0 and int8:
            # views of the memory map: costs no memory
            blocks = int8dot.Q8_0Blocks([self.reader.raw(n) for n in names], [int(i.shape[0]) for i in infos])
            fast = self._decoders[(names, vdt)] = blocks.matvec
            return fast(x)
        if one_type and qtype == GGMLType.F16 and vdt in (None, GGMLType.F16):
            rows = F16Rows([self.reader.raw(n).reshape(int(i.shape[0]), -1) for n, i in zip(names, infos)])
            half = vdt == GGMLType.F16
            fast = self._decoders[(names, vdt)] = lambda x: rows.matvec(x, half)
            return fast(x)
        aff = self._affine(names)
        if aff is not None:
            if int8 and "|".join(names) in self._decode:  # kept: later steps go straight to the kernel
                fast = self._decoders[(names, vdt)] = lambda x: aff.matvec_int8(x, vdt)
            return aff.matvec_int8(x, vdt) if int8 else aff.matvec(x if vdt is None else round_activations(x, vdt))
        if len(names) > 1:
            return np.concatenate([self.matvec(n, x, vdt) for n in names], axis=1)
        return matvec_f32(self._decode_f32(names[0]), x if vdt is None else round_activations(x, vdt))

    def _decode_f32(self, name: str) -> npt.NDArray[np.float32]:
        """A float32 copy for decoding types without a decode kernel, kept within decode_budget."""
        w = self._cache.get(name)
        if w is None:
            w = self._decode.get(name)
        if w is None:
            w = self._load(name)
            if self.reader.tensors[name].qtype != GGMLType.F32 and \
                    self.decode_used + w.nbytes <= self.decode_budget:
                self._decode[name] = w
                self.decode_used += w.nbytes
        return w

    def _affine(self, names: tuple[str, ...]) -> Affine | None:
        """The unpacked decode form of 2-D tensors of types in AFFINE_TYPES with one block
        layout, stacked by rows and kept within the budget; None for other types."""
        infos = [self.reader.tensors[n] for n in names]
        if any(i.qtype not in AFFINE_TYPES or len(i.shape) != 2 for i in infos):
            return None
        key = "|".join(names)
        aff = self._decode.get(key)
        if aff is None:
            parts = [unpack(self.reader.raw(n), i.qtype, *i.shape) for n, i in zip(names, infos)]
            # types may mix (a Q8_0 attn_v beside Q5_0 q/k) where their blocks have one layout
            same = all(p is not None and p.a.shape[1] == parts[0].a.shape[1] and
                       p.b.shape[1] == parts[0].b.shape[1] for p in parts)
            aff = Affine.stack(parts) if same else None
            if aff is not None and self.decode_used + aff.nbytes <= self.decode_budget:
                self._decode[key] = aff
                self.decode_used += aff.nbytes
        return aff
