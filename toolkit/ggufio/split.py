"""Split a GGUF model into shards and merge shards back, byte for byte as llama-gguf-split does.

What llama.cpp's `tools/gguf-split` writes (ggml's `gguf.cpp` lays each file out):

- **split**: shard 1 gets every metadata entry of the input except `split.*`, in the input's
  order; every shard then ends with `split.no` (u16, 0-based), `split.tensors.count` (i32, the
  model's total) and `split.count` (u16) -- in that order, because ggml's `gguf_set_val_*`
  removes a key and appends it again and the count is set last, once the number of shards is
  known. Tensors keep the input's order. `max_tensors` (default 128) starts a new shard at every
  multiple of it; `max_size` starts one when the shard's tensor bytes (each padded to 32, the
  metadata not counted) would pass it, so a tensor larger than the limit gets a shard of its own,
  except as the first tensor, which llama.cpp refuses ("one of splits have 0 tensors").
- **merge**: the first shard's metadata with `split.count` set to 0 (so moved to the end; the
  other `split.*` keys stay), then every shard's tensors in shard order.
- Both write GGUF v3, alignment 32 (ggml's default, whatever `general.alignment` the input has:
  inputs with another alignment are refused here), tensor infos with ggml's `n_dims` (trailing
  dimensions of 1 dropped, at least 1), each tensor's data padded with zeros to 32 bytes. Shard
  names are `llama_split_path`'s `<prefix>-00001-of-00003.gguf`.

Writes are atomic: all shards go to a temporary folder beside the output and are renamed into
place only when every one is complete; on any error or Ctrl-C nothing is left behind.
"""
from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtk.errors import InputError, UnsupportedError
from llmtk.ggufio.constants import (
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_VALUE_STRUCT,
    GGUFValueType,
    Key,
)
from llmtk.ggufio.reader import GGUFReader, TensorInfo, escape_control
from llmtk.ggufio.shards import (
    SPLIT_KEYS,
    ShardedReader,
    open_gguf,
    open_shards,
    split_info,
    split_path,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_TENSORS",
    "ShardPlan",
    "SplitResult",
    "merge_gguf",
    "parse_split_size",
    "plan_split",
    "split_gguf",
]

VT = GGUFValueType
ALIGN = GGUF_DEFAULT_ALIGNMENT
DEFAULT_MAX_TENSORS = 128  # llama-gguf-split's --split-max-tensors default
_HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, n_tensors, n_kv
_SIZE = re.compile(r"^([0-9]+)([MG])$")
_UNITS = {"M": 1000 ** 2, "G": 1000 ** 3}  # llama-gguf-split's units are decimal

# One metadata entry as written: (key, value, value type, array item type or None).
KVEntry = tuple[str, Any, GGUFValueType, "GGUFValueType | None"]
Progress = Callable[[int, int, int, int], None]  # (tensors done, tensors in all, bytes done, bytes in all)


def _pad(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def parse_split_size(text: str) -> int:
    """Bytes of llama-gguf-split's size spelling: a positive integer followed by M (10^6) or G (10^9)."""
    m = _SIZE.match(str(text).strip())
    if not m:
        raise InputError(f"split size {text!r} is not N followed by M (megabytes, 10^6) or G "
                         f"(gigabytes, 10^9), as llama-gguf-split writes it (e.g. 500M, 2G)")
    n = int(m.group(1))
    if n <= 0:
        raise InputError(f"split size {text!r} must be positive")
    return n * _UNITS[m.group(2)]


def ggml_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` (NumPy order) as ggml writes it back: `ggml_n_dims` drops trailing ne of 1 (leading
    here) and keeps at least one dimension."""
    s = tuple(shape) or (1,)
    while len(s) > 1 and s[0] == 1:
        s = s[1:]
    return s


def _value_size(vt: GGUFValueType, value: Any) -> int:
    if vt == VT.STRING:
        return 8 + len(value.encode("utf-8"))
    return struct.calcsize("<" + GGUF_VALUE_STRUCT[vt])


def _kv_size(key: str, value: Any, vt: GGUFValueType, item: GGUFValueType | None) -> int:
    n = 8 + len(key.encode("utf-8")) + 4
    if vt != VT.ARRAY:
        return n + _value_size(vt, value)
    n += 4 + 8
    if item == VT.STRING:
        return n + sum(8 + len(s.encode("utf-8")) for s in value)
    return n + len(value) * _value_size(item, None)  # type: ignore[arg-type]


def meta_size(kv: list[KVEntry], tensors: list[TensorInfo]) -> int:
    """Bytes before the data section of a file with this metadata and these tensors
    (ggml's `gguf_get_meta_size`: header, metadata, tensor infos, padding to 32)."""
    n = _HEADER_BYTES + sum(_kv_size(*e) for e in kv)
    n += sum(8 + len(t.name.encode("utf-8")) + 4 + 8 * len(ggml_shape(t.shape)) + 4 + 8 for t in tensors)
    return _pad(n)


@dataclass
class ShardPlan:
    """One output file: its metadata entries and tensors in order, and its sizes."""

    path: Path
    kv: list[KVEntry]
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def meta_size(self) -> int:
        return meta_size(self.kv, self.tensors)

    @property
    def tensor_bytes(self) -> int:
        """Tensor data without padding."""
        return sum(t.n_bytes for t in self.tensors)

    @property
    def file_size(self) -> int:
        return self.meta_size + sum(_pad(t.n_bytes) for t in self.tensors)

    @property
    def size_mb(self) -> int:
        """The size llama-gguf-split prints (`total_size = NM`): metadata plus unpadded tensor
        bytes, in whole decimal megabytes."""
        return (self.meta_size + self.tensor_bytes) // 1000 // 1000


@dataclass
class SplitResult:
    """What `split_gguf`/`merge_gguf` wrote (or would write, with `dry_run`)."""

    source: Path
    shards: list[ShardPlan]
    n_tensors: int
    written: bool
    inputs: list[Path] = field(default_factory=list)  # every file read (all shards of a split input)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.shards]


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------

def _entries(model: GGUFReader | ShardedReader, skip: tuple[str, ...] = ()) -> list[KVEntry]:
    return [(k, v, *model.kv_types[k]) for k, v in model.kv.items() if k not in skip]


def _check_input(model: GGUFReader | ShardedReader) -> None:
    for t in model.tensors.values():
        if 0 in t.shape:  # ggml_n_dims would drop the zero and write a tensor of another size
            raise UnsupportedError(f"{model.path}: tensor '{escape_control(t.name)}' has shape {t.ne} with "
                                   f"a zero dimension, which llama-gguf-split writes with a wrong shape")
    if model.alignment != ALIGN:
        raise UnsupportedError(f"{model.path}: {Key.ALIGNMENT} is {model.alignment}; llama-gguf-split "
                               f"writes every file with ggml's default alignment {ALIGN} and would keep the "
                               f"key, so its output would be unreadable. Change the alignment first")


def _split_kv(i: int, n_split: int, n_tensors: int) -> list[KVEntry]:
    return [(Key.SPLIT_NO, i, VT.UINT16, None), (Key.SPLIT_TENSORS_COUNT, n_tensors, VT.INT32, None),
            (Key.SPLIT_COUNT, n_split, VT.UINT16, None)]


def plan_split(model: GGUFReader | ShardedReader, out_prefix: str | os.PathLike, *,
               max_size: int | None = None, max_tensors: int | None = None,
               no_tensor_first_split: bool = False) -> list[ShardPlan]:
    """The shards llama-gguf-split makes of `model`: by `max_size` bytes of tensor data per shard,
    or by `max_tensors` tensors per shard (the default, 128); `no_tensor_first_split` puts only the
    metadata in shard 1."""
    if max_size is not None and max_tensors is not None:
        raise InputError("split by size or by tensor count, not both")
    if max_size is not None and max_size < 1:
        raise InputError(f"maximum shard size {max_size} must be at least 1 byte")
    if max_tensors is None and max_size is None:
        max_tensors = DEFAULT_MAX_TENSORS
    if max_tensors is not None and max_tensors < 1:
        raise InputError(f"maximum tensors per shard {max_tensors} must be at least 1")
    _check_input(model)
    infos = list(model.tensors.values())
    n_tensors = len(infos)
    groups: list[list[TensorInfo]] = [[]]
    if no_tensor_first_split:
        groups.append([])
    current = 0  # tensor bytes (padded) of the last group; the metadata is not counted
    for i, t in enumerate(infos):
        n = _pad(t.n_bytes)
        if max_size is not None:
            new = current + n > max_size
        else:
            new = i > 0 and i % max_tensors == 0  # type: ignore[operator]
        if new:
            if not groups[-1]:
                raise InputError(f"{model.path}: shard {len(groups)} would hold no tensor: tensor "
                                 f"'{escape_control(t.name)}' alone takes {n} bytes, more than the maximum "
                                 f"shard size of {max_size} bytes (llama-gguf-split refuses this too); "
                                 f"allow at least {n} bytes per shard")
            groups.append([])
            current = n
        else:
            current += n
        groups[-1].append(t)
    n_split = len(groups)
    base = _entries(model, skip=SPLIT_KEYS)
    return [ShardPlan(split_path(out_prefix, i, n_split),
                      (base if i == 0 else []) + _split_kv(i, n_split, n_tensors), g)
            for i, g in enumerate(groups)]


def _plan_merge(model: ShardedReader, out_path: Path) -> ShardPlan:
    _check_input(model)
    kv = _entries(model, skip=(Key.SPLIT_COUNT,)) + [(Key.SPLIT_COUNT, 0, VT.UINT16, None)]
    return ShardPlan(out_path, kv, list(model.tensors.values()))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _write_files(model: GGUFReader | ShardedReader, plans: list[ShardPlan], progress: Progress | None) -> None:
    """Write every planned file into a temporary folder beside the first, then rename them all into
    place; on any error nothing new is left (files already renamed over are removed again)."""
    from llmtk.ggufio.writer import GGUFWriter
    from llmtk.outputs import remove_quietly, temp_path, writing

    total = sum(t.n_bytes for p in plans for t in p.tensors)
    n_total = sum(len(p.tensors) for p in plans)
    done = n_done = 0
    if progress is not None:
        progress(0, n_total, 0, total)
    tmp_dir = temp_path(plans[0].path, folder=True)
    placed: list[Path] = []
    try:
        staged: list[tuple[Path, Path]] = []
        for plan in plans:
            tmp = tmp_dir / plan.path.name
            with writing(plan.path), GGUFWriter(tmp) as w:
                for key, value, vt, item in plan.kv:
                    w.add_kv(key, value, vt, item)
                for t in plan.tensors:
                    w.add_tensor_info(t.name, ggml_shape(t.shape), t.qtype, t.n_bytes)
                for t in plan.tensors:
                    w.write_tensor(t.name, model.raw(t.name))
                    done += t.n_bytes
                    n_done += 1
                    if progress is not None:
                        progress(n_done, n_total, done, total)
            if tmp.stat().st_size != plan.file_size:  # the planned layout is what was written
                raise AssertionError(f"{plan.path}: wrote {tmp.stat().st_size} bytes, planned {plan.file_size}")
            staged.append((tmp, plan.path))
        for tmp, dest in staged:
            with writing(dest):
                os.replace(tmp, dest)
            placed.append(dest)
    except BaseException:
        for p in placed:
            remove_quietly(p)
        raise
    finally:
        remove_quietly(tmp_dir)


def _check_outputs(model: GGUFReader | ShardedReader, paths: list[Path]) -> None:
    from llmtk.outputs import check_output_file

    inputs = list(getattr(model, "paths", [model.path]))
    for p in paths:
        check_output_file(p, inputs=inputs)


def split_gguf(in_path: str | os.PathLike, out_prefix: str | os.PathLike, *, max_size: int | None = None,
               max_tensors: int | None = None, no_tensor_first_split: bool = False, dry_run: bool = False,
               progress: Progress | None = None) -> SplitResult:
    """Split the GGUF `in_path` into `<out_prefix>-0000i-of-0000n.gguf` as llama-gguf-split does.

    `in_path` may itself be any shard of a split model: all of its shards are read, as if merged
    first. Existing shards of the same names are replaced (as llama-gguf-split does)."""
    with open_gguf(in_path) as model:
        plans = plan_split(model, out_prefix, max_size=max_size, max_tensors=max_tensors,
                           no_tensor_first_split=no_tensor_first_split)
        _check_outputs(model, [p.path for p in plans])
        if not dry_run:
            _write_files(model, plans, progress)
        log.info("%s: %d shards, %d tensors", in_path, len(plans), len(model.tensors))
        return SplitResult(Path(in_path), plans, len(model.tensors), not dry_run,
                           list(getattr(model, "paths", [model.path])))


def merge_gguf(in_path: str | os.PathLike, out_path: str | os.PathLike, *, dry_run: bool = False,
               progress: Progress | None = None) -> SplitResult:
    """Merge the split model that `in_path` (any of its shards) belongs to into `out_path`, as
    `llama-gguf-split --merge` does. `out_path` must not exist (llama-gguf-split refuses too)."""
    out = Path(out_path)
    if out.exists():
        raise InputError(f"{out}: already exists; remove it or choose another output file "
                         f"(merge does not overwrite, as llama-gguf-split)")
    with GGUFReader(in_path) as probe:
        if Key.SPLIT_COUNT not in probe.kv:
            raise InputError(f"{probe.path}: has no {Key.SPLIT_COUNT}, so it is not a shard of a split model")
        split_info(probe)  # the split keys are integers in range
        if int(probe.kv[Key.SPLIT_COUNT]) == 0:
            raise InputError(f"{probe.path}: {Key.SPLIT_COUNT} is 0: it is a merged file already")
    with open_shards(in_path) as model:
        plan = _plan_merge(model, out)
        _check_outputs(model, [out])
        if not dry_run:
            _write_files(model, [plan], progress)
        log.info("%s: merged %d shards, %d tensors", out, model.n_split, len(model.tensors))
        return SplitResult(model.path, [plan], len(model.tensors), not dry_run, list(model.paths))
