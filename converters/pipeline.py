"""`convert()`: plan the output from headers, write the GGUF header, stream the tensors.

Output types:
- `f32`, `f16`, `bf16`, `q8_0`, `auto`: llama.cpp converter's `--outtype` (norms, 1-D tensors,
  biases and routers stay F32; `auto` picks bf16/f16 from the first 2-D checkpoint tensor);
- any llama-quantize type (`Q4_K_M`, `IQ4_XS`, `Q6_K`, ...): converted and quantized in one pass
  with llama-quantize's per-tensor rules (`llmtk.quantize.rules`), as if converting to `auto` and
  then running llama-quantize on the result.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gguf
import numpy as np

from llmtk.ggufio.constants import GGML_QUANTIZATION_VERSION, GGML_TYPE_TRAITS, GGMLType, Key, LlamaFileType, row_size
from llmtk.errors import InputError, LlmtkError, ShapeError, UnsupportedError
from llmtk.ggufio.reader import escape_control
from llmtk.registry import Lazy

from .registry import ARCHITECTURES
from .base import ALWAYS_F32, SKIPPED_SUFFIXES, ModelConverter, PlannedTensor, validate_config
from .kv import KVStore
from .metadata import default_file_name, load_metadata
from .source import Checkpoint, LazyTensor, open_checkpoint

logger = logging.getLogger(__name__)

# llama.cpp converter's --outtype -> (file type, tensor type of the weights)
CONVERT_OUTTYPES: dict[str, tuple[LlamaFileType, GGMLType | None]] = {
    "f32": (LlamaFileType.ALL_F32, GGMLType.F32),
    "f16": (LlamaFileType.MOSTLY_F16, GGMLType.F16),
    "bf16": (LlamaFileType.MOSTLY_BF16, GGMLType.BF16),
    "q8_0": (LlamaFileType.MOSTLY_Q8_0, GGMLType.Q8_0),
    "auto": (LlamaFileType.GUESSED, None),
}


@dataclass
class OutType:
    """A resolved --outtype: the file type, and either one weight type or a quantize mix."""

    name: str
    ftype: LlamaFileType
    weight_type: GGMLType | None
    mix: Any = None  # llmtk.quantize.rules.FileType for llama-quantize types

    @property
    def label(self) -> str:
        """The encoding part of llama.cpp's default file name ('F16', 'Q8_0', 'Q4_K_M')."""
        if self.mix is not None:
            return self.mix.name
        return self.ftype.name.partition("_")[2]


def parse_outtype(outtype: str) -> OutType:
    low = outtype.lower()
    if low in CONVERT_OUTTYPES:
        ftype, wt = CONVERT_OUTTYPES[low]
        return OutType(low, ftype, wt)
    from llmtk.quantize.rules import FILE_TYPES, parse_file_type

    ft = parse_file_type(outtype)
    if ft is None or ft.name == "COPY" or outtype.isdigit():
        raise InputError(f"unknown --outtype {outtype!r}; valid: {', '.join(CONVERT_OUTTYPES)} or a quantize "
                         f"type ({', '.join(n for n in FILE_TYPES if n != 'COPY')})")
    return OutType(ft.name, ft.ftype, None, ft)


def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def nearest_architecture(hf_arch: str) -> str:
    """The registered HF class name most like `hf_arch` (difflib's ratio, ignoring case)."""
    by_lower = {name.lower(): name for name in ARCHITECTURES}
    best = difflib.get_close_matches(hf_arch.lower(), list(by_lower), n=1, cutoff=0.0)
    return by_lower[best[0]] if best else ARCHITECTURES.names()[0]


def converter_class(hf_arch: str, where: str = "config.json") -> type[ModelConverter]:
    """The converter registered for an HF architecture name, importing its module lazily; an
    unknown name is one line naming the nearest supported one (`where` says whose it is)."""
    if hf_arch not in ARCHITECTURES:
        raise UnsupportedError(f"{where}: architecture {escape_control(hf_arch)[:80]!r} is not supported; nearest "
                               f"supported: {nearest_architecture(hf_arch)} (`llmtk convert --help` lists all "
                               f"{len(ARCHITECTURES)})")
    return ARCHITECTURES[hf_arch]


def architecture_table() -> str:
    """docs/convert.md's table of supported architectures, from the registry: one row per
    converter module (in registry order) with its HF class names and GGUF architectures."""
    rows: dict[str, tuple[list[str], list[str]]] = {}
    for hf_arch in ARCHITECTURES:
        module = ARCHITECTURES.raw(hf_arch)
        module = module.module if isinstance(module, Lazy) else converter_class(hf_arch).__module__
        names, archs = rows.setdefault(module.rsplit(".", 1)[-1], ([], []))
        names.append(hf_arch)
        if (arch := converter_class(hf_arch).model_arch) not in archs:
            archs.append(arch)
    lines = ["| HF `architectures[0]` | GGUF arch | module |", "|---|---|---|"]
    lines += [f"| {', '.join(names)} | {', '.join(f'`{a}`' for a in archs)} | `converters/{module}.py` |"
              for module, (names, archs) in rows.items()]
    return "\n".join(lines)


def load_config(hf_dir: Path) -> tuple[dict[str, Any], str]:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise InputError(f"{hf_dir}: no config.json (is this a Hugging Face model folder?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    validate_config(config, str(path))
    text_config = config.get("text_config")
    archs = config.get("architectures") or (text_config.get("architectures") if isinstance(text_config, dict) else None)
    if not archs or not isinstance(archs, list) or not isinstance(archs[0], str):
        raise InputError(f"{path}: has no 'architectures' list naming the model class")
    return config, archs[0]


def _bid(name: str) -> int | None:
    # isdecimal() accepts other scripts' digits and any length; int() of 5,000 digits raises
    return next((int(p) for p in name.split(".") if p.isascii() and p.isdigit() and len(p) <= 9), None)


def _match_always_f32(name: str, bid: int | None) -> bool:
    for tpl in ALWAYS_F32:
        if "{bid}" in tpl:
            if bid is not None and name == tpl.format(bid=bid) + ".weight":
                return True
        elif bid is None and name == tpl + ".weight":
            return True
    return False


def _auto_ftype(conv: ModelConverter, ckpt: Checkpoint) -> LlamaFileType:
    """llama.cpp's heuristic: the dtype of the first checkpoint tensor with 2+ dimensions."""
    for name, t in ckpt.tensors.items():
        if conv.filter_tensors(name) is None or t.ndim < 2:
            continue
        if t.dtype == "BF16":
            return LlamaFileType.MOSTLY_BF16
        if t.dtype == "F16":
            return LlamaFileType.MOSTLY_F16
    return LlamaFileType.MOSTLY_F16


def _convert_type(name: str, shape: tuple[int, ...], bid: int | None, ftype: LlamaFileType) -> GGMLType:
    """llama.cpp converter's choice for one tensor (prepare_tensors)."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return GGMLType.F32
    if _match_always_f32(name, bid) or name[-7:] not in (".weight", ".lora_a", ".lora_b"):
        return GGMLType.F32
    wt = {LlamaFileType.ALL_F32: GGMLType.F32, LlamaFileType.MOSTLY_F16: GGMLType.F16,
          LlamaFileType.MOSTLY_BF16: GGMLType.BF16, LlamaFileType.MOSTLY_Q8_0: GGMLType.Q8_0}[ftype]
    if shape[-1] % GGML_TYPE_TRAITS[wt].block_size:
        logger.warning("%s: row of %d is not a multiple of %s block size %d, falling back to F16", name,
                       shape[-1], wt.name, GGML_TYPE_TRAITS[wt].block_size)
        return GGMLType.F16
    return wt


def _source_type(p: PlannedTensor, ftype: LlamaFileType) -> GGMLType:
    """The converter's type for a tensor: as the checkpoint encoded it, or `_convert_type`'s."""
    if p.data.encoded_as is not None:
        return p.data.encoded_as
    return _convert_type(p.name, p.data.shape, p.bid, ftype)


def plan_tensors(conv: ModelConverter, ckpt: Checkpoint) -> list[PlannedTensor]:
    """Every output tensor with its lazy data, from the headers alone; types are set later."""
    conv.source_tensors = ckpt.tensors
    items: list[tuple[str, LazyTensor]] = list(conv.generate_extra_tensors())
    for name, t in ckpt.tensors.items():
        new = conv.filter_tensors(name)
        if new is not None:
            items.append((new, t))
    planned: list[PlannedTensor] = []
    seen: set[str] = set()
    for name, t in items:
        if name.endswith(SKIPPED_SUFFIXES):
            continue
        bid = _bid(name)
        for new_name, data in conv.modify_tensors(t, name, bid):
            if any(d == 0 for d in data.shape):
                raise ShapeError(f"{conv.hf_dir}: tensor {name!r} has shape {list(data.shape)} with no elements; "
                                 "GGUF tensors must not be empty")
            if new_name in seen:
                raise InputError(f"{conv.hf_dir}: two checkpoint tensors map to GGUF tensor {new_name!r}")
            seen.add(new_name)
            planned.append(PlannedTensor(new_name, data, GGMLType.F32, name, bid))
    conv.finish_tensors()
    return planned


def parameter_counts(planned: Sequence[PlannedTensor]) -> tuple[int, int, int, int]:
    """(total, shared, per-expert, n_expert) as gguf-py's `get_total_parameter_count` counts."""
    total = shared = expert = expert_sum = n_expert_tensors = 0
    for p in planned:
        shape = p.data.shape
        size = int(np.prod(shape, dtype=np.int64))
        if "_exps." in p.name and len(shape) >= 3:
            n = shape[-2 if ".bias" in p.name else -3]
            expert += size // n
            expert_sum += n
            n_expert_tensors += 1
        else:
            shared += size
        total += size
    return total, shared, expert, (expert_sum // n_expert_tensors if n_expert_tensors else 0)


def _apply_mix(planned: list[PlannedTensor], kv: KVStore, out: OutType, base: LlamaFileType,
               has_imatrix: bool) -> list[PlannedTensor]:
    """Choose each tensor's type with llama-quantize's rules, as if quantizing the `auto` output,
    and return the tensors in llama-quantize's order."""
    from llmtk.quantize.rules import ModelInfo, llama_order, plan_types

    by_name = {p.name: p for p in planned}
    order = llama_order(by_name)
    src = {n: _source_type(by_name[n], base) for n in order}
    kv_values = {k: v[0] for k, v in kv}
    plan = plan_types([(n, tuple(reversed(by_name[n].data.shape)), src[n]) for n in order],
                      ModelInfo.from_kv(kv_values), out.mix, has_imatrix=has_imatrix)
    for choice in plan:
        if choice.requires_imatrix and not has_imatrix:
            raise InputError(f"--outtype {out.name}: tensor {choice.name} becomes {choice.dst_type.name}, which "
                             "needs an importance matrix (--imatrix)")
        if choice.fallback:
            logger.info(choice.fallback)
        p = by_name[choice.name]
        p.qtype = choice.dst_type
        if GGML_TYPE_TRAITS[p.qtype].is_quantized and src[p.name] in (GGMLType.F16, GGMLType.BF16):
            # round through the `auto` file's type first, exactly as convert + quantize would
            p.data = p.data.map_rows(lambda x, t=src[p.name]: _through(x, t))
    return [by_name[n] for n in order]


def _through(x: np.ndarray, qtype: GGMLType) -> np.ndarray:
    """`x` rounded to F16 or BF16 and back to f32."""
    if qtype == GGMLType.F16:
        return x.astype(np.float16).astype(np.float32)
    return (_bf16_bits(x).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """ggml_compute_fp32_to_bf16: round to nearest even on the bits, NaNs made quiet."""
    n = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    n = np.where((n & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000),
                 (n & np.uint32(0xFFFF0000)) | np.uint32(0x400000), n)
    return ((n + (np.uint32(0x7FFF) + ((n >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)


def encode(x: np.ndarray, qtype: GGMLType, imatrix: np.ndarray | None = None) -> np.ndarray:
    """A tensor's bytes in `qtype`: floats by NumPy as llama.cpp's converter rounds them, every
    quantized type through `llmtk.kernels.quantize` (per expert for 3-D tensors)."""
    if qtype == GGMLType.F32:
        return np.ascontiguousarray(x, dtype=np.float32)
    if qtype == GGMLType.F16:
        return np.ascontiguousarray(x.astype(np.float16, copy=False))
    if qtype == GGMLType.BF16:
        return _bf16_bits(x)
    from llmtk.kernels import quantize

    cols = x.shape[-1]
    n_mat = x.shape[0] if x.ndim == 3 else 1
    if imatrix is not None and imatrix.size != cols * n_mat:
        raise ShapeError(f"imatrix has {imatrix.size} values for a tensor of {n_mat} x {cols} columns")
    if n_mat > 1:
        return np.concatenate([quantize(x[e].reshape(-1, cols), qtype,
                                        None if imatrix is None else imatrix[e * cols:(e + 1) * cols])
                               for e in range(n_mat)])
    return quantize(x.reshape(-1, cols), qtype, imatrix)


SLAB_BYTES = 1 << 24  # f32 bytes converted at a time for tensors read by row ranges


def _tensor_parts(p: PlannedTensor, imatrix: np.ndarray | None) -> Iterator[np.ndarray]:
    """The bytes of one output tensor, in order, as consecutive pieces: checkpoint tensors (and
    stacks of them) are read and encoded slab by slab of rows and each slab is written before the
    next is read, so memory holds one slab, never the whole tensor (an expert stack of a 100B+
    model is gigabytes). Tensors computed whole (transposed, split, generated) come in one piece."""
    t = p.data
    cols, n_rows = t.shape[-1], t.n_rows
    per_mat = t.shape[-2] if t.ndim == 3 else n_rows
    if t.encoded_as is not None:
        yield from _encoded_parts(p, imatrix, per_mat)
        return
    if t.rows is None:
        yield encode(t.numpy(), p.qtype, imatrix)
        return
    slab = max(1, min(per_mat, SLAB_BYTES // (4 * cols)))
    for m0 in range(0, n_rows, per_mat):
        w = None if imatrix is None else imatrix[(m0 // per_mat) * cols:][:cols]
        for r0 in range(m0, m0 + per_mat, slab):
            r1 = min(r0 + slab, m0 + per_mat)
            yield encode(t.rows(r0, r1), p.qtype, w)


def _encoded_parts(p: PlannedTensor, imatrix: np.ndarray | None, per_mat: int) -> Iterator[np.ndarray]:
    """A tensor the checkpoint ships already encoded (`encoded_as`), one matrix (expert) at a time:
    its bytes as they are, or, when a quantize mix gives it another type, dequantized and
    re-encoded as llama-quantize would."""
    t, enc = p.data, p.data.encoded_as
    rs, cols = row_size(enc, t.shape[-1]), t.shape[-1]
    whole = None if t.rows is not None else np.ascontiguousarray(t.load(), dtype=np.uint8)
    if whole is not None and whole.size != t.n_rows * rs:
        raise ShapeError(f"{enc.name} data of {whole.size} bytes does not hold shape {list(t.shape)}")
    for m0 in range(0, t.n_rows, per_mat):
        if whole is None:
            raw = np.ascontiguousarray(t.rows(m0, m0 + per_mat), dtype=np.uint8)
        else:
            raw = whole.reshape(t.n_rows, rs)[m0:m0 + per_mat]
        raw = raw.reshape(per_mat, -1)
        if raw.shape[1] != rs:
            raise ShapeError(f"{enc.name} rows of {raw.shape[1]} bytes do not hold {cols} values")
        if p.qtype == enc:
            yield raw
            continue
        from llmtk.kernels import dequantize

        w = None if imatrix is None else imatrix[(m0 // per_mat) * cols:][:cols]
        yield encode(dequantize(raw, enc, (per_mat, cols)), p.qtype, w)


def _labelled(name: str, parts: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    try:
        yield from parts
    except LlmtkError as e:
        raise type(e)(f"tensor {name}: {e}") from None


def _load_imatrix(imatrix: Any) -> tuple[dict[str, np.ndarray] | None, list[str], int]:
    """(per-column means by GGUF tensor name, datasets, chunk count) from an imatrix file, as
    llama-quantize prepares them, or from a ready {name: means} dict."""
    if imatrix is None:
        return None, [], 0
    if isinstance(imatrix, dict):
        return {k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in imatrix.items()}, [], 0
    from llmtk.quantize import load_imatrix_means

    return load_imatrix_means(imatrix)


# progress(bytes_done, bytes_total, tensors_done, tensors_total, name) after each tensor written
ConvertProgress = Callable[[int, int, int, int, str], None]


def convert(hf_dir: str | os.PathLike, out_path: str | os.PathLike | None = None, outtype: str = "f16", *,
            vocab_only: bool = False, imatrix: Any = None, progress: "ConvertProgress | bool | None" = None,
            model_name: str | None = None, split_max_size: int | str = 0, split_max_tensors: int = 0) -> Path:
    """Convert a Hugging Face checkpoint folder to GGUF, tensor-identical to llama.cpp's converter.

    `out_path` may be a file, a folder (llama.cpp's default name is used inside it) or None (the
    default name inside `hf_dir`, as llama.cpp does); a `{ftype}` in the name is filled in.
    Returns the path written (the first shard when splitting). Nothing is left behind on failure.
    `split_max_size` (bytes, or '500M'/'2G' as llama.cpp spells it) and `split_max_tensors` split
    the output into `<stem>-0000i-of-0000n.gguf` shards as llama.cpp's converter does.
    `progress` is called after each tensor is written (`ConvertProgress`); the CLI draws it.
    """
    if not callable(progress):
        progress = None
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise InputError(f"{hf_dir}: not a directory (expected a Hugging Face model folder)")
    config, hf_arch = load_config(hf_dir)
    cls = converter_class(hf_arch, str(hf_dir / "config.json"))
    out = parse_outtype(outtype)
    conv = cls(hf_dir, cls.complete_hparams(config), hf_arch)
    imat, imat_datasets, imat_chunks = _load_imatrix(imatrix)
    if imat is not None and out.mix is None and out.weight_type in (GGMLType.F32, GGMLType.F16, GGMLType.BF16):
        logger.warning("--imatrix has no effect on float output types")

    ckpt = None
    planned: list[PlannedTensor] = []
    try:
        if not vocab_only or out.ftype == LlamaFileType.GUESSED:
            ckpt = open_checkpoint(hf_dir)
        base = out.ftype
        if out.mix is not None or out.ftype == LlamaFileType.GUESSED:
            base = _auto_ftype(conv, ckpt) if ckpt is not None else LlamaFileType.MOSTLY_F16
        conv.ftype = conv.written_file_type(base) if out.mix is None else out.ftype
        if not vocab_only:
            planned = plan_tensors(conv, ckpt)

        total, shared, expert, n_expert = parameter_counts(planned)
        md = load_metadata(hf_dir, total, shared, expert, n_expert, model_name)
        kv = KVStore(conv.model_arch)
        kv.str(gguf.Keys.General.ARCHITECTURE, conv.model_arch)
        conv.set_early_parameters(kv)
        kv.str(gguf.Keys.General.TYPE, "model")
        md.write(kv)
        conv.set_gguf_parameters(kv)
        kv.u32(Key.QUANTIZATION_VERSION, GGML_QUANTIZATION_VERSION)
        conv.set_vocab(kv)

        if out.mix is not None:
            planned = _apply_mix(planned, kv, out, base, imat is not None)
            # as llama-quantize sets them on the `auto` output: removed and appended at the end
            for key, value in ((Key.QUANTIZATION_VERSION, GGML_QUANTIZATION_VERSION),
                               (Key.FILE_TYPE, int(out.ftype))):
                kv.remove(key)
                kv.u32(key, value)
            if imat:
                kv.str(Key.QUANTIZE_IMATRIX_FILE, str(imatrix)[:127])
                if imat_datasets:
                    kv.str(Key.QUANTIZE_IMATRIX_DATASET, imat_datasets[0][:127])
                kv.u32(Key.QUANTIZE_IMATRIX_N_ENTRIES, len(imat))
                if imat_chunks > 0:
                    kv.u32(Key.QUANTIZE_IMATRIX_N_CHUNKS, imat_chunks)
        else:
            for p in planned:
                p.qtype = _source_type(p, base)

        dest = _output_path(out_path, hf_dir, md, out.label if out.mix is not None
                            else OutType("", conv.ftype, None).label, vocab_only)
        shards = split_plan(planned, parse_split_size(split_max_size), split_max_tensors)
        return _write_shards(dest, kv, shards, imat, progress, ckpt.files if ckpt is not None else [])
    finally:
        if ckpt is not None:
            ckpt.close()


def _output_path(out_path: str | os.PathLike | None, hf_dir: Path, md, label: str, vocab_only: bool) -> Path:
    target = Path(out_path) if out_path is not None else hf_dir
    if target.is_dir():
        return target / default_file_name(md, label, vocab_only)
    name = target.name
    if "{" in name:
        low, up = label.lower(), label.upper()
        try:
            name = name.format(low, outtype=low, ftype=low, OUTTYPE=up, FTYPE=up)
        except (IndexError, KeyError) as e:
            raise InputError(f"{target}: bad template field {e} in the output name") from None
    return target.with_name(name)


def parse_split_size(text: int | str) -> int:
    """llama.cpp's `split_str_to_n_bytes`: a byte count with an optional K, M or G (powers of 1000)."""
    if isinstance(text, int):
        n = text
    else:
        mult = {"K": 1000, "M": 1000**2, "G": 1000**3}.get(text[-1:], 1)
        digits = text[:-1] if mult > 1 else text
        if not digits.isdecimal():
            raise InputError(f"invalid split size {text!r}: a number, optionally followed by K, M or G")
        n = int(digits) * mult
    if n < 0:
        raise InputError(f"invalid split size {text!r}: must not be negative")
    return n


def split_plan(planned: list[PlannedTensor], max_size: int, max_tensors: int) -> list[list[PlannedTensor]]:
    """Shards as gguf-py's writer cuts them: a new one when the current one (holding at least one
    tensor) would pass `max_tensors` tensors or `max_size` data bytes."""
    if max_size < 0 or max_tensors < 0:
        raise InputError("split limits must not be negative")
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for p in planned:
        cur = shards[-1]
        if cur and ((max_tensors and len(cur) >= max_tensors) or (max_size and size + p.n_bytes > max_size)):
            shards.append([])
            size = 0
        shards[-1].append(p)
        size += p.n_bytes
    if len(shards) == 1 and (max_size or max_tensors):
        logger.warning("model fits the split limits, not splitting")
    return shards


def _write_shards(dest: Path, kv: KVStore, shards: list[list[PlannedTensor]], imat: dict[str, np.ndarray] | None,
                  progress: ConvertProgress | None, inputs: Sequence[Path] = ()) -> Path:
    """One file, or llama.cpp's shards: the first holds all metadata, every one the split keys."""
    for src in inputs:
        if dest.exists() and os.path.samefile(dest, src):
            raise InputError(f"{dest}: the output would overwrite the checkpoint file it is converted from")
    if len(shards) == 1:
        return _write(dest, list(kv), shards[0], imat, progress, inputs)
    from llmtk.ggufio.constants import GGUFValueType as VT

    n = len(shards)
    n_tensors = sum(len(s) for s in shards)
    written: list[Path] = []
    try:
        for i, shard in enumerate(shards):
            split_kv = [(Key.SPLIT_NO, (i, VT.UINT16, None)), (Key.SPLIT_COUNT, (n, VT.UINT16, None)),
                        (Key.SPLIT_TENSORS_COUNT, (n_tensors, VT.INT32, None))]
            path = dest.with_name(f"{dest.stem}-{i + 1:05d}-of-{n:05d}.gguf")
            written.append(_write(path, (list(kv) if i == 0 else []) + split_kv, shard, imat, progress, inputs))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written[0]


def _write(dest: Path, kv: list, planned: list[PlannedTensor], imat: dict[str, np.ndarray] | None,
           progress: ConvertProgress | None, inputs: Sequence[Path] = ()) -> Path:
    from llmtk.ggufio import GGUFWriter

    with GGUFWriter(dest, inputs=inputs) as w:  # refuses to overwrite a checkpoint file
        for key, (value, vtype, item) in kv:
            w.add_kv(key, value, vtype, item)
        for p in planned:
            w.add_tensor_info(p.name, p.data.shape, p.qtype, p.n_bytes)
        total = sum(p.n_bytes for p in planned)
        done = 0
        for i, p in enumerate(planned):
            im = imat.get(p.name) if imat is not None and GGML_TYPE_TRAITS[p.qtype].is_quantized else None
            if im is not None and im.size != p.data.shape[-1] * (p.data.shape[0] if p.data.ndim == 3 else 1):
                if p.name not in ("token_embd.weight", "per_layer_token_embd.weight"):
                    raise ShapeError(f"imatrix entry of {im.size} values does not fit tensor {p.name} "
                                     f"{list(reversed(p.data.shape))}")
                logger.warning("imatrix size mismatch for %s, quantized without it", p.name)
                im = None
            try:
                w.write_tensor_parts(p.name, _labelled(p.name, _tensor_parts(p, im)))
            finally:
                p.data.release()
            done += p.n_bytes
            if progress is not None:
                progress(done, total, i + 1, len(planned), p.name)
            logger.info("%-32s %s -> %s, shape = {%s}", p.name + ",", p.data.dtype, p.qtype.name,
                        ", ".join(str(d) for d in reversed(p.data.shape)))
    return dest
