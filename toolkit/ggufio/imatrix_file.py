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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from llmtk.errors import GGUFFormatError, InputError
from llmtk.ggufio.constants import GGML_MAX_NAME, Key
from llmtk.ggufio.reader import escape_control

IN_SUM2 = ".in_sum2"
COUNTS = ".counts"
# Largest per-expert count accepted from a file: float32 counts are exact integers up to here.
MAX_COUNT = 1 << 53
I32_MAX = (1 << 31) - 1
U32_MAX = (1 << 32) - 1


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
    source: str = ""  # the file it was read from, for error messages

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


    def add(self, other: "Imatrix", chunk_size: int) -> None:
        """Accumulate another file's statistics (llama-imatrix's `--in-file`, load_imatrix).

        GGUF sums and counts add as they are; a legacy file's means are turned back into sums
        with `chunk_size` tokens per call. Datasets are appended, and the chunk count becomes
        the largest count over `chunk_size`."""
        src = f"{other.source}: " if other.source else ""
        for name, entry in other.entries.items():
            mine = self.entries.get(name)
            if mine is not None and mine.sums.size != entry.sums.size:
                raise InputError(f"{src}entry '{escape_control(name)}' has {entry.sums.size} values, but "
                                 f"{mine.sums.size} in the imatrix it is combined with")
            if other.is_legacy:
                sums = np.asarray(entry.sums, dtype=np.float32) * np.float32(chunk_size)
                if mine is None:
                    mine = self.entries[name] = ImatrixEntry(np.zeros_like(sums), np.zeros(1, np.int64))
                mine.sums = (mine.sums + sums).astype(np.float32)
                mine.counts = mine.counts + int(entry.counts[0]) * chunk_size
                continue
            if mine is None:
                mine = self.entries[name] = ImatrixEntry(np.zeros(entry.sums.size, np.float32),
                                                         np.zeros(entry.counts.size, np.int64))
            if mine.counts.size == 1 and entry.counts.size > 1:
                mine.counts = np.full(entry.counts.size, mine.counts[0], np.int64)
            elif mine.counts.size != entry.counts.size:
                raise InputError(f"{src}entry '{escape_control(name)}' has {entry.counts.size} counts, but "
                                 f"{mine.counts.size} in the imatrix it is combined with")
            mine.sums = (mine.sums + entry.sums).astype(np.float32)
            mine.counts = mine.counts + entry.counts
        self.datasets += other.datasets
        max_count = max((int(e.counts.max()) for e in self.entries.values() if e.counts.size), default=0)
        self.chunk_size = chunk_size
        self.chunk_count = max_count // chunk_size if chunk_size else 0
        self.has_metadata = True


def write_imatrix_gguf(path: str | os.PathLike, im: Imatrix) -> Path:
    """llama-imatrix's GGUF file: entries in name order, `in_sum2` (n_mat, n_cols) and `counts`
    (n_mat, 1) as F32; every entry is written, even partial ones (readers correct for them)."""
    from llmtk.ggufio.constants import GGUFValueType as VT
    from llmtk.ggufio import GGUFWriter

    items = [(n, e) for n, e in sorted(im.entries.items()) if e.sums.size and e.counts.size]
    with GGUFWriter(path) as w:
        w.add_kv(Key.TYPE, "imatrix", VT.STRING)
        w.add_kv(Key.IMATRIX_DATASETS, list(im.datasets), VT.ARRAY, VT.STRING)
        w.add_kv(Key.IMATRIX_CHUNK_COUNT, int(im.chunk_count), VT.UINT32)
        w.add_kv(Key.IMATRIX_CHUNK_SIZE, int(im.chunk_size), VT.UINT32)
        for name, e in items:
            n_mat = e.counts.size
            w.add_tensor_info(name + IN_SUM2, _shape(n_mat, e.sums.size // n_mat), "F32")
            w.add_tensor_info(name + COUNTS, _shape(n_mat, 1), "F32")
        for name, e in items:
            w.write_tensor(name + IN_SUM2, np.asarray(e.sums, dtype=np.float32))
            w.write_tensor(name + COUNTS, e.counts.astype(np.float32))
    return Path(path)


def _shape(n_mat: int, n: int) -> tuple[int, ...]:
    # ggml drops trailing dimensions of size 1 (ggml_n_dims)
    return (n,) if n_mat == 1 else (n_mat, n)


def write_imatrix_dat(path: str | os.PathLike, im: Imatrix, *, dataset: str | None = None) -> Path:
    """llama-imatrix's legacy `.dat`: per entry the means times ncall = ceil(max count / chunk
    size); entries without any data are skipped, experts without data store 1. Written to a
    temp file beside `path` and renamed into place."""
    chunk = max(int(im.chunk_size), 1)
    if not 0 <= int(im.chunk_count) <= I32_MAX:
        raise InputError(f"{path}: chunk count {im.chunk_count} does not fit the .dat format's int32")
    parts = []
    names = sorted(n for n, e in im.entries.items() if e.counts.size and (e.counts != 0).any())
    parts.append(struct.pack("<i", len(names)))
    for name in names:
        e = im.entries[name]
        b = name.encode()
        ncall = (int(e.counts.max()) + chunk - 1) // chunk
        if not 0 <= ncall <= I32_MAX or len(b) > I32_MAX or e.sums.size > I32_MAX:
            raise InputError(f"{path}: entry '{escape_control(name)}' has a call count {ncall} or size "
                             f"{e.sums.size} that does not fit the .dat format's int32")
        n_mat = e.counts.size
        per = np.asarray(e.sums, dtype=np.float32).reshape(n_mat, -1)
        cnt = e.counts.astype(np.float32).reshape(n_mat, 1)
        vals = np.where(cnt == 0, np.float32(1), per)
        cnt = np.where(cnt == 0, np.float32(1), cnt)
        tmp = ((vals / cnt) * np.float32(ncall)).astype("<f4").reshape(-1)
        parts += [struct.pack("<i", len(b)), b, struct.pack("<ii", ncall, tmp.size), tmp.tobytes()]
    ds = (dataset if dataset else (im.datasets[-1] if im.datasets else "")).encode()
    parts += [struct.pack("<i", int(im.chunk_count)), struct.pack("<i", len(ds)), ds]
    p = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(parts))
        os.replace(tmp_name, p)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return p


def is_gguf(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def read_imatrix(path: str | os.PathLike) -> Imatrix:
    """Load a GGUF or legacy `.dat` imatrix (GGUF when the file starts with the GGUF magic)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: imatrix file not found")
    try:
        im = _read_gguf(p) if is_gguf(p) else _read_legacy(p)
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror or e}") from None
    im.source = str(p)
    return im


def _meta_uint(path: Path, r, key: str) -> int:
    """An unsigned integer metadata value (0 when absent); anything else is a format error."""
    from llmtk.ggufio.constants import GGUFValueType as VT

    if key not in r.kv:
        return 0
    vt, _ = r.kv_types[key]
    v = r.kv[key]
    if vt not in (VT.UINT8, VT.UINT16, VT.UINT32, VT.UINT64, VT.INT8, VT.INT16, VT.INT32, VT.INT64):
        raise GGUFFormatError(f"{path}: {key} has type {vt.name}, expected an unsigned integer")
    if not 0 <= v <= U32_MAX:
        raise GGUFFormatError(f"{path}: {key} is {v}, expected 0..{U32_MAX}")
    return int(v)


def _read_gguf(path: Path) -> Imatrix:
    from llmtk.ggufio import GGUFReader
    from llmtk.ggufio.constants import GGMLType

    with GGUFReader(path) as r:
        if not r.tensors:
            raise InputError(f"{path}: no data in imatrix file")
        im = Imatrix()
        ds = r.kv.get(Key.IMATRIX_DATASETS)
        if ds is not None and not isinstance(ds, list):
            raise GGUFFormatError(f"{path}: {Key.IMATRIX_DATASETS} has type {r.kv_types[Key.IMATRIX_DATASETS][0].name}, "
                                  "expected an array of strings")
        if isinstance(ds, list):
            im.datasets = [str(s) for s in ds]
        im.has_metadata = all(k in r.kv for k in (Key.IMATRIX_DATASETS, Key.IMATRIX_CHUNK_COUNT, Key.IMATRIX_CHUNK_SIZE))
        im.chunk_count = _meta_uint(path, r, Key.IMATRIX_CHUNK_COUNT)
        im.chunk_size = _meta_uint(path, r, Key.IMATRIX_CHUNK_SIZE)
        pairs: dict[str, list] = {}
        for name, ti in r.tensors.items():
            if name.endswith(IN_SUM2):
                pairs.setdefault(name[:-len(IN_SUM2)], [None, None])[0] = ti
            elif name.endswith(COUNTS):
                pairs.setdefault(name[:-len(COUNTS)], [None, None])[1] = ti
        for name in sorted(pairs):
            s, c = pairs[name]
            shown = escape_control(name)
            if s is None or c is None:
                raise GGUFFormatError(f"{path}: mismatched sums and counts for {shown}")
            if s.qtype != GGMLType.F32 or c.qtype != GGMLType.F32:
                raise GGUFFormatError(f"{path}: sums and counts for {shown} must be F32")
            # in_sum2 ne [n_cols, n_mat], counts ne [1, n_mat] (imatrix.cpp)
            if len(s.shape) > 2 or len(c.shape) > 2 or (c.ne and c.ne[0] != 1):
                raise GGUFFormatError(f"{path}: {shown}: sums {list(s.ne)} and counts {list(c.ne)} are not "
                                      "[n_cols, n_mat] and [1, n_mat]")
            if c.n_elements == 0 or s.n_elements == 0 or s.n_elements % c.n_elements:
                raise GGUFFormatError(f"{path}: {shown} has {s.n_elements} sums for {c.n_elements} counts")
            raw_counts = np.array(r.array(c.name), dtype=np.float64).reshape(-1)
            if not (np.isfinite(raw_counts) & (raw_counts >= 0) & (raw_counts <= MAX_COUNT)).all():
                bad = raw_counts[~(np.isfinite(raw_counts) & (raw_counts >= 0) & (raw_counts <= MAX_COUNT))][0]
                raise GGUFFormatError(f"{path}: {shown} has count {bad}, expected 0..2^53")
            sums = np.array(r.array(s.name), dtype=np.float32).reshape(-1)
            counts = np.rint(raw_counts).astype(np.int64)
            im.entries[name] = ImatrixEntry(sums, counts)
    return im


def _read_legacy(path: Path) -> Imatrix:
    if not path.stat().st_size:
        raise InputError(f"{path}: empty file, expected a GGUF or legacy .dat imatrix")
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
        if len(name.encode()) >= GGML_MAX_NAME:
            raise GGUFFormatError(f"{path}: name of entry {i + 1} is {len(name.encode())} bytes long, longer than "
                                  f"any tensor name ({GGML_MAX_NAME - 1})")
        pos += length
        ncall, nval = take("<ii", f"the sizes of entry {i + 1}")
        if nval < 1 or pos + 4 * nval > len(data):
            raise GGUFFormatError(f"{path}: failed reading number of values for entry {i + 1}")
        if ncall < 0:
            raise GGUFFormatError(f"{path}: entry {i + 1} ('{escape_control(name)}') has call count {ncall} < 0")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        im.entries[name] = ImatrixEntry(sums, np.array([ncall], dtype=np.int64))
    if pos < len(data):
        if pos + 4 <= len(data):
            (im.chunk_count,) = take("<i", "the chunk count")
            if im.chunk_count < 0:
                raise GGUFFormatError(f"{path}: chunk count {im.chunk_count} < 0")
            if pos + 4 <= len(data):
                (length,) = take("<i", "the dataset name length")
                if 0 < length and pos + length <= len(data):
                    im.datasets.append(data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8", "replace"))
    return im
