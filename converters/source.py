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

from llmtk.errors import InputError, UnsupportedError

# safetensors dtype -> (numpy dtype of the stored bytes, bytes per value)
_ST_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U8": ("u1", 1), "BOOL": ("?", 1),
}


def bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly (bf16 is the top half of an f32)."""
    return (u16.astype(np.uint32) << np.uint32(16)).view(np.float32)


def working_dtype(x: np.ndarray) -> np.ndarray:
    """llama.cpp's converter keeps f16 and f32 as they are and widens everything else to f32."""
    if x.dtype in (np.float16, np.float32):
        return x
    return x.astype(np.float32)


@dataclass
class LazyTensor:
    """A tensor known by shape and source dtype; `numpy()` reads/computes it on demand.

    `numpy()` returns the working array (f16 for f16 sources, f32 otherwise), as llama.cpp's
    converter sees it after its `to(float32)` for other dtypes.
    """

    shape: tuple[int, ...]
    dtype: str  # source dtype name, e.g. "BF16", kept through transformations (for `auto`, logs)
    load: Callable[[], np.ndarray] = field(repr=False)

    def numpy(self) -> np.ndarray:
        x = self.load()
        if tuple(x.shape) != tuple(self.shape):
            raise AssertionError(f"lazy tensor computed shape {x.shape}, declared {self.shape}")
        return x

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def map(self, fn: Callable[[np.ndarray], np.ndarray], shape: Sequence[int] | None = None) -> "LazyTensor":
        """A lazy `fn(self)`; `shape` is the result's shape when `fn` changes it."""
        src = self
        return LazyTensor(tuple(shape) if shape is not None else self.shape, self.dtype,
                          lambda: fn(src.numpy()))

    @staticmethod
    def stack(items: Sequence["LazyTensor"]) -> "LazyTensor":
        """Stack along a new first axis (experts), computed only when the result is read."""
        items = list(items)
        shape = (len(items), *items[0].shape)

        def load() -> np.ndarray:
            first = items[0].numpy()
            out = np.empty(shape, dtype=first.dtype)
            out[0] = first
            for i, t in enumerate(items[1:], 1):
                out[i] = t.numpy()
            return out

        return LazyTensor(shape, items[0].dtype, load)


class SafetensorsFile:
    """One memory-mapped `.safetensors` file; `tensors` maps name -> LazyTensor sorted by name."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (n_header,) = struct.unpack("<Q", head)
            if 8 + n_header > size:
                raise InputError(f"{path}: safetensors header of {n_header} bytes runs past the end of the "
                                 f"{size}-byte file")
            try:
                header = json.loads(f.read(n_header))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(f"{path}: safetensors header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise InputError(f"{path}: safetensors header is not a JSON object")
        self._mm = None
        data_start = 8 + n_header
        if size > data_start:
            with open(path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        tensors: dict[str, LazyTensor] = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            dtype = meta.get("dtype")
            if dtype not in _ST_DTYPES:
                raise UnsupportedError(f"{path}: tensor {name!r} has dtype {dtype}; llmtk reads "
                                       + ", ".join(_ST_DTYPES))
            shape = tuple(int(d) for d in meta["shape"])
            begin, end = (int(o) for o in meta["data_offsets"])
            np_dtype, width = _ST_DTYPES[dtype]
            n = int(np.prod(shape, dtype=np.int64))
            if end - begin != n * width or data_start + end > size or begin < 0:
                raise InputError(f"{path}: tensor {name!r} ({dtype} {list(shape)}) has data offsets "
                                 f"[{begin}, {end}) that do not fit its shape or the file")
            tensors[name] = LazyTensor(shape, dtype, self._loader(data_start + begin, n, np_dtype, dtype, shape))
        self.tensors = dict(sorted(tensors.items()))

    def _loader(self, offset: int, n: int, np_dtype: str, dtype: str, shape: tuple[int, ...]):
        def load() -> np.ndarray:
            raw = np.frombuffer(self._mm, dtype=np_dtype, count=n, offset=offset) if n else np.empty(0, np_dtype)
            raw = raw.reshape(shape)
            if dtype == "BF16":
                return bf16_to_f32(raw)
            if dtype in ("F32", "F16"):
                return raw  # a read-only view of the map: nothing is copied until it is converted
            return raw.astype(np.float32)
        return load


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
        if not isinstance(weight_map, dict):
            raise InputError(f"{index_file}: has no 'weight_map' object")
        from_index = weight_map
        parts = sorted(dict.fromkeys(weight_map.values()))
        missing = [p for p in parts if not (hf_dir / p).is_file()]
        if missing:
            raise InputError(f"{hf_dir}: the index names shard(s) that are missing: {', '.join(missing)}")
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
