"""Checkpoint readers: safetensors parsed by hand and memory-mapped, `.bin`/`.pt` only through torch.

A checkpoint is indexed into `LazyTensor`s: shape and dtype from the file header, data read from
the memory map only when `.numpy()` is called, so a conversion holds one tensor at a time.
Safetensors needs no torch: the 8-byte header length, the JSON header, then raw little-endian data
(bf16 widened to f32 by shifting its bits into the high half of a uint32).
Tensors come in llama.cpp's order: parts sorted by file name, names sorted within each part.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from llmtk.errors import InputError, ShapeError, UnsupportedError
from llmtk.ggufio.constants import GGMLType
from llmtk.ggufio.reader import escape_control

# safetensors dtype -> (numpy dtype of the stored bytes, bytes per value)
_ST_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U8": ("u1", 1), "BOOL": ("?", 1),
}
# the safetensors library's own limit on the JSON header
MAX_HEADER_BYTES = 100_000_000


def bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly (bf16 is the top half of an f32)."""
    out = u16.astype(np.uint32)
    out <<= np.uint32(16)  # in place: one f32-sized allocation
    return out.view(np.float32)


def working_dtype(x: np.ndarray) -> np.ndarray:
    """llama.cpp's converter keeps f16 and f32 as they are and widens everything else to f32."""
    if x.dtype in (np.float16, np.float32):
        return x
    return x.astype(np.float32)


@dataclass
class LazyTensor:
    """A tensor known by shape and source dtype; `numpy()` reads/computes it on demand.

    `numpy()` returns the working array (f16 for f16 sources, f32 otherwise), as llama.cpp's
    converter sees it after its `to(float32)` for other dtypes. Checkpoint tensors and stacks of
    them can also read a range of rows (`rows(a, b)`, rows = all axes but the last flattened), so
    a big tensor is converted slab by slab; `release()` drops its pages from the memory map.
    A tensor with `encoded_as` set is written as those bytes, never rounded again.
    """

    shape: tuple[int, ...]
    dtype: str  # source dtype name, e.g. "BF16", kept through transformations (for `auto`, logs)
    load: Callable[[], np.ndarray] = field(repr=False)
    rows: Callable[[int, int], np.ndarray] | None = field(default=None, repr=False)
    release: Callable[[], None] = field(default=lambda: None, repr=False)
    # set when `load()` returns the tensor already encoded in this ggml type (uint8, one row of
    # `row_size` bytes per row; `shape` stays the element shape): checkpoints that ship MXFP4 blocks
    encoded_as: GGMLType | None = None

    def numpy(self) -> np.ndarray:
        x = self.load()
        if tuple(x.shape) != tuple(self.shape):
            raise AssertionError(f"lazy tensor computed shape {x.shape}, declared {self.shape}")
        return x

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1

    def map(self, fn: Callable[[np.ndarray], np.ndarray], shape: Sequence[int] | None = None) -> "LazyTensor":
        """A lazy `fn(self)`; `shape` is the result's shape when `fn` changes it."""
        src = self
        return LazyTensor(tuple(shape) if shape is not None else self.shape, self.dtype,
                          lambda: fn(src.numpy()), release=src.release)

    def map_rows(self, fn: Callable[[np.ndarray], np.ndarray]) -> "LazyTensor":
        """A lazy elementwise `fn(self)`: keeps reading by row ranges."""
        src = self
        rows = None if src.rows is None else (lambda a, b: fn(src.rows(a, b)))
        return LazyTensor(self.shape, self.dtype, lambda: fn(src.numpy()), rows, src.release)

    @staticmethod
    def stack(items: Sequence["LazyTensor"]) -> "LazyTensor":
        """Stack along a new first axis (experts), computed only when the result is read."""
        items = list(items)
        if not items:
            raise ShapeError("no expert tensors to stack")
        for t in items[1:]:
            # every expert must be the first one's shape: rows() indexes experts by its row count
            if t.shape != items[0].shape or t.dtype != items[0].dtype:
                raise ShapeError(f"expert tensors differ: {items[0].dtype} {list(items[0].shape)} and "
                                 f"{t.dtype} {list(t.shape)}")
        shape = (len(items), *items[0].shape)

        def load() -> np.ndarray:
            first = items[0].numpy()
            out = np.empty(shape, dtype=first.dtype)
            out[0] = first
            for i, t in enumerate(items[1:], 1):
                out[i] = t.numpy()
            return out

        rows = None
        if all(t.rows is not None for t in items):
            per = items[0].n_rows

            def rows(a: int, b: int) -> np.ndarray:
                parts = []
                for e in range(a // per, (b - 1) // per + 1):
                    lo, hi = max(a, e * per) - e * per, min(b, (e + 1) * per) - e * per
                    parts.append(items[e].rows(lo, hi))
                    if hi == per:  # this expert is read to its end: its file pages can leave our RSS
                        items[e].release()
                return parts[0] if len(parts) == 1 else np.concatenate(parts)

        def release() -> None:
            for t in items:
                t.release()

        return LazyTensor(shape, items[0].dtype, load, rows, release)


class SafetensorsFile:
    """One memory-mapped `.safetensors` file; `tensors` maps name -> LazyTensor sorted by name."""

    def __init__(self, path: Path):
        self.path = path
        self._mm = None
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (n_header,) = struct.unpack("<Q", head)
            if n_header > MAX_HEADER_BYTES:
                raise InputError(f"{path}: safetensors header of {n_header} bytes is larger than the "
                                 f"{MAX_HEADER_BYTES}-byte limit")
            if 8 + n_header > size:
                raise InputError(f"{path}: safetensors header of {n_header} bytes runs past the end of the "
                                 f"{size}-byte file")
            try:
                header = json.loads(f.read(n_header))
            except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
                raise InputError(f"{path}: safetensors header is not valid JSON "
                                 f"({escape_control(str(e).splitlines()[0] if str(e) else type(e).__name__)})") from None
        if not isinstance(header, dict):
            raise InputError(f"{path}: safetensors header is not a JSON object")
        data_start = 8 + n_header
        spans = []
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            spans.append((*_check_entry(path, name, meta, size - data_start), name))
        spans.sort()
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0 and b1 < e1:
                raise InputError(f"{path}: tensors '{escape_control(n0)}' and '{escape_control(n1)}' overlap "
                                 f"(bytes [{b0}, {e0}) and [{b1}, {e1}) of the data)")
        if size > data_start:
            with open(path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        tensors: dict[str, LazyTensor] = {}
        for begin, end, name in spans:
            meta = header[name]
            dtype, shape = meta["dtype"], tuple(meta["shape"])
            np_dtype, width = _ST_DTYPES[dtype]
            n = (end - begin) // width
            start = data_start + begin
            tensors[name] = LazyTensor(shape, dtype, self._loader(start, n, np_dtype, dtype, shape),
                                       self._row_loader(start, np_dtype, width, dtype, shape),
                                       self._releaser(start, end - begin))
        self.tensors = dict(sorted(tensors.items()))

    def _loader(self, offset: int, n: int, np_dtype: str, dtype: str, shape: tuple[int, ...]):
        def load() -> np.ndarray:
            raw = np.frombuffer(self._mm, dtype=np_dtype, count=n, offset=offset) if n else np.empty(0, np_dtype)
            return _widen(raw.reshape(shape), dtype)
        return load

    def _row_loader(self, offset: int, np_dtype: str, width: int, dtype: str, shape: tuple[int, ...]):
        cols = shape[-1] if shape else 1

        def rows(a: int, b: int) -> np.ndarray:
            n = (b - a) * cols
            raw = np.frombuffer(self._mm, dtype=np_dtype, count=n, offset=offset + a * cols * width) if n else \
                np.empty(0, np_dtype)
            return _widen(raw.reshape(b - a, cols), dtype)
        return rows

    def _releaser(self, offset: int, length: int):
        def release() -> None:
            # drop this tensor's pages from the map (they stay in the page cache): keeps RSS low
            if self._mm is None or length <= 0 or not hasattr(mmap, "MADV_DONTNEED"):
                return
            start = offset - offset % mmap.PAGESIZE
            try:
                self._mm.madvise(mmap.MADV_DONTNEED, start, offset + length - start)
            except (OSError, ValueError):
                pass
        return release


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entry(path: Path, name: str, meta: object, data_size: int) -> tuple[int, int]:
    """(begin, end) of one header entry's bytes in the data region, after checking that it is
    `{"dtype": known, "shape": [ints >= 0], "data_offsets": [begin, end]}` with end - begin equal
    to dtype x shape and inside the `data_size` bytes after the header."""
    shown = escape_control(name)
    if not isinstance(meta, dict):
        raise InputError(f"{path}: tensor '{shown}' has a header entry of type {type(meta).__name__}, "
                         "expected an object")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
        raise UnsupportedError(f"{path}: tensor '{shown}' has dtype {escape_control(repr(dtype))[:40]}; "
                               "llmtk reads " + ", ".join(_ST_DTYPES))
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise InputError(f"{path}: tensor '{shown}' has shape {escape_control(repr(shape))[:60]}, expected a "
                         "list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise InputError(f"{path}: tensor '{shown}' has data_offsets {escape_control(repr(offsets))[:60]}, "
                         "expected [begin, end]")
    width = _ST_DTYPES[dtype][1]
    n = 1
    for d in shape:
        n *= d  # Python ints: no wrap-around (np.prod of [2^32, 2^32] is 0)
    begin, end = offsets
    if not 0 <= begin <= end <= data_size or end - begin != n * width:
        raise InputError(f"{path}: tensor '{shown}' ({dtype} {shape}) has data offsets [{begin}, {end}) that do "
                         f"not fit its shape ({n * width} bytes) or the {data_size}-byte data region")
    return begin, end


def _widen(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return bf16_to_f32(raw)
    if dtype in ("F32", "F16"):
        return raw  # a read-only view of the map: nothing is copied until it is converted
    return raw.astype(np.float32)


def _torch_tensors(path: Path) -> dict[str, LazyTensor]:
    """A `.bin`/`.pt` state dict through torch with weights_only=True (never a full unpickle)."""
    try:
        import torch
    except ImportError:
        raise UnsupportedError(f"{path}: PyTorch checkpoints need torch (pip install llmtk[torch]); "
                               "safetensors checkpoints do not") from None
    try:
        state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # torch raises many types for hostile or foreign pickles
        raise InputError(f"{path}: torch.load(weights_only=True) refused the checkpoint: "
                         f"{str(e).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out: dict[str, LazyTensor] = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        dtype = str(t.dtype).removeprefix("torch.").upper().replace("FLOAT", "F").replace("BFLOAT16", "BF16")

        def load(t=t) -> np.ndarray:
            if t.dtype == torch.bfloat16:
                return bf16_to_f32(t.contiguous().view(torch.int16).numpy().view(np.uint16))
            return working_dtype(t.contiguous().numpy())

        out[name] = LazyTensor(tuple(t.shape), {"F32": "F32", "F16": "F16"}.get(dtype, dtype), load)
    return out


@dataclass
class Checkpoint:
    """All tensors of an HF model folder, in llama.cpp's iteration order."""

    tensors: dict[str, LazyTensor]
    files: list[Path]
    _keep: list = field(default_factory=list, repr=False)  # open maps, closed with the checkpoint

    def close(self) -> None:
        for f in self._keep:
            if getattr(f, "_mm", None) is not None:
                try:
                    f._mm.close()
                except BufferError:  # a caller still holds a view; the map closes with it
                    pass
        self._keep.clear()


def _is_file(path: Path) -> bool:
    """Path.is_file that also says no to names the system refuses (too long, bad bytes)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _check_shard_name(index_file: Path, name: str, part: object) -> None:
    """A weight_map value must be a file name inside the checkpoint folder: a relative path
    without '..' (an index naming /etc/passwd or ../x is refused, not opened)."""
    from pathlib import PurePosixPath, PureWindowsPath

    shown = escape_control(name)
    if not isinstance(part, str) or not part:
        raise InputError(f"{index_file}: weight_map entry '{shown}' is {escape_control(repr(part))[:60]}, "
                         "expected a shard file name")
    pp, wp = PurePosixPath(part), PureWindowsPath(part)
    if pp.is_absolute() or wp.is_absolute() or wp.drive or ".." in pp.parts or ".." in wp.parts or "\0" in part:
        raise InputError(f"{index_file}: weight_map entry '{shown}' names '{escape_control(part)}', which is "
                         "outside the checkpoint folder")


def _parts(hf_dir: Path, prefix: str, suffix: str) -> list[str]:
    return sorted(n for n in os.listdir(hf_dir) if n.startswith(prefix) and n.endswith(suffix))


def open_checkpoint(hf_dir: Path) -> Checkpoint:
    """Index `model*.safetensors` (with `model.safetensors.index.json` when sharded), else
    `pytorch_model*.bin` through torch; the index and the parts must name the same tensors."""
    parts = _parts(hf_dir, "model", ".safetensors")
    is_st = bool(parts) or (hf_dir / "model.safetensors.index.json").is_file()
    if not is_st:
        parts = _parts(hf_dir, "pytorch_model", ".bin") or _parts(hf_dir, "consolidated", ".pt")
    if not parts and not is_st:
        raise InputError(f"{hf_dir}: no model.safetensors, model-*-of-*.safetensors or pytorch_model*.bin "
                         "weights found")
    index_file = hf_dir / ("model.safetensors.index.json" if is_st else "pytorch_model.bin.index.json")
    from_index: dict[str, str] = {}
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text(encoding="utf-8")).get("weight_map")
        except json.JSONDecodeError as e:
            raise InputError(f"{index_file}: not valid JSON ({e})") from None
        except (UnicodeDecodeError, ValueError, RecursionError, AttributeError) as e:
            raise InputError(f"{index_file}: not a JSON object with a 'weight_map' ({type(e).__name__})") from None
        if not isinstance(weight_map, dict):
            raise InputError(f"{index_file}: has no 'weight_map' object")
        for name, part in weight_map.items():
            _check_shard_name(index_file, name, part)
        from_index = weight_map
        parts = sorted(dict.fromkeys(weight_map.values()))
        missing = [p for p in parts if not _is_file(hf_dir / p)]
        if missing:
            raise InputError(f"{hf_dir}: the index names shard(s) that are missing: {', '.join(map(escape_control, missing))}")
    tensors: dict[str, LazyTensor] = {}
    keep: list = []
    for part in parts:
        path = hf_dir / part
        if is_st:
            st = SafetensorsFile(path)
            keep.append(st)
            tensors.update(st.tensors)
        else:
            tensors.update(_torch_tensors(path))
    if from_index and set(from_index) != set(tensors):
        missing = sorted(set(from_index) - set(tensors))
        extra = sorted(set(tensors) - set(from_index))
        raise InputError(f"{hf_dir}: the weight index and the shards disagree: missing {missing[:5]}, "
                         f"not in the index {extra[:5]}")
    return Checkpoint(tensors, [hf_dir / p for p in parts], keep)
