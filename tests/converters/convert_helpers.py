"""Helpers for the converter tests: tiny checkpoints from ../shared and GGUF manifests.

The shared checkpoints store their tokenizer (`tokenizer.json`, or `tokenizer.model` in
../shared/convert2) as a short text file naming the one shared file by a relative path
(`../../_tokenizer/tokenizer.json`, `../../_spm/tokenizer.model`), so tests rebuild each folder
with symlinks, keeping the folder name `tiny-<arch>` from which llama.cpp derives `general.name`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

ARCHS = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3moe", "phi3", "gemma3"]
OUTTYPES = ["f32", "f16", "bf16", "q8_0", "auto"]
# ../shared/convert2 folders (GGUF arch names) with a converter: the dense ones, then the MoE ones
DENSE2 = ["arcee", "smollm3", "seed_oss", "granite", "glm4", "olmo2", "exaone4", "apertus", "starcoder2",
          "command-r", "cohere2", "gemma", "gemma2", "ernie4_5"]
MOE2 = ["qwen2moe", "olmoe", "granitemoe", "phimoe", "dots1", "ernie4_5-moe", "glm4moe", "llama4", "gpt-oss",
        "deepseek2", "deepseek2-v3"]
ARCHS2 = DENSE2 + MOE2
# ../shared/convert2 folders whose architecture has no converter yet (their HF class must not be
# registered: registering one without moving it to MOE2 fails test_convert_manifests)
UNSUPPORTED2: list[str] = []
# files the shared checkpoints may hold as a relative link written out as text
_LINKED = ("tokenizer.json", "tokenizer.model")


def _link_target(f: Path) -> Path:
    """The file `f` stands for: itself, or the file its text names when it is a short link file."""
    if f.name not in _LINKED or f.stat().st_size >= 256:
        return f
    try:
        text = f.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        return f
    target = (f.parent / text).resolve()
    return target if text and target.is_file() else f


def materialize(shared_dir: Path, arch: str, dest_root: Path, refset: str = "convert") -> Path:
    """`dest_root/<refset>/tiny-<arch>/` with every file of `../shared/<refset>/<arch>/tiny-<arch>`
    linked, the tokenizer links resolved (`refset`: "convert" or "convert2")."""
    src = shared_dir / refset / arch / f"tiny-{arch}"
    dest = dest_root / refset / f"tiny-{arch}"
    if dest.exists():
        return dest
    dest.mkdir(parents=True)
    for f in src.iterdir():
        (dest / f.name).symlink_to(_link_target(f))
    return dest


def manifest(path: Path) -> dict:
    """The manifest format of ../shared/convert: kv (long arrays as length + sha256 of their JSON),
    tensors with GGUF-order shapes and sha256 of their bytes."""
    from llmtk.ggufio import GGUFReader

    with GGUFReader(path) as r:
        kv = {}
        for k, v in r.kv.items():
            if hasattr(v, "tolist"):
                v = v.tolist()
            if isinstance(v, list) and len(v) > 64:
                v = {"array_len": len(v),
                     "sha256_of_json": hashlib.sha256(json.dumps(v, ensure_ascii=False).encode()).hexdigest()}
            kv[k] = v
        tensors = [{"name": t.name, "type": t.qtype.name, "shape": list(reversed(t.shape)),
                    "sha256": hashlib.sha256(r.raw(t.name).tobytes()).hexdigest()} for t in r.tensors.values()]
    return {"kv": kv, "tensors": tensors}


def assert_manifest_equal(got: dict, ref: dict) -> None:
    """`got` equals llama.cpp's manifest `ref`: metadata keys in order with their values, then
    tensors in order with type, shape and sha256 (each difference named in the failure)."""
    assert list(got["kv"]) == list(ref["kv"]), "metadata keys or their order differ"
    for key, value in ref["kv"].items():
        assert got["kv"][key] == value, key
    assert [t["name"] for t in got["tensors"]] == [t["name"] for t in ref["tensors"]]
    for mine, theirs in zip(got["tensors"], ref["tensors"]):
        assert mine == theirs, mine["name"]
