"""What a GGUF file holds: metadata, tensors, size totals and the model's architecture summary.

`inspect_gguf` builds a plain report (a dict that is also the `--format json` output);
`render_json` and `render_markdown` turn it into text (the terminal's rich table is the CLI's). Long metadata arrays are
summarised (length, first items) and control characters in names and strings are escaped, so a
hostile file cannot garble the terminal.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from llmtk.ggufio.constants import GGML_TYPE_TRAITS, GGMLType, GGUFValueType, Key, LlamaFileType, TokenizerKey
from llmtk.errors import InputError
from llmtk.ggufio import GGUFReader, escape_control
from llmtk.ggufio.shards import open_gguf

VT = GGUFValueType
STRING_PREVIEW = 120  # characters of a long string shown in table/markdown output


def _arch_rows() -> list[tuple[str, str]]:
    """(label, key template) of the architecture summary; key names from gguf's constants."""
    from gguf.constants import Keys

    return [
        ("architecture", Keys.General.ARCHITECTURE),
        ("name", Keys.General.NAME),
        ("file type", Keys.General.FILE_TYPE),
        ("layers", Keys.LLM.BLOCK_COUNT),
        ("context length", Keys.LLM.CONTEXT_LENGTH),
        ("embedding length", Keys.LLM.EMBEDDING_LENGTH),
        ("feed forward length", Keys.LLM.FEED_FORWARD_LENGTH),
        ("heads", Keys.Attention.HEAD_COUNT),
        ("kv heads", Keys.Attention.HEAD_COUNT_KV),
        ("head dim (k)", Keys.Attention.KEY_LENGTH),
        ("head dim (v)", Keys.Attention.VALUE_LENGTH),
        ("experts", Keys.LLM.EXPERT_COUNT),
        ("experts used", Keys.LLM.EXPERT_USED_COUNT),
        ("rope freq base", Keys.Rope.FREQ_BASE),
        ("norm rms eps", Keys.Attention.LAYERNORM_RMS_EPS),
        ("vocab size", Keys.LLM.VOCAB_SIZE),
        ("tokenizer model", Keys.Tokenizer.MODEL),
        ("tokenizer pre", Keys.Tokenizer.PRE),
    ]


def _type_name(vt: GGUFValueType, it: GGUFValueType | None) -> str:
    return f"{vt.name}[{it.name}]" if it is not None else vt.name


def _json_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)  # JSON has no NaN/inf
    return v


def _kv_entry(value: Any, vt: GGUFValueType, it: GGUFValueType | None, array_items: int) -> Any:
    """A metadata value for the report: arrays longer than `array_items` become a summary dict."""
    if vt != VT.ARRAY:
        return _json_value(value)
    n = len(value)
    if array_items and n > array_items:
        head = [_json_value(x) for x in (value[:array_items].tolist() if isinstance(value, np.ndarray)
                                         else value[:array_items])]
        return {"array_len": n, "item_type": it.name, "head": head}  # type: ignore[union-attr]
    items = _json_value(value)
    return [_json_value(x) for x in items] if isinstance(items, list) else items


def architecture_summary(reader: GGUFReader) -> dict[str, Any]:
    """The model's shape from its metadata (only the keys present; works for unknown archs)."""
    kv = reader.kv
    arch = kv.get(Key.ARCHITECTURE)
    out: dict[str, Any] = {}
    for label, template in _arch_rows():
        key = template.format(arch=arch) if "{arch}" in template else template
        if "{arch}" in template and not isinstance(arch, str):
            continue
        if key in kv and reader.kv_types[key][0] != VT.ARRAY:
            out[label] = _json_value(kv[key])
    if "file type" in out:
        try:
            out["file type"] = LlamaFileType(int(out["file type"])).name.removeprefix("MOSTLY_")
        except (ValueError, TypeError):
            pass
    if "vocab size" not in out and isinstance(kv.get(TokenizerKey.TOKENS), list):
        out["vocab size"] = len(kv[TokenizerKey.TOKENS])
    return out


def inspect_gguf(path: str | Path, *, tensors: bool = True, pattern: str | None = None,
                 array_items: int = 8) -> dict[str, Any]:
    """Report of a GGUF file: `kv`, `kv_types`, `tensors` (name, type, shape in GGUF order,
    n_elements, n_bytes, offset, bpw), `n_params`, `file_size`, `tensor_bytes`, `bpw`, `types`
    (per-type histogram), `architecture`. `pattern` (a regex, searched) keeps the matching keys
    and tensors and adds `selected` totals; the file totals always cover every tensor."""
    try:
        rx = re.compile(pattern) if pattern is not None else None
    except re.error as e:
        raise InputError(f"--filter {pattern!r} is not a valid regular expression: {e}") from None
    with open_gguf(path) as r:  # any shard of a split model: totals over all shards
        n_params = sum(t.n_elements for t in r.tensors.values())
        tensor_bytes = sum(t.n_bytes for t in r.tensors.values())
        types: dict[str, dict[str, int]] = {}
        for t in r.tensors.values():
            h = types.setdefault(t.qtype.name, {"n_tensors": 0, "n_params": 0, "n_bytes": 0})
            h["n_tensors"] += 1
            h["n_params"] += t.n_elements
            h["n_bytes"] += t.n_bytes
        for name, h in types.items():
            h["bpw"] = GGML_TYPE_TRAITS[GGMLType[name]].bits_per_weight
        keep = (lambda s: rx.search(s) is not None) if rx else (lambda s: True)
        report: dict[str, Any] = {
            "path": str(r.path),
            "version": r.version,
            "alignment": r.alignment,
            "file_size": r.file_size,
            "shards": [str(p) for p in getattr(r, "paths", [r.path])],
            "n_kv": len(r.kv),
            "n_tensors": len(r.tensors),
            "n_params": n_params,
            "tensor_bytes": tensor_bytes,
            "bpw": 8 * tensor_bytes / n_params if n_params else 0.0,
            "architecture": architecture_summary(r),
            "types": dict(sorted(types.items(), key=lambda kv: -kv[1]["n_bytes"])),
            "kv": {k: _kv_entry(v, *r.kv_types[k], array_items) for k, v in r.kv.items() if keep(k)},
            "kv_types": {k: _type_name(*r.kv_types[k]) for k in r.kv if keep(k)},
        }
        chosen = [t for t in r.tensors.values() if keep(t.name)]
        if rx is not None:
            report["selected"] = {"pattern": pattern, "n_tensors": len(chosen),
                                  "n_params": sum(t.n_elements for t in chosen),
                                  "n_bytes": sum(t.n_bytes for t in chosen)}
        if tensors:
            report["tensors"] = [
                {"name": t.name, "type": t.qtype.name, "shape": list(t.ne), "n_elements": t.n_elements,
                 "n_bytes": t.n_bytes, "offset": t.offset,
                 "bpw": 8 * t.n_bytes / t.n_elements if t.n_elements else 0.0}
                for t in chosen]
    return report


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _fmt_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _fmt_bytes(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def format_value(v: Any, vtype: str = "", limit: int = STRING_PREVIEW) -> str:
    """One-line text of a report value: strings escaped and cut, array summaries spelled out,
    FLOAT32 values in their shortest float32 spelling (`1e-05`, not `9.999999747378752e-06`)."""
    if isinstance(v, str):
        s = escape_control(v)
        return s if len(s) <= limit else f"{s[:limit]}… ({len(v)} chars)"
    if isinstance(v, dict) and "array_len" in v:
        return f"[{_items(v['head'], vtype)}, …] ({v['array_len']} × {v['item_type']})"
    if isinstance(v, list):
        return f"[{_items(v, vtype)}]"
    if isinstance(v, float):
        return str(np.float32(v)) if "FLOAT32" in vtype else repr(v)
    return str(v)


def _items(items: list[Any], vtype: str) -> str:
    return ", ".join(json.dumps(x, ensure_ascii=False) if isinstance(x, str) else format_value(x, vtype)
                     for x in items)


def summary_rows(rep: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("file", escape_control(rep["path"])), ("GGUF version", str(rep["version"])),
            ("file size", f"{_fmt_bytes(rep['file_size'])} ({rep['file_size']} bytes)"),
            ("parameters", f"{_fmt_count(rep['n_params'])} ({rep['n_params']})"),
            ("tensors", str(rep["n_tensors"])), ("metadata entries", str(rep["n_kv"])),
            ("bits per weight", f"{rep['bpw']:.4f}")]
    rows += [(k, format_value(v, "FLOAT32")) for k, v in rep["architecture"].items()]
    if "selected" in rep:
        s = rep["selected"]
        rows.append((f"matching {format_value(s['pattern'])}",
                     f"{s['n_tensors']} tensors, {_fmt_count(s['n_params'])} params, {_fmt_bytes(s['n_bytes'])}"))
    return rows


def type_rows(rep: dict[str, Any]) -> list[list[str]]:
    total = rep["tensor_bytes"] or 1
    return [[name, str(h["n_tensors"]), _fmt_count(h["n_params"]), _fmt_bytes(h["n_bytes"]),
             f"{100 * h['n_bytes'] / total:.1f}%", f"{h['bpw']:.2f}"] for name, h in rep["types"].items()]


def tensor_rows(rep: dict[str, Any]) -> list[list[str]]:
    return [[escape_control(t["name"]), t["type"], "×".join(map(str, t["shape"])), str(t["n_elements"]),
             str(t["n_bytes"]), f"{t['bpw']:.2f}"] for t in rep.get("tensors", [])]


TYPE_HEADER = ["type", "tensors", "params", "bytes", "share", "bpw"]
TENSOR_HEADER = ["name", "type", "shape (ne)", "elements", "bytes", "bpw"]


def render_json(rep: dict[str, Any]) -> str:
    return json.dumps(rep, indent=2, ensure_ascii=False)


def render_markdown(rep: dict[str, Any]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    def table(header: list[str], rows: list[list[str]]) -> list[str]:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
        return out + [""]

    lines = [f"# {cell(escape_control(Path(rep['path']).name))}", ""]
    lines += table(["field", "value"], [list(r) for r in summary_rows(rep)])
    lines += ["## Tensor types", ""] + table(TYPE_HEADER, type_rows(rep))
    lines += ["## Metadata", ""] + table(["key", "type", "value"], [
        [escape_control(k), rep["kv_types"][k], format_value(v, rep["kv_types"][k])]
        for k, v in rep["kv"].items()])
    if "tensors" in rep:
        lines += ["## Tensors", ""] + table(TENSOR_HEADER, tensor_rows(rep))
    return "\n".join(lines)
