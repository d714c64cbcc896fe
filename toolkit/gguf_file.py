"""llmtk's own GGUF reader and writer.

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
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import numpy.typing as npt

from .constants import (
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
    parse_ggml_type,
)
from .errors import GGUFFormatError, InputError, ShapeError

log = logging.getLogger(__name__)

__all__ = ["GGUFReader", "GGUFWriter", "TensorInfo", "escape_control", "infer_value_type"]

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


def _tensor_n_bytes(qtype: GGMLType, shape: tuple[int, ...]) -> int:
    tt = GGML_TYPE_TRAITS[qtype]
    n = 1
    for d in shape:
        n *= d
    return n // tt.block_size * tt.type_size


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

    def string(self, what: str) -> str:
        n = self.u64(f"{what} length")
        if n > self.size - self.pos:
            raise self.fail(f"{what} length {n} at offset {self.pos - 8} exceeds the "
                            f"{self.size - self.pos} bytes left in the file")
        start = self.pos
        self.pos += n
        try:
            return str(self.buf[start:self.pos], "utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"invalid UTF-8 in {what} at offset {start + e.start}") from None

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
            out = []
            for j in range(n):
                out.append(self.string(f"item {j} of metadata '{shown}'"))
            return out
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
            n *= d
        if n > INT64_MAX:
            raise self.fail(f"tensor '{shown}' shape {ne} has more than 2^63 elements")
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
            n_bytes = _tensor_n_bytes(qtype, shape)
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


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------

def infer_value_type(value: Any) -> tuple[GGUFValueType, GGUFValueType | None]:
    """The GGUF (type, item type) a Python/NumPy value is stored as when none is given.

    bool -> BOOL, int -> INT32 (INT64/UINT64 when out of range), float -> FLOAT32, str -> STRING,
    NumPy scalars and arrays by dtype, lists by their items (str, bool, int, else FLOAT32).
    """
    if isinstance(value, (bool, np.bool_)):
        return VT.BOOL, None
    if isinstance(value, np.generic):
        vt = _DTYPE_VALUE_TYPE.get(value.dtype.newbyteorder("="))
        if vt is None:
            raise InputError(f"cannot store a NumPy {value.dtype} scalar in GGUF metadata")
        return vt, None
    if isinstance(value, int):
        return _int_type(value), None
    if isinstance(value, float):
        return VT.FLOAT32, None
    if isinstance(value, str):
        return VT.STRING, None
    if isinstance(value, np.ndarray):
        vt = _DTYPE_VALUE_TYPE.get(value.dtype.newbyteorder("="))
        if vt is None:
            raise InputError(f"cannot store a NumPy {value.dtype} array in GGUF metadata")
        return VT.ARRAY, vt
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError("cannot infer the item type of an empty array; pass item_type")
        if all(isinstance(v, str) for v in value):
            return VT.ARRAY, VT.STRING
        if all(isinstance(v, (bool, np.bool_)) for v in value):
            return VT.ARRAY, VT.BOOL
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            types = {_int_type(int(v)) for v in value}
            return VT.ARRAY, (VT.INT32 if types == {VT.INT32} else VT.UINT64 if VT.UINT64 in types else VT.INT64)
        if all(isinstance(v, (int, float, np.integer, np.floating)) for v in value):
            return VT.ARRAY, VT.FLOAT32
        raise InputError("cannot store a list of mixed or unsupported items in GGUF metadata")
    raise InputError(f"cannot store a {type(value).__name__} in GGUF metadata")


def _int_type(v: int) -> GGUFValueType:
    if -(1 << 31) <= v < (1 << 31):
        return VT.INT32
    if v > INT64_MAX:
        return VT.UINT64
    return VT.INT64


def _encode_str(s: str, what: str) -> bytes:
    if not isinstance(s, str):
        raise InputError(f"{what}: expected a string, got {type(s).__name__}")
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what}: string is not encodable as UTF-8") from None
    return _U64.pack(len(b)) + b


def _encode_scalar(vtype: GGUFValueType, value: Any, what: str) -> bytes:
    if vtype == VT.STRING:
        return _encode_str(value, what)
    if vtype == VT.BOOL:
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
            return b"\x01" if value else b"\x00"
        raise InputError(f"{what}: {value!r} is not a bool")
    fmt = "<" + GGUF_VALUE_STRUCT[vtype]
    try:
        if vtype in (VT.FLOAT32, VT.FLOAT64):
            if isinstance(value, (str, bytes, bool)):
                raise TypeError
            return struct.pack(fmt, float(value))
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError
        return struct.pack(fmt, int(value))
    except struct.error:
        raise InputError(f"{what}: {value!r} is out of range for {vtype.name}") from None
    except (TypeError, ValueError):
        raise InputError(f"{what}: {value!r} is not a valid {vtype.name}") from None


def _encode_array(item_type: GGUFValueType, value: Any, what: str) -> bytes:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise InputError(f"{what}: expected an array of {item_type.name}, got {type(value).__name__}")
    head = _U32.pack(item_type) + _U64.pack(len(value))
    if item_type == VT.STRING:
        return head + b"".join(_encode_str(s, f"{what} item {j}") for j, s in enumerate(value))
    if item_type == VT.ARRAY:
        raise InputError(f"{what}: nested arrays are not supported")
    dt = GGUF_VALUE_DTYPE[item_type]
    try:
        src = np.asarray(value)
        if src.ndim != 1:
            raise InputError(f"{what}: expected a 1-D array, got shape {src.shape}")
        if len(src) and src.dtype.kind not in "biuf":
            raise TypeError
        arr = src.astype(dt)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what}: items are not valid {item_type.name} values") from None
    if dt.kind in "biu" and len(src) and not np.array_equal(arr, src):
        raise InputError(f"{what}: items are out of range for {item_type.name}")
    return head + arr.tobytes()


@dataclass
class _PendingTensor:
    name: str
    qtype: GGMLType
    shape: tuple[int, ...]
    n_bytes: int
    rel_offset: int = 0


class GGUFWriter:
    """Streaming, atomic GGUF v3 writer.

    Declare metadata with `add_kv` and tensors with `add_tensor_info` (NumPy-order shape), then
    call `write_tensor` for each tensor in the declared order (the header is written before the
    first one) and `finish()`, which renames the temporary file into place. As a context manager
    it finishes on success and deletes the temporary file on any error or Ctrl-C.

    `alignment` defaults to the `general.alignment` metadata if added, else 32; a non-default
    alignment without that key adds it. `inputs` are files the output must not overwrite unless
    `in_place` is true (their maps stay valid: the rename replaces the directory entry only).
    """

    CHUNK = 1 << 24

    def __init__(self, path: str | os.PathLike, *, alignment: int | None = None,
                 inputs: Iterable[str | os.PathLike] = (), in_place: bool = False) -> None:
        self.path = Path(path)
        if alignment is not None and (alignment <= 0 or alignment & (alignment - 1) or alignment >= 1 << 32):
            raise InputError(f"alignment {alignment} is not a power of 2 below 2^32")
        self._alignment_arg = alignment
        self.alignment = alignment or GGUF_DEFAULT_ALIGNMENT
        parent = self.path.parent
        if not parent.is_dir():
            raise InputError(f"{self.path}: output folder {parent} does not exist")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, expected an output file path")
        for src in inputs:
            if self.path.exists() and Path(src).exists() and os.path.samefile(self.path, src):
                if not in_place:
                    raise InputError(f"{self.path}: output is the same file as the input; "
                                     f"use --in-place to overwrite it")
        self._kv: dict[str, bytes] = {}
        self._tensors: dict[str, _PendingTensor] = {}
        self._order: list[str] = []
        self._next = 0
        self._state = "meta"  # meta -> data -> done (or aborted)
        self._f = None
        self._tmp: Path | None = None

    # -- declaring --------------------------------------------------------------------------

    def _check_meta(self, what: str) -> None:
        if self._state != "meta":
            raise InputError(f"{self.path}: cannot {what} after the header was written")

    def add_kv(self, key: str, value: Any, vtype: GGUFValueType | int | None = None,
               item_type: GGUFValueType | int | None = None) -> None:
        """Add one metadata entry; the type is inferred from `value` when `vtype` is None."""
        self._check_meta("add metadata")
        if not isinstance(key, str) or not key:
            raise InputError(f"{self.path}: metadata key must be a non-empty string, got {key!r}")
        shown = escape_control(key)
        if key in self._kv:
            raise InputError(f"{self.path}: duplicate metadata key '{shown}'")
        if vtype is None and key == GGUF_KEY_ALIGNMENT:
            vtype = VT.UINT32
        if vtype is None:
            vtype, item_type = infer_value_type(value) if item_type is None else (VT.ARRAY, VT(item_type))
        vtype = VT(vtype)
        what = f"{self.path}: metadata '{shown}'"
        if vtype == VT.ARRAY:
            if item_type is None:
                _, item_type = infer_value_type(value)
            body = _encode_array(VT(item_type), value, what)
        else:
            body = _encode_scalar(vtype, value, what)
        if key == GGUF_KEY_ALIGNMENT:
            if vtype != VT.UINT32:
                raise InputError(f"{what}: must be UINT32, got {vtype.name}")
            a = int(value)
            if a == 0 or a & (a - 1):
                raise InputError(f"{what}: {a} is not a power of 2")
            if self._alignment_arg is not None and a != self._alignment_arg:
                raise InputError(f"{what}: {a} contradicts the writer's alignment {self._alignment_arg}")
            self.alignment = a
        self._kv[key] = _encode_str(key, what) + _U32.pack(vtype) + body

    def add_tensor_info(self, name: str, shape: Iterable[int], qtype: str | int | GGMLType,
                        n_bytes: int | None = None) -> None:
        """Declare a tensor (`shape` in NumPy order); `n_bytes`, if given, must match the shape."""
        self._check_meta("add tensors")
        if not isinstance(name, str):
            raise InputError(f"{self.path}: tensor name must be a string, got {name!r}")
        shown = escape_control(name)
        if name in self._tensors:
            raise InputError(f"{self.path}: duplicate tensor name '{shown}'")
        if len(name.encode("utf-8", "surrogatepass")) >= GGML_MAX_NAME:
            raise InputError(f"{self.path}: tensor name '{shown}' is longer than "
                             f"{GGML_MAX_NAME - 1} bytes")
        shape = tuple(int(d) for d in shape)
        if len(shape) > GGML_MAX_DIMS or any(d < 0 for d in shape):
            raise ShapeError(f"{self.path}: tensor '{shown}' shape {shape} must have at most "
                             f"{GGML_MAX_DIMS} non-negative dimensions")
        qtype = parse_ggml_type(qtype)
        bs = GGML_TYPE_TRAITS[qtype].block_size
        if shape and shape[-1] % bs:
            raise ShapeError(f"{self.path}: tensor '{shown}' row size {shape[-1]} is not a multiple "
                             f"of {qtype.name} block size {bs}")
        expected = _tensor_n_bytes(qtype, shape)
        if n_bytes is not None and int(n_bytes) != expected:
            raise ShapeError(f"{self.path}: tensor '{shown}' is declared {n_bytes} bytes, but "
                             f"{qtype.name} {shape} takes {expected}")
        self._tensors[name] = _PendingTensor(name, qtype, shape, expected)
        self._order.append(name)

    # -- writing ----------------------------------------------------------------------------

    def _open(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._f = os.fdopen(fd, "wb")

    def _pad(self, n: int) -> None:
        pad = -n % self.alignment
        if pad:
            self._f.write(b"\x00" * pad)  # type: ignore[union-attr]

    def _write_header(self) -> None:
        if self._alignment_arg not in (None, GGUF_DEFAULT_ALIGNMENT) and GGUF_KEY_ALIGNMENT not in self._kv:
            self.add_kv(GGUF_KEY_ALIGNMENT, self.alignment, VT.UINT32)
        self._open()
        a = self.alignment
        parts = [_HEADER.pack(GGUF_MAGIC, GGUF_WRITE_VERSION, len(self._tensors), len(self._kv))]
        parts.extend(self._kv.values())
        rel = 0
        for name in self._order:
            t = self._tensors[name]
            t.rel_offset = rel
            rel += -(-t.n_bytes // a) * a
            ne = tuple(reversed(t.shape))
            parts.append(_encode_str(name, name) + _U32.pack(len(ne))
                         + b"".join(_U64.pack(d) for d in ne) + _U32.pack(t.qtype) + _U64.pack(t.rel_offset))
        header = b"".join(parts)
        self._f.write(header)  # type: ignore[union-attr]
        self._pad(len(header))
        self._state = "data"

    def write_tensor(self, name: str, data: Any) -> None:
        """Write the next tensor's bytes (`data`: any contiguous-able array or bytes-like)."""
        if self._state == "meta":
            self._write_header()
        if self._state != "data":
            raise InputError(f"{self.path}: writer is {self._state}")
        if self._next >= len(self._order):
            raise InputError(f"{self.path}: tensor '{escape_control(name)}' was not declared "
                             f"(all {len(self._order)} declared tensors are written)")
        expected = self._order[self._next]
        if name != expected:
            raise InputError(f"{self.path}: tensor '{escape_control(name)}' written out of order; "
                             f"expected '{escape_control(expected)}'")
        t = self._tensors[name]
        if isinstance(data, np.ndarray):  # any dtype or byte order: its bytes as they are
            mv = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        else:
            mv = memoryview(data).cast("B")
        if mv.nbytes != t.n_bytes:
            raise ShapeError(f"{self.path}: tensor '{escape_control(name)}' has {mv.nbytes} bytes of "
                             f"data, expected {t.n_bytes} for {t.qtype.name} {t.shape}")
        for i in range(0, mv.nbytes, self.CHUNK):
            self._f.write(mv[i:i + self.CHUNK])  # type: ignore[union-attr]
        self._pad(t.n_bytes)
        self._next += 1

    def finish(self) -> Path:
        """Complete the file and rename it into place; returns the destination path."""
        if self._state == "done":
            return self.path
        if self._state == "meta":
            self._write_header()
        if self._state != "data":
            raise InputError(f"{self.path}: writer is {self._state}")
        if self._next != len(self._order):
            missing = self._order[self._next]
            self.abort()
            raise InputError(f"{self.path}: tensor '{escape_control(missing)}' was declared but "
                             f"never written ({len(self._order) - self._next} missing)")
        f, self._f = self._f, None
        try:
            f.close()  # type: ignore[union-attr]
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # type: ignore[arg-type]
            os.replace(self._tmp, self.path)  # type: ignore[arg-type]
        except BaseException:
            self.abort()
            raise
        self._state = "done"
        log.debug("wrote %s (%d tensors, %d metadata)", self.path, len(self._order), len(self._kv))
        return self.path

    def abort(self) -> None:
        """Discard the temporary file; nothing is left at the destination."""
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        if self._tmp is not None and self._state != "done":
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass
        if self._state != "done":
            self._state = "aborted"

    def __enter__(self) -> "GGUFWriter":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def __del__(self) -> None:
        if getattr(self, "_state", "done") in ("meta", "data") and getattr(self, "_tmp", None) is not None:
            self.abort()


def copy_kv(reader: GGUFReader, writer: GGUFWriter, *, skip: Iterable[str] = ()) -> None:
    """Copy every metadata entry of `reader` (except `skip`) to `writer`, keeping the types."""
    skip = set(skip)
    for key, value in reader.kv.items():
        if key not in skip:
            vt, it = reader.kv_types[key]
            writer.add_kv(key, value, vt, it)
