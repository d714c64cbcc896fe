"""Helpers for the converter tests: tiny checkpoints from ../shared and GGUF manifests.

The shared checkpoints store `tokenizer.json` as a text file naming the one shared tokenizer
(`../../_tokenizer/tokenizer.json`), so tests rebuild each folder with symlinks, keeping the
folder name `tiny-<arch>` from which llama.cpp derives `general.name`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

ARCHS = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3moe", "phi3", "gemma3"]
OUTTYPES = ["f32", "f16", "bf16", "q8_0", "auto"]


def materialize(shared_dir: Path, arch: str, dest_root: Path) -> Path:
    """`dest_root/tiny-<arch>/` with every file linked, the tokenizer link resolved."""
    src = shared_dir / "convert" / arch / f"tiny-{arch}"
    dest = dest_root / f"tiny-{arch}"
    if dest.exists():
        return dest
    dest.mkdir(parents=True)
    for f in src.iterdir():
        target = f
        if f.name == "tokenizer.json" and f.stat().st_size < 256:
            target = (f.parent / f.read_text().strip()).resolve()
        (dest / f.name).symlink_to(target)
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
