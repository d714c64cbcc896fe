"""llmtk's own GGUF reader (the writer, `writer.py`, shares its layout tables).

The reader memory-maps the file and checks every count, length, type id and offset against the
file's size before it trusts it, so a hostile or truncated file gives one `GGUFFormatError`
naming the file and the problem instead of a crash or a huge allocation. Tensor data stays in
the map: `raw()` and `array()` return views, nothing is copied.

The writer streams: header, metadata and tensor infos first, then each tensor's bytes followed
by zero padding to the alignment, into a temporary file beside the destination that is renamed
into place only when everything was written. Metadata keeps its value types, so a file read and
written back without changes is byte-identical (for GGUF v3 files laid out as ggml lays them out).

Layout (little endian), as in ggml's `gguf.cpp`:
    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv x (key: str, type u32, value)           str = length u64 + UTF-8 bytes
    n_tensors x (name: str, n_dims u32, ne[n_dims] u64, type u32, offset u64)
    zero padding to the alignment; then the data section (offsets are relative to its start).
"""
from __future__ import annotations

import logging
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from llmtk.errors import GGUFFormatError, InputError
from llmtk.ggufio.constants import (
    GGML_MAX_DIMS,
    GGML_MAX_NAME,
    GGML_REMOVED_TYPES,
    GGML_TYPE_TRAITS,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_KEY_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VALUE_STRUCT,
    GGUF_VERSIONS,
    GGMLType,
    GGUFValueType,
    tensor_nbytes,
)

log = logging.getLogger(__name__)

__all__ = ["GGUFReader", "TensorInfo", "escape_control"]

VT = GGUFValueType
INT64_MAX = (1 << 63) - 1
GGUF_WRITE_VERSION = 3

# NumPy dtypes of the fixed-size value types (for arrays).
GGUF_VALUE_DTYPE: dict[GGUFValueType, np.dtype] = {
    VT.UINT8: np.dtype("u1"), VT.INT8: np.dtype("i1"),
    VT.UINT16: np.dtype("<u2"), VT.INT16: np.dtype("<i2"),
    VT.UINT32: np.dtype("<u4"), VT.INT32: np.dtype("<i4"),
    VT.FLOAT32: np.dtype("<f4"), VT.BOOL: np.dtype("?"),
    VT.UINT64: np.dtype("<u8"), VT.INT64: np.dtype("<i8"),
    VT.FLOAT64: np.dtype("<f8"),
}
_DTYPE_VALUE_TYPE: dict[np.dtype, GGUFValueType] = {dt.newbyteorder("="): vt for vt, dt in GGUF_VALUE_DTYPE.items()}

# NumPy views of the non-quantized tensor types (`array()`); BF16 has no NumPy dtype: raw uint16.
TENSOR_DTYPE: dict[GGMLType, np.dtype] = {
    GGMLType.F32: np.dtype("<f4"), GGMLType.F16: np.dtype("<f2"), GGMLType.F64: np.dtype("<f8"),
    GGMLType.BF16: np.dtype("<u2"),
    GGMLType.I8: np.dtype("i1"), GGMLType.I16: np.dtype("<i2"),
    GGMLType.I32: np.dtype("<i4"), GGMLType.I64: np.dtype("<i8"),
}

_HEADER = struct.Struct("<4sIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Smallest possible encodings, used to reject counts the rest of the file cannot hold.
_MIN_KV_BYTES = 8 + 1 + 4 + 1            # key length, 1-byte key, type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8   # name length, n_dims, type, offset
# Largest element count (zero dims counted as 1) a tensor may claim: 8-byte items still fit an int64.
_MAX_ELEMENTS = INT64_MAX // 8
_MIN_ITEM_BYTES = {vt: (8 if vt == VT.STRING else struct.calcsize(f)) for vt, f in
                   {**GGUF_VALUE_STRUCT, VT.STRING: "Q"}.items()}


def escape_control(s: str) -> str:
    """`s` with control and other non-printable characters escaped (`\\n`, `\\x1b`), for one-line output."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file: `shape` in NumPy order (GGUF's `ne` reversed), absolute `offset`."""

    name: str
    qtype: GGMLType
    shape: tuple[int, ...]
    offset: int
    n_bytes: int

    @property
    def ne(self) -> tuple[int, ...]:
        """Dimensions in GGUF/ggml order (fastest-varying first)."""
        return tuple(reversed(self.shape))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------

class GGUFReader:
    """A validated, memory-mapped GGUF file (v2 or v3).

    `kv` holds the metadata in file order (ints, floats, bools, str; string arrays as list[str],
    numeric arrays as NumPy arrays), `kv_types` each key's (value type, array item type or None),
    `tensors` the `TensorInfo`s in file order. Use as a context manager or call `close()`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.kv: dict[str, Any] = {}
        self.kv_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.alignment = GGUF_DEFAULT_ALIGNMENT
        self.version = 0
        self.data_offset = 0
        self._mm: np.memmap | None = None
        try:
            self.file_size = self.path.stat().st_size
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except OSError as e:
            raise InputError(f"{self.path}: cannot read: {e.strerror}") from None
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, expected a GGUF file")
        if self.file_size == 0:
            raise GGUFFormatError(f"{self.path}: empty file, expected a GGUF file")
        try:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        except OSError as e:
            raise InputError(f"{self.path}: cannot map: {e.strerror or e}") from None
        try:
            _Parser(self).parse()
        except BaseException:
            self._mm = None
            raise

    # -- data access ------------------------------------------------------------------------

    def _map(self) -> np.memmap:
        if self._mm is None:
            raise InputError(f"{self.path}: reader is closed")
        return self._mm

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise InputError(f"{self.path}: no tensor named '{escape_control(name)}'") from None

    def raw(self, name: str) -> npt.NDArray[np.uint8]:
        """The tensor's bytes as a read-only uint8 view of the map (nothing copied)."""
        ti = self._info(name)
        return self._map()[ti.offset:ti.offset + ti.n_bytes]

    def release(self, name: str, start: int = 0, stop: int | None = None) -> None:
        """Drop bytes start..stop of the tensor (default: all of it) from this process's resident
        memory (madvise DONTNEED on the whole pages inside): they stay in the OS page cache and
        are read again if touched. A streaming pass over a model calls it after each tensor or
        slab, as llama-quantize unmaps each weight's fragment, so its peak memory holds one
        piece of the file, not all of it."""
        ti = self._info(name)
        mm = getattr(self._map(), "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        stop = ti.n_bytes if stop is None else min(int(stop), ti.n_bytes)
        page = mmap.PAGESIZE
        start = -(-(ti.offset + max(0, int(start))) // page) * page
        end = (ti.offset + stop) // page * page
        if end > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                pass

    def array(self, name: str) -> np.ndarray:
        """A typed view: F32/F16/F64/I* in their dtype, BF16 as uint16, both in `shape`;
        quantized types as uint8 `(rows, row_bytes)` with rows = product of all but the last dim."""
        ti = self._info(name)
        raw = self.raw(name)
        dt = TENSOR_DTYPE.get(ti.qtype)
        if dt is not None:
            return raw.view(dt).reshape(ti.shape)
        n_rows = 1
        for d in ti.shape[:-1]:
            n_rows *= d
        return raw.reshape(n_rows, ti.n_bytes // n_rows if n_rows else 0)

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the map (views handed out keep it alive until they are gone)."""
        self._mm = None

    def __enter__(self) -> "GGUFReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFReader({str(self.path)!r}, version={self.version}, n_kv={len(self.kv)}, "
                f"n_tensors={len(self.tensors)})")


class _Parser:
    """Walks the header with bounds checks; every failure is a GGUFFormatError naming the file."""

    def __init__(self, reader: GGUFReader) -> None:
        self.r = reader
        self.buf = memoryview(reader._mm)  # type: ignore[arg-type]
        self.size = reader.file_size
        self.pos = 0
        self.tensor_names: set[str] = set()

    def fail(self, msg: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.r.path}: {msg}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"truncated {what}: needs {n} bytes at offset {self.pos}, "
                            f"file ends at {self.size}")

    def u32(self, what: str) -> int:
        self.need(4, what)
        v = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        v = _U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def string(self, what: str, item: int | None = None) -> str:
        """A GGUF string; `what` names it in errors, as item `item` of `what` when given (the
        label is built only on failure: a 262k-token vocabulary reads 262k strings)."""
        pos = self.pos
        if self.size - pos < 8:
            self.need(8, f"{self._label(what, item)} length")
        n = _U64.unpack_from(self.buf, pos)[0]
        pos += 8
        if n > self.size - pos:
            self.pos = pos
            raise self.fail(f"{self._label(what, item)} length {n} at offset {pos - 8} exceeds the "
                            f"{self.size - pos} bytes left in the file")
        self.pos = pos + n
        try:
            return str(self.buf[pos:pos + n], "utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"invalid UTF-8 in {self._label(what, item)} at offset {pos + e.start}") from None

    @staticmethod
    def _label(what: str, item: int | None) -> str:
        return what if item is None else f"item {item} of {what}"

    # -- sections ---------------------------------------------------------------------------

    def parse(self) -> None:
        r = self.r
        if self.size < 4 or bytes(self.buf[:4]) != GGUF_MAGIC:
            raise self.fail(f"not a GGUF file: magic {bytes(self.buf[:4])!r}, expected {GGUF_MAGIC!r}")
        self.pos = 4
        version = self.u32("header (version)")
        if version not in GGUF_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in GGUF_VERSIONS:
                raise self.fail(f"big-endian GGUF (version {swapped}) is not supported")
            raise self.fail(f"unsupported GGUF version {version} (supported: "
                            f"{', '.join(map(str, GGUF_VERSIONS))})")
        r.version = version
        n_tensors = self.u64("header (tensor count)")
        n_kv = self.u64("header (metadata count)")
        left = self.size - self.pos
        if n_kv > left // _MIN_KV_BYTES:
            raise self.fail(f"metadata count {n_kv} cannot fit in the {left} bytes left in the file")
        if n_tensors > left // _MIN_TENSOR_INFO_BYTES:
            raise self.fail(f"tensor count {n_tensors} cannot fit in the {left} bytes left in the file")
        for i in range(n_kv):
            self.parse_kv(i)
        self.parse_alignment()
        infos = [self.parse_tensor_info(i) for i in range(n_tensors)]
        self.parse_data(infos)

    def parse_kv(self, i: int) -> None:
        r = self.r
        key = self.string(f"key of metadata entry {i}")
        shown = escape_control(key)
        if not key:
            raise self.fail(f"metadata entry {i} has an empty key")
        if key in r.kv:
            raise self.fail(f"duplicate metadata key '{shown}'")
        vtype = self.value_type(self.u32(f"type of metadata '{shown}'"), shown)
        item_type = None
        if vtype == VT.ARRAY:
            item_type = self.value_type(self.u32(f"array type of metadata '{shown}'"), shown)
            if item_type == VT.ARRAY:
                raise self.fail(f"metadata '{shown}' is a nested array, which GGUF readers do not support")
            n = self.u64(f"array length of metadata '{shown}'")
            left = self.size - self.pos
            if n > left // _MIN_ITEM_BYTES[item_type]:
                raise self.fail(f"metadata '{shown}' claims {n} {item_type.name} items, more than the "
                                f"{left} bytes left in the file can hold")
            value: Any = self.array_value(item_type, n, shown)
        else:
            value = self.scalar(vtype, shown)
        r.kv[key] = value
        r.kv_types[key] = (vtype, item_type)

    def value_type(self, t: int, shown: str) -> GGUFValueType:
        try:
            return VT(t)
        except ValueError:
            raise self.fail(f"metadata '{shown}' has unknown value type {t}") from None

    def scalar(self, vtype: GGUFValueType, shown: str) -> Any:
        if vtype == VT.STRING:
            return self.string(f"value of metadata '{shown}'")
        fmt = struct.Struct("<" + GGUF_VALUE_STRUCT[vtype])
        self.need(fmt.size, f"value of metadata '{shown}'")
        if vtype == VT.BOOL:
            b = self.buf[self.pos]
            if b > 1:
                raise self.fail(f"metadata '{shown}' has bool value {b}, expected 0 or 1")
        v = fmt.unpack_from(self.buf, self.pos)[0]
        self.pos += fmt.size
        return v

    def array_value(self, item_type: GGUFValueType, n: int, shown: str) -> Any:
        if item_type == VT.STRING:
            what = f"metadata '{shown}'"
            return [self.string(what, j) for j in range(n)]
        dt = GGUF_VALUE_DTYPE[item_type]
        nbytes = n * dt.itemsize
        self.need(nbytes, f"array of metadata '{shown}'")
        raw = np.frombuffer(self.buf, dtype=np.uint8, count=nbytes, offset=self.pos)
        if item_type == VT.BOOL and n and raw.max() > 1:
            raise self.fail(f"metadata '{shown}' has a bool item {raw.max()}, expected 0 or 1")
        self.pos += nbytes
        return raw.view(dt).astype(dt.newbyteorder("="))  # a copy: metadata outlives the map

    def parse_alignment(self) -> None:
        r = self.r
        if GGUF_KEY_ALIGNMENT not in r.kv:
            return
        vt, _ = r.kv_types[GGUF_KEY_ALIGNMENT]
        a = r.kv[GGUF_KEY_ALIGNMENT]
        if vt != VT.UINT32:
            raise self.fail(f"{GGUF_KEY_ALIGNMENT} has type {vt.name}, expected UINT32")
        if a == 0 or a & (a - 1):
            raise self.fail(f"{GGUF_KEY_ALIGNMENT} {a} is not a power of 2")
        r.alignment = a

    def parse_tensor_info(self, i: int) -> tuple[str, GGMLType, tuple[int, ...], int]:
        name = self.string(f"name of tensor {i}")
        shown = escape_control(name)
        if len(name.encode()) >= GGML_MAX_NAME:
            raise self.fail(f"tensor name '{shown}' is {len(name.encode())} bytes long, "
                            f"the limit is {GGML_MAX_NAME - 1}")
        if name in self.tensor_names:
            raise self.fail(f"duplicate tensor name '{shown}'")
        n_dims = self.u32(f"n_dims of tensor '{shown}'")
        if n_dims > GGML_MAX_DIMS:
            raise self.fail(f"tensor '{shown}' has {n_dims} dimensions, at most {GGML_MAX_DIMS} are allowed")
        ne = [self.u64(f"shape of tensor '{shown}'") for _ in range(n_dims)]
        n = 1
        for d in ne:
            if d > INT64_MAX:
                raise self.fail(f"tensor '{shown}' has dimension {d - (1 << 64)} < 0")
            n *= max(d, 1)  # zero dims too: NumPy refuses views whose other dims overflow
        if n > _MAX_ELEMENTS:
            raise self.fail(f"tensor '{shown}' shape {ne} is too large (its bytes could pass 2^63, "
                            f"zero dimensions aside)")
        t = self.u32(f"type of tensor '{shown}'")
        if t in GGML_REMOVED_TYPES:
            raise self.fail(f"tensor '{shown}' has ggml type {t} ({GGML_REMOVED_TYPES[t]}), "
                            f"which was removed from GGUF")
        try:
            qtype = GGMLType(t)
        except ValueError:
            raise self.fail(f"tensor '{shown}' has unknown ggml type id {t}") from None
        bs = GGML_TYPE_TRAITS[qtype].block_size
        if ne and ne[0] % bs:
            raise self.fail(f"tensor '{shown}' has {ne[0]} values per row, not a multiple of "
                            f"{qtype.name} block size {bs}")
        offset = self.u64(f"offset of tensor '{shown}'")
        shape = tuple(reversed(ne))
        self.tensor_names.add(name)
        return name, qtype, shape, offset

    def parse_data(self, infos: list[tuple[str, GGMLType, tuple[int, ...], int]]) -> None:
        r = self.r
        a = r.alignment
        r.data_offset = -(-self.pos // a) * a
        if infos and r.data_offset > self.size:
            raise self.fail(f"data section would start at {r.data_offset}, past the end of the file ({self.size})")
        out: dict[str, TensorInfo] = {}
        for name, qtype, shape, offset in infos:
            shown = escape_control(name)
            if offset % a:
                raise self.fail(f"tensor '{shown}' offset {offset} is not a multiple of the alignment {a}")
            n_bytes = tensor_nbytes(qtype, shape)
            start = r.data_offset + offset
            if start + n_bytes > self.size:
                raise self.fail(f"tensor '{shown}' data ({n_bytes} bytes at offset {start}) runs past "
                                f"the end of the file ({self.size} bytes)")
            out[name] = TensorInfo(name, qtype, shape, start, n_bytes)
        by_start = sorted(out.values(), key=lambda t: (t.offset, t.n_bytes))
        for prev, cur in zip(by_start, by_start[1:]):
            if cur.offset < prev.offset + prev.n_bytes and cur.n_bytes and prev.n_bytes:
                raise self.fail(f"tensors '{escape_control(prev.name)}' and '{escape_control(cur.name)}' "
                                f"overlap (bytes {cur.offset}..{prev.offset + prev.n_bytes})")
        r.tensors = out
