"""Importance-matrix files as llama-imatrix writes them, and the per-column means llama-quantize uses.

Two formats (tools/imatrix/imatrix.cpp, common/imatrix-loader.cpp):

GGUF (current): metadata `general.type = "imatrix"`, `imatrix.datasets` (string array),
`imatrix.chunk_count`, `imatrix.chunk_size` (u32); per weight two F32 tensors,
`<name>.in_sum2` (ne [n_cols, n_mat]: sum of squared activations per column, per expert) and
`<name>.counts` (ne [1, n_mat]: how many activation rows were summed).

Legacy `.dat` (little endian):
    n_entries i32
    n_entries x (name_len i32, name bytes, ncall i32, nval i32, values f32[nval])
    [chunk_count i32, dataset_len i32, dataset bytes]     (optional trailer)
where values are the per-column means scaled by ncall (so values/ncall is the mean).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import GGUFFormatError, InputError

IN_SUM2 = ".in_sum2"
COUNTS = ".counts"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"


@dataclass
class ImatrixEntry:
    """One weight's statistics: `sums` (n_mat * n_cols,) f32 and `counts` (n_mat,) int64."""

    sums: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64]

    @property
    def n_mat(self) -> int:
        return len(self.counts)


@dataclass
class Imatrix:
    """An importance matrix as loaded from either format."""

    entries: dict[str, ImatrixEntry] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    is_legacy: bool = False
    has_metadata: bool = False

    def means(self) -> dict[str, npt.NDArray[np.float32]]:
        """Per-column mean squared activation of every entry, as llama-quantize computes it.

        GGUF: in_sum2 / count per expert, in float32 (1 where a count is 0);
        legacy: values / ncall (values as stored when ncall is 0).
        """
        out: dict[str, np.ndarray] = {}
        for name, e in self.entries.items():
            sums = np.asarray(e.sums, dtype=np.float32).reshape(-1)
            if self.is_legacy:
                ncall = int(e.counts[0]) if len(e.counts) else 0
                out[name] = (sums / np.float32(ncall)).astype(np.float32) if ncall > 0 else sums.copy()
                continue
            n_mat = max(len(e.counts), 1)
            per = sums.reshape(n_mat, -1)
            cnt = np.asarray(e.counts, dtype=np.float32).reshape(n_mat, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                m = np.where(cnt > 0, per / np.where(cnt > 0, cnt, np.float32(1)), np.float32(1))
            out[name] = m.astype(np.float32).reshape(-1)
        return out


def is_gguf(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def read_imatrix(path: str | os.PathLike) -> Imatrix:
    """Load a GGUF or legacy `.dat` imatrix (GGUF when the file starts with the GGUF magic)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: imatrix file not found")
    return _read_gguf(p) if is_gguf(p) else _read_legacy(p)


def _read_gguf(path: Path) -> Imatrix:
    from .gguf_file import GGUFReader
    from .constants import GGMLType

    with GGUFReader(path) as r:
        if not r.tensors:
            raise InputError(f"{path}: no data in imatrix file")
        im = Imatrix()
        ds = r.kv.get(KEY_DATASETS)
        if isinstance(ds, list):
            im.datasets = [str(s) for s in ds]
        im.has_metadata = all(k in r.kv for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE))
        im.chunk_count = int(r.kv.get(KEY_CHUNK_COUNT, 0))
        im.chunk_size = int(r.kv.get(KEY_CHUNK_SIZE, 0))
        pairs: dict[str, list] = {}
        for name, ti in r.tensors.items():
            if name.endswith(IN_SUM2):
                pairs.setdefault(name[:-len(IN_SUM2)], [None, None])[0] = ti
            elif name.endswith(COUNTS):
                pairs.setdefault(name[:-len(COUNTS)], [None, None])[1] = ti
        for name in sorted(pairs):
            s, c = pairs[name]
            if s is None or c is None:
                raise GGUFFormatError(f"{path}: mismatched sums and counts for {name}")
            if s.qtype != GGMLType.F32 or c.qtype != GGMLType.F32:
                raise GGUFFormatError(f"{path}: sums and counts for {name} must be F32")
            sums = np.array(r.array(s.name), dtype=np.float32).reshape(-1)
            counts = np.rint(np.array(r.array(c.name), dtype=np.float64).reshape(-1)).astype(np.int64)
            if counts.size == 0 or sums.size % counts.size:
                raise GGUFFormatError(f"{path}: {name} has {sums.size} sums for {counts.size} counts")
            im.entries[name] = ImatrixEntry(sums, counts)
    return im


def _read_legacy(path: Path) -> Imatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str, what: str):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > len(data):
            raise GGUFFormatError(f"{path}: truncated legacy imatrix while reading {what}")
        v = struct.unpack_from(fmt, data, pos)
        pos += n
        return v

    (n_entries,) = take("<i", "the entry count")
    if n_entries < 1:
        raise InputError(f"{path}: no data in imatrix file (not GGUF, and {n_entries} legacy entries)")
    im = Imatrix(is_legacy=True)
    for i in range(n_entries):
        (length,) = take("<i", f"the name length of entry {i + 1}")
        if length < 0 or pos + length > len(data):
            raise GGUFFormatError(f"{path}: failed reading name for entry {i + 1}")
        name = data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        pos += length
        ncall, nval = take("<ii", f"the sizes of entry {i + 1}")
        if nval < 1 or pos + 4 * nval > len(data):
            raise GGUFFormatError(f"{path}: failed reading number of values for entry {i + 1}")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        im.entries[name] = ImatrixEntry(sums, np.array([ncall], dtype=np.int64))
    if pos < len(data):
        if pos + 4 <= len(data):
            (im.chunk_count,) = take("<i", "the chunk count")
            if pos + 4 <= len(data):
                (length,) = take("<i", "the dataset name length")
                if 0 < length and pos + length <= len(data):
                    im.datasets.append(data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8", "replace"))
    return im
