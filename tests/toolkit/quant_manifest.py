"""Compare a GGUF file with a llama-quantize manifest (../shared/llamacpp/*/quantize/*.json)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import absent_reference, shared_path

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


LLAMACPP = shared_path("llamacpp")
TINY = LLAMACPP / "tiny-qwen2-w256"
SMOL = LLAMACPP / "smollm2"


# the reference folders that hold llama-quantize manifests (`<folder>/quantize/base.json`)
QUANTIZE_GLOBS = ("llamacpp/*/quantize/base.json", "convert2/*/quantize-w256/quantize/base.json")


def quantize_models() -> list[str]:
    """The folders of ../shared holding llama-quantize manifests, as paths relative to it
    (`llamacpp/smollm2`, `convert2/deepseek2/quantize-w256`): a new folder is tested unasked."""
    root = shared_path()
    return sorted(p.parent.parent.relative_to(root).as_posix() for g in QUANTIZE_GLOBS for p in root.glob(g))


def model_dir(model: str) -> Path:
    """The folder of a `quantize_models()` entry."""
    return shared_path(*model.split("/"))


def manifest_stems(model_dir: Path) -> list[str]:
    """The stems of a model folder's manifests (`Q4_K_M`, `Q4_K_M-imatrix`), base.json aside."""
    return sorted(p.stem for p in (model_dir / "quantize").glob("*.json") if p.stem != "base")


def file_type_of(stem: str) -> tuple[str, bool]:
    """`Q4_K_M-imatrix` -> ("Q4_K_M", True): the llama-quantize type and whether an imatrix was given."""
    return stem.removesuffix("-imatrix"), stem.endswith("-imatrix")


def mix_stems(model_dir: Path) -> list[str]:
    """The manifests of `model_dir`, taken from the registry: every file type of
    `llmtk.quantize.rules.FILE_TYPES`, plain and with an imatrix, that has a manifest, in registry
    order. (test_quant_rules checks that no manifest names a type outside the registry.)"""
    from llmtk.quantize.rules import FILE_TYPES

    have = set(manifest_stems(model_dir))
    return [s for name in FILE_TYPES for s in (name, f"{name}-imatrix") if s in have]


def mix_params(model_dir: Path) -> list:
    """`mix_stems` for parametrize; one skipped case naming the folder when it holds no manifests."""
    return mix_stems(model_dir) or absent_reference(model_dir / "quantize")


def missing_quantize_kernels(man: dict) -> list[str]:
    """The types of a manifest's tensors that llmtk cannot quantize to (empty: all present)."""
    from llmtk.kernels import kernel_for

    missing = []
    for t in sorted({t for _, _, t in manifest_tensors(man)}):
        try:
            k = kernel_for(t)
        except LlmtkError as e:
            missing.append(f"{t.name} ({e})")
            continue
        if k.quantize is None:
            missing.append(f"{t.name} (dequantize only)")
    return missing


def check_quantize(src: Path, model_dir: Path, stem: str, tmp_path: Path, imatrix: Path) -> None:
    """Quantize `src` as the manifest `<model_dir>/quantize/<stem>.json` was made and compare.

    A type llama-quantize wrote but llmtk has no quantize kernel for fails: the manifest is the
    requirement, and kernels that once existed going missing is a regression, not a reason to skip."""
    from llmtk.quantize import quantize_model

    man = load_manifest(model_dir / "quantize" / f"{stem}.json")
    missing = missing_quantize_kernels(man)
    assert not missing, f"llama-quantize {stem} writes types llmtk cannot quantize to: {', '.join(missing)}"
    name, with_imatrix = file_type_of(stem)
    out = tmp_path / f"{stem}.gguf"
    quantize_model(src, out, name, imatrix=imatrix if with_imatrix else None)
    assert manifest_differences(out, man) == []
