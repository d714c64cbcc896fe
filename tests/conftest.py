"""Shared fixtures: the read-only reference data in ../shared and the two real models.

This module is the one place that knows where the reference data lives: `../shared` beside the
project root, or the folder named by the `LLMTK_SHARED` environment variable (point it at an empty
folder to check that every test needing the data skips). Test modules that need a path at
collection time (parametrisation) import `shared_path` / `absent_reference` with
`from conftest import ...` (pytest's default "prepend" import mode puts tests/ on sys.path);
tests that read the data take the `shared_dir` fixture or call `require_shared`, which skip with
the missing path as the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Idle OpenMP workers sleep instead of spinning: on a shared 2-core CI machine spinning threads
# steal the cores the working ones need (a SmolLM2 quantize went from 31 s to 5 s wall).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ["LLMTK_SHARED"]).expanduser().resolve() if os.environ.get("LLMTK_SHARED") \
    else PROJECT_ROOT.parent / "shared"
_HINT = "llama.cpp/ggml ground truth lives in ../shared beside the project, or set LLMTK_SHARED"


def shared_path(*parts: str) -> Path:
    """A path inside the reference data; it may not exist (pair it with `require_shared` or
    `absent_reference` before reading it)."""
    return SHARED.joinpath(*parts)


def require_shared(*parts: str) -> Path:
    """`shared_path(*parts)`, skipping the calling test when that file or folder is absent."""
    path = shared_path(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found: {path} ({_HINT})")
    return path


def absent_reference(path: Path, n_args: int = 1) -> list:
    """The parameter list to use when the reference folder `path` holds nothing to parametrise
    over: one case, skipped with the path as the reason (never an empty, silently skipped set)."""
    return [pytest.param(*[None] * n_args, id="absent",
                         marks=pytest.mark.skip(reason=f"reference data not found: {path} ({_HINT})"))]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference data folder; tests that need it skip cleanly without it."""
    return require_shared("README.md").parent


@pytest.fixture(scope="session")
def ggml_quants(shared_dir: Path):
    """ggml's quantizer outputs (`quants/ggml-quants.npz`), as a lazily-read NpzFile."""
    import numpy as np

    return np.load(require_shared("quants", "ggml-quants.npz"))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from llmtk.errors import LlmtkError
    from llmtk.resources import smollm2_path as find

    try:
        return find()
    except LlmtkError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    from llmtk.errors import LlmtkError
    from llmtk.resources import gemma3_path as find

    try:
        return find()
    except LlmtkError as e:
        pytest.skip(str(e))
