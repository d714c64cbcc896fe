"""llmtk's own GGUF writer: streaming and atomic.

Header, metadata and tensor infos first, then each tensor's bytes followed by zero padding to the
alignment, into a temporary file beside the destination that is renamed into place only when
everything was written. The temporary is `llmtk.outputs`' pid-tagged name, so the next writer to
the same destination removes those of killed runs; an OSError (a full disk, a read-only folder)
is a one-line `OutputError` naming the destination. Metadata keeps its value types, so a file read and written back without
changes is byte-identical (for GGUF v3 files laid out as ggml lays them out). The layout is the
reader's (`reader.py`), as in ggml's `gguf.cpp`.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from llmtk.errors import InputError, ShapeError
from llmtk.ggufio.constants import (
    GGML_MAX_DIMS,
    GGML_MAX_NAME,
    GGML_TYPE_TRAITS,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_KEY_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VALUE_STRUCT,
    GGMLType,
    GGUFValueType,
    parse_ggml_type,
    tensor_nbytes,
)
from llmtk.ggufio.reader import (
    _DTYPE_VALUE_TYPE,
    _HEADER,
    _U32,
    _U64,
    GGUF_VALUE_DTYPE,
    GGUF_WRITE_VERSION,
    INT64_MAX,
    GGUFReader,
    escape_control,
)
from llmtk.outputs import clean_stale_temps, temp_path, writing

log = logging.getLogger(__name__)

__all__ = ["GGUFWriter", "copy_kv", "infer_value_type"]

VT = GGUFValueType

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
        expected = tensor_nbytes(qtype, shape)
        if n_bytes is not None and int(n_bytes) != expected:
            raise ShapeError(f"{self.path}: tensor '{shown}' is declared {n_bytes} bytes, but "
                             f"{qtype.name} {shape} takes {expected}")
        self._tensors[name] = _PendingTensor(name, qtype, shape, expected)
        self._order.append(name)

    # -- writing ----------------------------------------------------------------------------

    def _open(self) -> None:
        clean_stale_temps(self.path)
        self._tmp = temp_path(self.path)
        with writing(self.path):
            self._f = open(self._tmp, "wb")

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
        with writing(self.path):
            self._f.write(header)  # type: ignore[union-attr]
            self._pad(len(header))
        self._state = "data"

    def _next_tensor(self, name: str) -> _PendingTensor:
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
        return self._tensors[name]

    @staticmethod
    def _bytes_of(data: Any) -> memoryview:
        if isinstance(data, np.ndarray):  # any dtype or byte order: its bytes as they are
            return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        return memoryview(data).cast("B")

    def write_tensor(self, name: str, data: Any) -> None:
        """Write the next tensor's bytes (`data`: any contiguous-able array or bytes-like)."""
        t = self._next_tensor(name)
        mv = self._bytes_of(data)
        if mv.nbytes != t.n_bytes:
            raise ShapeError(f"{self.path}: tensor '{escape_control(name)}' has {mv.nbytes} bytes of "
                             f"data, expected {t.n_bytes} for {t.qtype.name} {t.shape}")
        with writing(self.path):
            for i in range(0, mv.nbytes, self.CHUNK):
                self._f.write(mv[i:i + self.CHUNK])  # type: ignore[union-attr]
            self._pad(t.n_bytes)
        self._next += 1

    def write_tensor_parts(self, name: str, parts: Iterable[Any]) -> None:
        """Write the next tensor from consecutive pieces of its bytes, so that a large tensor is
        never whole in memory; together they must be exactly its declared size."""
        t = self._next_tensor(name)
        done = 0
        for part in parts:  # computed outside `writing`: only the file's own errors are write errors
            mv = self._bytes_of(part)
            done += mv.nbytes
            if done > t.n_bytes:
                break
            with writing(self.path):
                for i in range(0, mv.nbytes, self.CHUNK):
                    self._f.write(mv[i:i + self.CHUNK])  # type: ignore[union-attr]
        if done != t.n_bytes:
            raise ShapeError(f"{self.path}: tensor '{escape_control(name)}' has {'over ' if done > t.n_bytes else ''}"
                             f"{done} bytes of data, expected {t.n_bytes} for {t.qtype.name} {t.shape}")
        with writing(self.path):
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
            with writing(self.path):
                f.close()  # type: ignore[union-attr]  (flushes: a full disk may show here)
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
