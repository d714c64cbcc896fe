"""Compare a GGUF file with a llama-quantize manifest (../shared/llamacpp/*/quantize/*.json)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llmtk.ggufio.constants import GGMLType
from llmtk.errors import LlmtkError
from llmtk.ggufio import GGUFReader

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


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "llamacpp"
TINY = SHARED / "tiny-qwen2-w256"
SMOL = SHARED / "smollm2"


def stems(model_dir: Path) -> list[str]:
    """The manifests of a model folder (without base.json), for parametrize."""
    return [p.stem for p in sorted((model_dir / "quantize").glob("*.json")) if p.stem != "base"] or ["none"]


def skip_without_kernels(base_dir: Path, stem: str) -> None:
    """Skip while a type of this mix has no quantize kernel yet (kernels land type by type)."""
    from llmtk.kernels import kernel_for

    man = load_manifest(base_dir / "quantize" / f"{stem}.json")
    for t in {t for _, _, t in manifest_tensors(man)}:
        try:
            k = kernel_for(t)
        except (LlmtkError, ModuleNotFoundError):
            pytest.skip(f"no kernels for {t.name} yet")
        if k.quantize is None:
            pytest.skip(f"no quantize kernel for {t.name} yet")


def check_quantize(src: Path, model_dir: Path, stem: str, tmp_path: Path, imatrix: Path) -> None:
    """Quantize `src` as the manifest `<model_dir>/quantize/<stem>.json` was made and compare."""
    from llmtk.quantize import quantize_model

    skip_without_kernels(model_dir, stem)
    out = tmp_path / f"{stem}.gguf"
    quantize_model(src, out, stem.removesuffix("-imatrix"), imatrix=imatrix if stem.endswith("-imatrix") else None)
    assert manifest_differences(out, load_manifest(model_dir / "quantize" / f"{stem}.json")) == []
