"""Compare a GGUF file with a llama-quantize manifest (../shared/llamacpp/*/quantize/*.json)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llmtk.constants import GGMLType
from llmtk.gguf_file import GGUFReader

# given on llama-quantize's command line, so it names the reference machine's path
LOOSE_KEYS = ("quantize.imatrix.file",)


def load_manifest(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def manifest_tensors(man: dict) -> list[tuple[str, tuple[int, ...], GGMLType]]:
    """(name, ne, type) of a manifest's tensors, in its order."""
    return [(t["name"], tuple(t["shape"]), GGMLType[t["type"]]) for t in man["tensors"]]


def _json_sha(values) -> str:
    items = values.tolist() if hasattr(values, "tolist") else list(values)
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def manifest_differences(path: Path, man: dict) -> list[str]:
    """Every way the file differs from the manifest (empty: identical tensors, types, bytes, kv)."""
    errs: list[str] = []
    with GGUFReader(path) as r:
        got = list(r.tensors.values())
        if [t.name for t in got] != [t["name"] for t in man["tensors"]]:
            errs.append("tensor names or order differ")
        for g, e in zip(got, man["tensors"]):
            if g.qtype.name != e["type"] or list(g.ne) != e["shape"]:
                errs.append(f"{g.name}: {g.qtype.name} {list(g.ne)}, expected {e['type']} {e['shape']}")
            elif hashlib.sha256(r.raw(g.name)).hexdigest() != e["sha256"]:
                errs.append(f"{g.name}: {g.qtype.name} bytes differ")
        if list(r.kv) != list(man["kv"]):
            errs.append(f"metadata keys differ: {list(r.kv)} vs {list(man['kv'])}")
        for k, v in man["kv"].items():
            if k in LOOSE_KEYS or k not in r.kv:
                continue
            gv = r.kv[k]
            if isinstance(v, dict) and "array_len" in v:
                if len(gv) != v["array_len"] or _json_sha(gv) != v["sha256_of_json"]:
                    errs.append(f"metadata {k}: array differs")
            else:
                gv = gv.tolist() if hasattr(gv, "tolist") else gv
                if gv != v:
                    errs.append(f"metadata {k}: {gv!r}, expected {v!r}")
    return errs
