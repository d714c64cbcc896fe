"""A model spread over GGUF shards (`<prefix>-00001-of-00003.gguf`, ...) read as one file.

llama.cpp's loader, llama-gguf-split and gguf-py write a split model the same way: the first
shard holds all the metadata, every shard holds `split.no` (0-based), `split.count` and
`split.tensors.count` (the model's total), and each tensor lives in exactly one shard. The shard
names follow llama.cpp's `llama_split_path` (`%s-%05d-of-%05d.gguf`, numbered from 1).

`open_gguf(path)` opens any GGUF: a single file as a plain `GGUFReader`, any shard of a split
model as a `ShardedReader` over every shard, checked before use (each shard exists and parses,
agrees on `split.count`, has the `split.no` its name says, the tensor counts add up to
`split.tensors.count`, no tensor is in two shards). Every problem is one `GGUFFormatError` or
`InputError` naming the file at fault.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from llmtk.errors import GGUFFormatError, InputError
from llmtk.ggufio.constants import GGUFValueType, Key
from llmtk.ggufio.reader import GGUFReader, TensorInfo, escape_control

log = logging.getLogger(__name__)

__all__ = [
    "SPLIT_KEYS",
    "ShardedReader",
    "open_gguf",
    "open_shards",
    "split_info",
    "split_path",
    "split_prefix",
]

SPLIT_KEYS = (Key.SPLIT_NO, Key.SPLIT_COUNT, Key.SPLIT_TENSORS_COUNT)
_INT_TYPES = {GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16,
              GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64}


def split_path(prefix: str | os.PathLike, split_no: int, split_count: int) -> Path:
    """The path of shard `split_no` (0-based) of `split_count`, as llama.cpp's `llama_split_path`."""
    return Path(f"{os.fspath(prefix)}-{split_no + 1:05d}-of-{split_count:05d}.gguf")


def split_prefix(path: str | os.PathLike, split_no: int, split_count: int) -> str | None:
    """The prefix of a shard path, if its name ends as shard `split_no` of `split_count` should
    (`llama_split_prefix`); None otherwise."""
    s = os.fspath(path)
    tail = f"-{split_no + 1:05d}-of-{split_count:05d}.gguf"
    if len(s) <= len(tail) or not s.endswith(tail):
        return None
    return s[:-len(tail)]


def _int_key(r: GGUFReader, key: str) -> int | None:
    if key not in r.kv:
        return None
    vt, _ = r.kv_types[key]
    if vt not in _INT_TYPES:
        raise GGUFFormatError(f"{r.path}: {key} has type {vt.name}, expected an integer (UINT16)")
    return int(r.kv[key])


def split_info(r: GGUFReader) -> tuple[int, int, int | None]:
    """(split.no, split.count, split.tensors.count) of an open file; (0, 1, None) for a file
    without split keys. A merged file (`split.count` 0) counts as a single file."""
    count = _int_key(r, Key.SPLIT_COUNT)
    no = _int_key(r, Key.SPLIT_NO)
    total = _int_key(r, Key.SPLIT_TENSORS_COUNT)
    if count is None or count == 0:
        return 0, 1, total
    if count < 0:
        raise GGUFFormatError(f"{r.path}: {Key.SPLIT_COUNT} {count} is negative")
    if no is None:
        raise GGUFFormatError(f"{r.path}: has {Key.SPLIT_COUNT} {count} but no {Key.SPLIT_NO}")
    if not 0 <= no < count:
        raise GGUFFormatError(f"{r.path}: {Key.SPLIT_NO} {no} is outside 0..{count - 1} "
                              f"({Key.SPLIT_COUNT} {count})")
    return no, count, total


class ShardedReader:
    """Every shard of a split model behind `GGUFReader`'s read interface.

    `kv`, `kv_types`, `version`, `alignment` and `data_offset` are the first shard's (which holds
    all of the model's metadata); `tensors` maps every tensor name of every shard to its
    `TensorInfo` (offsets within its own shard's file); `raw()` and `array()` read from the shard
    that holds the tensor; `file_size` is the total of all shards. `path` is the first shard,
    `paths` all of them, `readers` their `GGUFReader`s, `shard_of(name)` a tensor's shard index.
    Use as a context manager or call `close()`, which closes every shard.
    """

    def __init__(self, readers: list[GGUFReader]) -> None:
        if not readers:
            raise InputError("a split model needs at least one shard")
        self.readers = readers
        first = readers[0]
        self.path = first.path
        self.paths = [r.path for r in readers]
        self.kv = first.kv
        self.kv_types = first.kv_types
        self.version = first.version
        self.alignment = first.alignment
        self.data_offset = first.data_offset
        self.file_size = sum(r.file_size for r in readers)
        self.tensors: dict[str, TensorInfo] = {}
        self._shard: dict[str, int] = {}
        for i, r in enumerate(readers):
            for name, ti in r.tensors.items():
                if name in self._shard:
                    other = self.paths[self._shard[name]]
                    raise GGUFFormatError(f"{r.path}: tensor '{escape_control(name)}' is also in {other}")
                self.tensors[name] = ti
                self._shard[name] = i

    @property
    def n_split(self) -> int:
        return len(self.readers)

    def shard_of(self, name: str) -> int:
        """Index (0-based) of the shard holding tensor `name`."""
        try:
            return self._shard[name]
        except KeyError:
            raise InputError(f"{self.path}: no tensor named '{escape_control(name)}' in its "
                             f"{self.n_split} shards") from None

    def reader_of(self, name: str) -> GGUFReader:
        """The `GGUFReader` of the shard holding tensor `name`."""
        return self.readers[self.shard_of(name)]

    def raw(self, name: str) -> npt.NDArray[np.uint8]:
        """The tensor's bytes as a read-only uint8 view of its shard's map (nothing copied)."""
        return self.reader_of(name).raw(name)

    def array(self, name: str) -> np.ndarray:
        """As `GGUFReader.array`, from the shard holding the tensor."""
        return self.reader_of(name).array(name)

    def __iter__(self) -> Iterator[GGUFReader]:
        return iter(self.readers)

    def close(self) -> None:
        for r in self.readers:
            r.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ShardedReader({str(self.path)!r}, n_split={self.n_split}, n_kv={len(self.kv)}, "
                f"n_tensors={len(self.tensors)})")


def _open_rest(given: GGUFReader, no: int, count: int) -> ShardedReader:
    prefix = split_prefix(given.path, no, count)
    if prefix is None:
        raise InputError(f"{given.path}: is shard {no + 1} of {count} ({Key.SPLIT_NO} {no}), so its name "
                         f"must end in -{no + 1:05d}-of-{count:05d}.gguf to find the other shards; "
                         f"keep llama.cpp's shard names")
    readers: list[GGUFReader] = []
    try:
        for i in range(count):
            if i == no:
                readers.append(given)
                continue
            p = split_path(prefix, i, count)
            if not p.exists():
                raise InputError(f"{p}: no such file; shard {i + 1} of the {count}-way split model "
                                 f"{split_path(prefix, 0, count)} is missing")
            r = GGUFReader(p)
            readers.append(r)
            r_no, r_count, _ = split_info(r)
            if Key.SPLIT_COUNT not in r.kv:
                raise GGUFFormatError(f"{p}: has no {Key.SPLIT_COUNT}, so it is not shard {i + 1} of {count}")
            if r_count != count:
                raise GGUFFormatError(f"{p}: {Key.SPLIT_COUNT} is {r_count}, but {given.path} says {count}")
            if r_no != i:
                raise GGUFFormatError(f"{p}: {Key.SPLIT_NO} is {r_no}, expected {i} (shard {i + 1} of {count})")
        first = readers[0]
        if Key.SPLIT_COUNT not in first.kv:
            raise GGUFFormatError(f"{first.path}: has no {Key.SPLIT_COUNT}, so it is not shard 1 of {count}")
        model = ShardedReader(readers)
        _, _, expected = split_info(first)
        for r in readers:
            _, _, t = split_info(r)
            if t is not None and expected is not None and t != expected:
                raise GGUFFormatError(f"{r.path}: {Key.SPLIT_TENSORS_COUNT} is {t}, but {first.path} says "
                                      f"{expected}")
        if expected is not None and expected != len(model.tensors):
            counts = ", ".join(str(len(r.tensors)) for r in readers)
            raise GGUFFormatError(f"{first.path}: {Key.SPLIT_TENSORS_COUNT} is {expected}, but its {count} "
                                  f"shards hold {len(model.tensors)} tensors ({counts})")
        return model
    except BaseException:
        for r in readers:
            if r is not given:
                r.close()
        raise


def open_shards(path: str | os.PathLike) -> ShardedReader:
    """Every shard of the split model `path` belongs to (any shard may be given), checked.

    A file without split keys (or a merged one, `split.count` 0) is a model of one shard."""
    r = GGUFReader(path)
    try:
        no, count, _ = split_info(r)
        if count == 1:
            return ShardedReader([r])
        return _open_rest(r, no, count)
    except BaseException:
        r.close()
        raise


def open_gguf(path: str | os.PathLike | Any) -> GGUFReader | ShardedReader:
    """A GGUF file for reading: a single file as its `GGUFReader`, any shard of a split model as a
    `ShardedReader` over all of them (checked). An already open reader is returned as it is."""
    if not isinstance(path, (str, os.PathLike)):
        return path
    r = GGUFReader(path)
    try:
        no, count, _ = split_info(r)
        if count == 1:
            return r
        return _open_rest(r, no, count)
    except BaseException:
        r.close()
        raise
