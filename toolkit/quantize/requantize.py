"""`llmtk quantize`: llama-quantize's whole-model quantization, byte for byte.

The per-tensor types come from `quant_rules` (llama.cpp's mixes); this module does the rest of
`llama_model_quantize_impl` and `tools/quantize/quantize.cpp`: the imatrix (means per column,
--include/--exclude-weights), metadata (`general.file_type`, `general.quantization_version`,
`quantize.imatrix.*`, --override-kv, --prune-layers), the tensor order and 32-byte alignment,
and the streaming: one tensor at a time is dequantized to f32, quantized with
`llmtk.kernels.quantize` (numba, both cores) and written, into a temp file renamed at the end.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from llmtk.errors import InputError
from llmtk.ggufio.constants import (
    GGML_QUANTIZATION_VERSION,
    GGML_TYPE_TRAITS,
    GGMLType,
    GGUFValueType,
    Key,
    LlamaFileType,
    tensor_nbytes,
)
from llmtk.ggufio.reader import escape_control
from llmtk.quantize.rules import (
    FileType,
    MixOptions,
    ModelInfo,
    TensorChoice,
    file_type,
    ggml_dims,
    ggml_type_name,
    llama_order,
    plan_types,
)

log = logging.getLogger(__name__)

VT = GGUFValueType
SPLIT_KEYS = (Key.SPLIT_NO, Key.SPLIT_COUNT, Key.SPLIT_TENSORS_COUNT)
SPLIT_PATH_FORMAT = "{prefix}-{no:05d}-of-{count:05d}.gguf"
SLAB_BYTES = 8 << 20            # f32 bytes dequantized at once: bounds memory to a slab, not a tensor

# the file type llama.cpp's loader guesses from the most common tensor type (for COPY)
_FTYPE_OF_TYPE: dict[GGMLType, LlamaFileType] = {
    GGMLType.F32: LlamaFileType.ALL_F32, GGMLType.F16: LlamaFileType.MOSTLY_F16,
    GGMLType.BF16: LlamaFileType.MOSTLY_BF16, GGMLType.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    GGMLType.Q4_1: LlamaFileType.MOSTLY_Q4_1, GGMLType.Q5_0: LlamaFileType.MOSTLY_Q5_0,
    GGMLType.Q5_1: LlamaFileType.MOSTLY_Q5_1, GGMLType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    GGMLType.Q2_K: LlamaFileType.MOSTLY_Q2_K, GGMLType.Q3_K: LlamaFileType.MOSTLY_Q3_K_M,
    GGMLType.Q4_K: LlamaFileType.MOSTLY_Q4_K_M, GGMLType.Q5_K: LlamaFileType.MOSTLY_Q5_K_M,
    GGMLType.Q6_K: LlamaFileType.MOSTLY_Q6_K, GGMLType.TQ1_0: LlamaFileType.MOSTLY_TQ1_0,
    GGMLType.TQ2_0: LlamaFileType.MOSTLY_TQ2_0, GGMLType.IQ2_XXS: LlamaFileType.MOSTLY_IQ2_XXS,
    GGMLType.IQ2_XS: LlamaFileType.MOSTLY_IQ2_XS, GGMLType.IQ2_S: LlamaFileType.MOSTLY_IQ2_S,
    GGMLType.IQ3_XXS: LlamaFileType.MOSTLY_IQ3_XXS, GGMLType.IQ1_S: LlamaFileType.MOSTLY_IQ1_S,
    GGMLType.IQ1_M: LlamaFileType.MOSTLY_IQ1_M, GGMLType.IQ4_NL: LlamaFileType.MOSTLY_IQ4_NL,
    GGMLType.IQ4_XS: LlamaFileType.MOSTLY_IQ4_XS, GGMLType.IQ3_S: LlamaFileType.MOSTLY_IQ3_S,
    GGMLType.NVFP4: LlamaFileType.MOSTLY_NVFP4, GGMLType.Q1_0: LlamaFileType.MOSTLY_Q1_0,
    GGMLType.Q2_0: LlamaFileType.MOSTLY_Q2_0,
}


@dataclass(frozen=True)
class KVOverride:
    """One `--override-kv KEY=TYPE:VALUE` (TYPE int, float, bool or str, as llama.cpp takes them)."""

    key: str
    vtype: GGUFValueType
    value: Any

    @classmethod
    def parse(cls, text: str) -> "KVOverride":
        key, sep, rest = text.partition("=")
        if not sep or not key or len(key) >= 128:
            raise InputError(f"malformed KV override {text!r}: expected KEY=TYPE:VALUE")
        kind, sep, val = rest.partition(":")
        if not sep:
            raise InputError(f"invalid type for KV override {text!r}: use int:, float:, bool: or str:")
        if kind == "int":
            m = re.match(r"\s*[+-]?\d+", val)
            # llama-quantize stores integers as u32 of the absolute value
            return cls(key, VT.UINT32, abs(int(m.group(0))) & 0xFFFFFFFF if m else 0)
        if kind == "float":
            try:
                return cls(key, VT.FLOAT32, float(val))
            except ValueError:
                return cls(key, VT.FLOAT32, 0.0)
        if kind == "bool":
            if val not in ("true", "false"):
                raise InputError(f"invalid boolean value for KV override {text!r}: use true or false")
            return cls(key, VT.BOOL, val == "true")
        if kind == "str":
            if len(val) > 127:
                raise InputError(f"malformed KV override {text!r}: value cannot exceed 127 chars")
            return cls(key, VT.STRING, val)
        raise InputError(f"invalid type for KV override {text!r}: use int:, float:, bool: or str:")


@dataclass
class TensorReport:
    """What happened to one tensor (sizes in bytes)."""

    index: int
    name: str
    ne: tuple[int, ...]
    src_type: GGMLType
    dst_type: GGMLType
    src_bytes: int
    dst_bytes: int
    imatrix: str = ""                  # "", "used", "missing", "size mismatch"

    def log_line(self, n_total: int, dry_run: bool = False) -> str:
        """llama-quantize's line for this tensor (its --dry-run variant names the new type last)."""
        ne = ", ".join(f"{d:5d}" for d in (tuple(self.ne) + (1, 1, 1, 1))[:4])
        head = (f"[{self.index:4d}/{n_total:4d}] {self.name:<36} - [{ne}], "
                f"type = {ggml_type_name(self.src_type):>6}, ")
        mib = 1024.0 * 1024.0
        if self.src_type == self.dst_type:
            return head + f"size = {self.src_bytes / mib:8.3f} MiB"
        if dry_run:
            return head + (f"size = {self.src_bytes / mib:8.2f} MiB -> {self.dst_bytes / mib:8.2f} MiB "
                           f"({ggml_type_name(self.dst_type)})")
        return head + (f"converting to {ggml_type_name(self.dst_type)} .. "
                       f"size = {self.src_bytes / mib:8.2f} MiB -> {self.dst_bytes / mib:8.2f} MiB")


@dataclass
class QuantizeResult:
    """Summary of a quantization (or of a dry run)."""

    out_paths: list[Path]
    file_type: FileType
    tensors: list[TensorReport]
    n_elements: int
    warnings: list[str] = field(default_factory=list)
    n_fallback: int = 0
    fallbacks: list[str] = field(default_factory=list)   # llama-quantize's warning per shape fallback
    imatrix_entries: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    will_require_imatrix: bool = False

    @property
    def size_in(self) -> int:
        return sum(t.src_bytes for t in self.tensors)

    @property
    def size_out(self) -> int:
        return sum(t.dst_bytes for t in self.tensors)

    def summary_lines(self) -> list[str]:
        mib = 1024.0 * 1024.0
        bpw = lambda b: b * 8.0 / self.n_elements if self.n_elements else 0.0  # noqa: E731
        lines = [f"model size  = {self.size_in / mib:8.2f} MiB ({bpw(self.size_in):.2f} BPW)",
                 f"quant size  = {self.size_out / mib:8.2f} MiB ({bpw(self.size_out):.2f} BPW)"]
        if self.dry_run and self.will_require_imatrix:
            lines.append("WARNING: dry run completed successfully, but actually completing this "
                         "quantization will require an imatrix!")
        if self.n_fallback:
            lines.append(f"WARNING: {self.n_fallback} of {len(self.tensors)} tensor(s) required "
                         f"fallback quantization")
        return lines


# ---------------------------------------------------------------------------------------------

def default_output_path(in_path: str | os.PathLike, ftype_name: str) -> Path:
    """`<IN stem>-<TYPE>.gguf` beside the input."""
    p = Path(in_path)
    return p.with_name(f"{p.stem}-{ftype_name}.gguf")


def load_imatrix_means(path: str | os.PathLike, *, include: Sequence[str] = (),
                       exclude: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], list[str], int]:
    """(per-column means by weight name, datasets, chunk count) as llama-quantize prepares them:
    `exclude` drops, then `include` keeps, the entries whose names contain one of the strings."""
    from llmtk.ggufio.imatrix_file import read_imatrix

    im = read_imatrix(path)
    if not im.is_legacy and not im.has_metadata:
        raise InputError(f"{path}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, "
                         f"imatrix.chunk_size)")
    means = im.means()
    if exclude:
        means = {k: v for k, v in means.items() if not any(s in k for s in exclude)}
    if include:
        means = {k: v for k, v in means.items() if any(s in k for s in include)}
    for name, v in means.items():
        if not np.isfinite(v).all():
            bad = v[~np.isfinite(v)][0]
            raise InputError(f"{path}: imatrix contains non-finite value {bad} (entry {escape_control(name)})")
    return means, im.datasets, im.chunk_count


def _open_inputs(in_path: Path):
    """The input's reader(s): one, or every shard of a split model (any shard may be given; all
    are checked: present, same split.count, split.no in order, tensor counts, no duplicates)."""
    from llmtk.ggufio.shards import open_shards

    return open_shards(in_path).readers


def _guess_file_type(kv: dict[str, Any], types: Iterable[GGMLType]) -> int:
    """The loader's `ftype`: general.file_type if present, else the most common tensor type's."""
    if Key.FILE_TYPE in kv:
        return int(kv[Key.FILE_TYPE])
    counts: dict[GGMLType, int] = {}
    best, best_n = GGMLType.F32, 0
    for t in types:
        counts[t] = counts.get(t, 0) + 1
        if counts[t] > best_n:
            best, best_n = t, counts[t]
    return int(_FTYPE_OF_TYPE.get(best, LlamaFileType.ALL_F32)) | int(LlamaFileType.GUESSED)


def _prune_map(names: Sequence[str], prune: Sequence[int]) -> tuple[dict[str, str | None], int | None]:
    """(old name -> new name or None when pruned, the new block count or None without pruning).

    Names come in llama order (layers ascending); later layers are renumbered to close the gaps."""
    if not prune:
        return {n: n for n in names}, None
    prune = sorted(set(prune))
    mapped: dict[int, int | None] = {}
    next_id = 0
    out: dict[str, str | None] = {}
    for n in names:
        m = re.match(r"blk\.(\d+)\.", n)
        if not m:
            out[n] = n
            continue
        blk = int(m.group(1))
        if blk not in mapped:
            if blk in prune:
                mapped[blk] = None
            elif blk < prune[0]:
                mapped[blk] = blk
                next_id = blk + 1
            else:
                mapped[blk] = next_id
                next_id += 1
        new = mapped[blk]
        out[n] = None if new is None else n[:m.start(1)] + str(new) + n[m.end(1):]
    return out, next_id


# ---------------------------------------------------------------------------------------------

def quantize_model(in_path: str | os.PathLike, out_path: str | os.PathLike | None, ftype: str | FileType, *,
                   imatrix: str | os.PathLike | None = None, nthreads: int | None = None,
                   allow_requantize: bool = False, leave_output_tensor: bool = False, pure: bool = False,
                   output_tensor_type: str | GGMLType | None = None,
                   token_embedding_type: str | GGMLType | None = None,
                   tensor_types: Sequence[tuple[str, str | GGMLType]] = (),
                   include_weights: Sequence[str] = (), exclude_weights: Sequence[str] = (),
                   override_kv: Sequence[str | KVOverride] = (), prune_layers: Sequence[int] = (),
                   keep_split: bool = False, dry_run: bool = False,
                   on_tensor: Callable[[TensorReport, int], None] | None = None,
                   imatrix_name: str | None = None) -> QuantizeResult:
    """Quantize a GGUF model as `llama-quantize [options] IN OUT TYPE NTHREADS` does.

    Output tensors, their types and bytes, and the metadata match llama-quantize's file. `out_path`
    None means `<IN stem>-<TYPE>.gguf` beside the input. `tensor_types` are (regex, type) pairs
    (`--tensor-type`), `override_kv` `KEY=TYPE:VALUE` strings. `on_tensor(report, n_total)` is
    called after each tensor (for progress). Returns the per-tensor report and sizes.
    `imatrix_name` is what `quantize.imatrix.file` records (default: `imatrix` as given): a sweep
    task reading a copy of the imatrix on another machine records the path the sweep knows.
    """
    from llmtk.ggufio.constants import parse_ggml_type

    t0 = time.perf_counter()
    ft = ftype if isinstance(ftype, FileType) else file_type(str(ftype))
    if include_weights and exclude_weights:
        raise InputError("--include-weights and --exclude-weights cannot be used together")
    in_path = Path(in_path)
    out = Path(out_path) if out_path is not None else default_output_path(in_path, ft.name)
    if not dry_run and out.exists() and in_path.exists() and os.path.samefile(in_path, out):
        raise InputError(f"input and output files are the same: '{in_path}'")
    threads_before = _set_threads(nthreads) if nthreads is not None else None

    opts = MixOptions(
        pure=pure,
        output_tensor_type=parse_ggml_type(output_tensor_type) if output_tensor_type is not None else None,
        token_embedding_type=parse_ggml_type(token_embedding_type) if token_embedding_type is not None else None,
        tensor_types=[(p.lower(), parse_ggml_type(t)) for p, t in tensor_types],
        quantize_output=not leave_output_tensor,
        only_copy=ft.name == "COPY",
    )
    overrides = [o if isinstance(o, KVOverride) else KVOverride.parse(o) for o in override_kv]

    # imatrix (prepare_imatrix): the kv it adds go after the user's overrides
    means: dict[str, np.ndarray] = {}
    if imatrix is not None:
        means, datasets, n_chunks = load_imatrix_means(imatrix, include=include_weights, exclude=exclude_weights)
        if means:
            overrides.append(KVOverride(Key.QUANTIZE_IMATRIX_FILE, VT.STRING, str(imatrix_name or imatrix)[:127]))
            if datasets:
                overrides.append(KVOverride(Key.QUANTIZE_IMATRIX_DATASET, VT.STRING, datasets[0][:127]))
            overrides.append(KVOverride(Key.QUANTIZE_IMATRIX_N_ENTRIES, VT.UINT32, len(means)))
            if n_chunks > 0:
                overrides.append(KVOverride(Key.QUANTIZE_IMATRIX_N_CHUNKS, VT.UINT32, n_chunks))
    has_imatrix = bool(means)

    readers = _open_inputs(in_path)
    try:
        return _run(readers, out, ft, opts, overrides, means, has_imatrix, allow_requantize,
                    prune_layers, keep_split, dry_run, on_tensor, t0)
    finally:
        for r in readers:
            r.close()
        if threads_before is not None:
            _set_threads(threads_before)


def _set_threads(n: int) -> int:
    """Use `n` threads in the kernels (all cores when n <= 0); returns the previous count."""
    import numba

    before = numba.get_num_threads()
    if n <= 0:
        n = os.cpu_count() or 1
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    return before


def _run(readers, out: Path, ft: FileType, opts: MixOptions, overrides: list[KVOverride],
         means: dict[str, np.ndarray], has_imatrix: bool, allow_requantize: bool,
         prune_layers: Sequence[int], keep_split: bool, dry_run: bool, on_tensor, t0: float) -> QuantizeResult:
    kv = readers[0].kv
    kv_types = readers[0].kv_types
    where = {name: (i, r) for i, r in enumerate(readers) for name in r.tensors}
    infos = {name: r.tensors[name] for name, (_, r) in where.items()}

    # the loader sees the overridden metadata too (hparams for the rules)
    model_kv = dict(kv)
    for o in overrides:
        model_kv[o.key] = o.value
    model = ModelInfo.from_kv(model_kv)

    order = llama_order(infos)
    if keep_split:  # by split, then by position in the file
        order = sorted(order, key=lambda n: (where[n][0], infos[n].offset))
    renamed, block_count = _prune_map(order, prune_layers)
    kept = [n for n in order if renamed[n] is not None]

    warnings: list[str] = []
    planned = [(renamed[n], infos[n].ne, infos[n].qtype) for n in kept]
    plan = plan_types(planned, model, ft, opts, has_imatrix=has_imatrix)
    ftype_id = _guess_file_type(kv, (infos[n].qtype for n in order)) if opts.only_copy else int(ft.ftype)

    n_fallback = 0
    fallbacks: list[str] = []
    will_require_imatrix = False
    for c, src_name in zip(plan, kept):
        if c.fallback:
            n_fallback += 1
            fallbacks.append(c.fallback.strip())
            warnings.append(c.fallback)
            log.info("%s", c.fallback)
        if c.override:
            log.warning("%s", c.override)
        if c.allows_quantization and c.requires_imatrix and not has_imatrix:
            if dry_run:
                will_require_imatrix = True
            else:
                raise InputError(f"this quantization requires an importance matrix (--imatrix): "
                                 f"{c.name} would be {c.dst_type.name}")
    # checks llama-quantize makes while writing, made up front so that nothing is half-written
    imat_for: dict[str, np.ndarray | None] = {}
    for c, src_name in zip(plan, kept):
        if c.dst_type == c.src_type:
            continue
        if not dry_run and GGML_TYPE_TRAITS[c.src_type].is_quantized and not allow_requantize:
            raise InputError(f"{src_name}: requantizing from type {c.src_type.name} is disabled "
                             f"(pass --allow-requantize to dequantize and quantize again)")
        if has_imatrix:
            imat_for[c.name] = _imatrix_for(c, src_name, means, warnings)
            if imat_for[c.name] is None and c.requires_imatrix and not dry_run:
                raise InputError(f"missing importance matrix for tensor {c.name} in a very low-bit "
                                 f"quantization ({c.dst_type.name}): the result would be garbage")

    # metadata: input's, then quantization version and file type, then overrides (each set
    # removes the key and appends it, as gguf_set_val_* does)
    meta: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]] = {
        k: (v, *kv_types[k]) for k, v in kv.items() if k not in SPLIT_KEYS}

    def set_kv(key: str, value: Any, vtype: GGUFValueType) -> None:
        meta.pop(key, None)
        meta[key] = (value, vtype, None)

    set_kv(Key.QUANTIZATION_VERSION, GGML_QUANTIZATION_VERSION, VT.UINT32)
    set_kv(Key.FILE_TYPE, ftype_id, VT.UINT32)
    for o in overrides:
        set_kv(o.key, o.value, o.vtype)
    if block_count is not None:
        set_kv(Key.BLOCK_COUNT.format(arch=model.arch), block_count, VT.UINT32)

    reports = [TensorReport(i + 1, c.name, c.ne, c.src_type, c.dst_type, infos[s].n_bytes,
                            tensor_nbytes(c.dst_type, c.ne)) for i, (c, s) in enumerate(zip(plan, kept))]
    n_elements = sum(math.prod(infos[n].ne) for n in order)
    result = QuantizeResult([], ft, reports, n_elements, warnings, n_fallback, fallbacks, len(means),
                            dry_run=dry_run, will_require_imatrix=will_require_imatrix)
    if dry_run:
        for rep in reports:
            log.info("%s", rep.log_line(len(reports), dry_run=True))
            if on_tensor:
                on_tensor(rep, len(reports))
        result.seconds = time.perf_counter() - t0
        return result

    # one output per input split with --keep-split, else one file
    splits = sorted({where[s][0] for s in kept}) if keep_split else [0]
    n_split = max(splits) + 1 if keep_split else 1
    groups: dict[int, list[int]] = {i: [] for i in splits}
    for k, s in enumerate(kept):
        groups[where[s][0] if keep_split else 0].append(k)
    outputs = []
    for i in splits:
        if keep_split:
            prefix = str(out)[:-5] if str(out).endswith(".gguf") else str(out)
            path = Path(SPLIT_PATH_FORMAT.format(prefix=prefix, no=i + 1, count=n_split))
        else:
            path = out
        outputs.append((i, path))

    written: list[Path] = []
    for i, path in outputs:
        # like llama-quantize, only the first split carries the model's metadata
        split_meta = dict(meta) if i == 0 else {}
        if n_split > 1:
            split_meta[Key.SPLIT_NO] = (i, VT.UINT16, None)
            split_meta[Key.SPLIT_COUNT] = (n_split, VT.UINT16, None)
            split_meta[Key.SPLIT_TENSORS_COUNT] = (len(kept), VT.INT32, None)
        written.append(_write_file(path, readers, where, split_meta, [plan[k] for k in groups[i]],
                                   [kept[k] for k in groups[i]], [reports[k] for k in groups[i]],
                                   imat_for, len(reports), on_tensor))
    result.out_paths = written
    result.seconds = time.perf_counter() - t0
    return result


def _imatrix_for(c: TensorChoice, src_name: str, means: dict[str, np.ndarray],
                 warnings: list[str]) -> np.ndarray | None:
    """The tensor's importance weights (n_mat * n_cols,), or None with llama-quantize's notice."""
    v = means.get(src_name)
    if v is None:
        msg = f"did not find weights for {c.name}"
        warnings.append(msg)
        log.info("%s", msg)
        return None
    n_mat = c.ne[2] if len(c.ne) > 2 else 1
    if v.size != c.ne[0] * n_mat:
        msg = f"imatrix size {v.size} is different from tensor size {c.ne[0] * n_mat} for {c.name}"
        if c.name not in ("token_embd.weight", "per_layer_token_embd.weight"):
            raise InputError(msg + " (was the imatrix computed on another model?)")
        warnings.append(msg)
        return None
    return v


def _write_file(path: Path, readers, where, meta, plan: list[TensorChoice], src_names: list[str],
                reports: list[TensorReport], imat_for, n_total: int, on_tensor) -> Path:
    from llmtk.ggufio import GGUFWriter

    alignment = meta.get(Key.ALIGNMENT, (None,))[0]
    with GGUFWriter(path, alignment=int(alignment) if alignment else None,
                    inputs=[r.path for r in readers]) as w:
        for key, (value, vtype, item_type) in meta.items():
            w.add_kv(key, value, vtype, item_type)
        for c in plan:
            w.add_tensor_info(c.name, tuple(reversed(ggml_dims(c.ne))), c.dst_type, tensor_nbytes(c.dst_type, c.ne))
        for c, s, rep in zip(plan, src_names, reports):
            reader = where[s][1]
            if c.dst_type == c.src_type:
                w.write_tensor(c.name, reader.raw(s))
            else:
                w.write_tensor(c.name, _convert(reader, s, c, imat_for.get(c.name)))
            if hasattr(reader, "release"):  # its mapped pages leave our memory, as llama-quantize unmaps
                reader.release(s)
            log.info("%s", rep.log_line(n_total))
            if on_tensor:
                on_tensor(rep, n_total)
    return path


def _convert(reader, name: str, c: TensorChoice, imat: np.ndarray | None) -> np.ndarray:
    """Dequantize one tensor to f32 and quantize it to its new type, slab by slab of rows.

    Experts (ne[2] > 1) each use their own slice of the imatrix."""
    from llmtk import kernels

    n_cols = c.ne[0]
    n_rows_per_mat = c.ne[1] if len(c.ne) > 1 else 1
    n_rows = math.prod(c.ne[1:]) if len(c.ne) > 1 else 1
    src = reader.raw(name).reshape(n_rows, -1)
    dst_rs = kernels.row_size(c.dst_type, n_cols)
    out = np.empty((n_rows, dst_rs), dtype=np.uint8)
    slab = max(1, min(n_rows_per_mat, SLAB_BYTES // (4 * n_cols)))
    for mat_start in range(0, n_rows, n_rows_per_mat):
        w = None if imat is None else imat[(mat_start // n_rows_per_mat) * n_cols:][:n_cols]
        for r0 in range(mat_start, mat_start + n_rows_per_mat, slab):
            r1 = min(r0 + slab, mat_start + n_rows_per_mat)
            x = _to_f32(src[r0:r1], c.src_type, n_cols)
            out[r0:r1] = kernels.quantize(x, c.dst_type, imatrix=w)
            if hasattr(reader, "release"):  # the slab's mapped input pages leave our memory
                reader.release(name, r0 * src.shape[1], r1 * src.shape[1])
    return out


def _to_f32(raw: np.ndarray, qtype: GGMLType, n_cols: int) -> np.ndarray:
    """Rows of any type as f32 (F16/BF16 through the parallel kernels: several times numpy's astype)."""
    if qtype == GGMLType.F32:
        return raw.view(np.float32).reshape(-1, n_cols)
    from llmtk import kernels

    return kernels.dequantize(np.ascontiguousarray(raw), qtype, (raw.shape[0], n_cols))
