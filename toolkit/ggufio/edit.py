"""Edit a GGUF file's metadata and tensor names; tensor bytes are streamed across unchanged.

Untouched keys keep their position, value and type; a set key that exists keeps its position
(and its type unless a new one is given); new keys are appended. The output goes through
`GGUFWriter`, so it is written atomically and never overwrites the input without `in_place`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from llmtk.ggufio.constants import GGUF_VALUE_TYPE_NAMES, GGUFValueType, Key
from llmtk.errors import InputError
from llmtk.ggufio import GGUFReader, GGUFWriter, escape_control

log = logging.getLogger(__name__)

VT = GGUFValueType
CHAT_TEMPLATE_KEY = Key.CHAT_TEMPLATE
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass
class EditResult:
    """What `edit_gguf` did, for the command to report."""

    path: Path
    set_keys: list[str] = field(default_factory=list)
    added_keys: list[str] = field(default_factory=list)
    deleted_keys: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    n_tensors: int = 0


def _parse_scalar(text: str, vtype: GGUFValueType, key: str) -> Any:
    shown = escape_control(key)
    if vtype == VT.STRING:
        return text
    if vtype == VT.BOOL:
        t = text.strip().lower()
        if t in _TRUE or t in _FALSE:
            return t in _TRUE
        raise InputError(f"--set {shown}: {text!r} is not a bool (true/false/1/0)")
    try:
        if vtype in (VT.FLOAT32, VT.FLOAT64):
            return float(text)
        try:
            return int(text)
        except ValueError:
            return int(text, 0)  # 0x.., 0b..
    except ValueError:
        raise InputError(f"--set {shown}: {text!r} is not a valid {vtype.name}") from None


def parse_type_name(name: str) -> tuple[GGUFValueType, GGUFValueType | None]:
    """`int32` -> (INT32, None); `str[]` or `array[str]` -> (ARRAY, STRING)."""
    n = name.strip().lower()
    inner = n[:-2] if n.endswith("[]") else n[6:-1] if n.startswith("array[") and n.endswith("]") else None
    if inner is not None and inner in GGUF_VALUE_TYPE_NAMES:
        return VT.ARRAY, GGUF_VALUE_TYPE_NAMES[inner]
    if n in GGUF_VALUE_TYPE_NAMES:
        return GGUF_VALUE_TYPE_NAMES[n], None
    raise KeyError(name)


def parse_set(spec: str, existing: dict[str, tuple[GGUFValueType, GGUFValueType | None]]
              ) -> tuple[str, Any, GGUFValueType, GGUFValueType | None]:
    """`KEY=VALUE` (type of the existing key) or `KEY=TYPE:VALUE` -> (key, value, vtype, item_type).

    Arrays take a JSON list as VALUE (`KEY=str[]:["a","b"]`). A TYPE prefix is recognised only
    when it names a type, so `KEY=a:b` on an existing string key stores "a:b".
    """
    if "=" not in spec:
        raise InputError(f"--set '{escape_control(spec)}': expected KEY=VALUE or KEY=TYPE:VALUE")
    key, text = spec.split("=", 1)
    if not key:
        raise InputError(f"--set '{escape_control(spec)}': empty key")
    vtype = item_type = None
    if ":" in text:
        prefix, rest = text.split(":", 1)
        try:
            vtype, item_type = parse_type_name(prefix)
            text = rest
        except KeyError:
            pass
    if vtype is None:
        if key not in existing:
            names = ", ".join(sorted({n for n in GGUF_VALUE_TYPE_NAMES if len(n) > 3}))
            raise InputError(f"--set {escape_control(key)}: new key needs a type, as KEY=TYPE:VALUE "
                             f"(types: {names}; arrays as TYPE[] with a JSON list)")
        vtype, item_type = existing[key]
    if vtype == VT.ARRAY:
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if not isinstance(items, list):
            raise InputError(f"--set {escape_control(key)}: array values are JSON lists, got {text!r}")
        if item_type == VT.STRING:
            if not all(isinstance(x, str) for x in items):
                raise InputError(f"--set {escape_control(key)}: expected a JSON list of strings")
            return key, items, vtype, item_type
        return key, [_parse_scalar(json.dumps(x) if not isinstance(x, str) else x, item_type, key)  # type: ignore[arg-type]
                     for x in items], vtype, item_type
    return key, _parse_scalar(text, vtype, key), vtype, item_type


def _parse_rename(spec: str) -> tuple[str, str]:
    if "=" not in spec:
        raise InputError(f"--rename-tensor '{escape_control(spec)}': expected OLD=NEW")
    old, new = spec.split("=", 1)
    if not old or not new:
        raise InputError(f"--rename-tensor '{escape_control(spec)}': names must not be empty")
    return old, new


def edit_gguf(in_path: str | Path, out_path: str | Path | None = None, *,
              set_kv: Iterable[str | tuple[str, Any, GGUFValueType, GGUFValueType | None]] = (),
              delete: Iterable[str] = (), chat_template: str | None = None,
              rename: Iterable[str | tuple[str, str]] = (), in_place: bool = False) -> EditResult:
    """Write `in_path` with metadata set/deleted and tensors renamed to `out_path` (or over the
    input when `out_path` is None and `in_place`). `set_kv` items are `--set` strings or
    (key, value, vtype, item_type) tuples; `rename` items are `OLD=NEW` strings or pairs."""
    in_path = Path(in_path)
    if out_path is None:
        if not in_place:
            raise InputError(f"{in_path}: give an output file, or --in-place to overwrite the input")
        out_path = in_path
    out_path = Path(out_path)
    with GGUFReader(in_path) as r:
        edits: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]] = {}
        for spec in set_kv:
            key, value, vt, it = parse_set(spec, r.kv_types) if isinstance(spec, str) else spec
            if key in edits:
                raise InputError(f"{in_path}: metadata '{escape_control(key)}' is set twice")
            edits[key] = (value, vt, it)
        if chat_template is not None:
            if CHAT_TEMPLATE_KEY in edits:
                raise InputError(f"{in_path}: {CHAT_TEMPLATE_KEY} is given both by --set and --chat-template-file")
            edits[CHAT_TEMPLATE_KEY] = (chat_template, VT.STRING, None)
        deleted = list(dict.fromkeys(delete))
        for key in deleted:
            if key not in r.kv:
                raise InputError(f"{in_path}: no metadata key '{escape_control(key)}' to delete")
            if key in edits:
                raise InputError(f"{in_path}: metadata '{escape_control(key)}' is both set and deleted")
        renames: dict[str, str] = {}
        for spec in rename:
            old, new = _parse_rename(spec) if isinstance(spec, str) else spec
            if old not in r.tensors:
                raise InputError(f"{in_path}: no tensor named '{escape_control(old)}' to rename")
            if old in renames:
                raise InputError(f"{in_path}: tensor '{escape_control(old)}' is renamed twice")
            renames[old] = new
        final = [renames.get(n, n) for n in r.tensors]
        if len(set(final)) != len(final):
            dup = next(n for n in final if final.count(n) > 1)
            raise InputError(f"{in_path}: renaming would give two tensors the name '{escape_control(dup)}'")

        result = EditResult(out_path, deleted_keys=deleted, renamed=list(renames.items()),
                            n_tensors=len(r.tensors))
        with GGUFWriter(out_path, inputs=[in_path], in_place=in_place) as w:
            for key, value in r.kv.items():
                if key in deleted:
                    continue
                if key in edits:
                    w.add_kv(key, *edits[key])
                    result.set_keys.append(key)
                else:
                    w.add_kv(key, value, *r.kv_types[key])
            for key, args in edits.items():
                if key not in r.kv:
                    w.add_kv(key, *args)
                    result.added_keys.append(key)
            for t in r.tensors.values():
                w.add_tensor_info(renames.get(t.name, t.name), t.shape, t.qtype, t.n_bytes)
            for t in r.tensors.values():
                w.write_tensor(renames.get(t.name, t.name), r.raw(t.name))
    log.info("wrote %s", out_path)
    return result


def read_chat_template(path: str | Path) -> str:
    """A chat template file's text (UTF-8), with a one-line error when it cannot be read."""
    p = Path(path)
    try:
        return p.read_bytes().decode("utf-8")  # bytes kept as they are (no newline translation)
    except FileNotFoundError:
        raise InputError(f"{p}: no such chat template file") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: chat template is not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read chat template: {e.strerror}") from None
