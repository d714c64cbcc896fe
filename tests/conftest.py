"""Shared fixtures: the read-only reference data in ../shared and the two real models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Idle OpenMP workers sleep instead of spinning: on a shared 2-core CI machine spinning threads
# steal the cores the working ones need (a SmolLM2 quantize went from 31 s to 5 s wall).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the project root; tests that need it skip cleanly without it."""
    if not (SHARED / "README.md").is_file():
        pytest.skip(f"reference data not found at {SHARED} (llama.cpp/ggml ground truth lives beside the project)")
    return SHARED


@pytest.fixture(scope="session")
def ggml_quants(shared_dir: Path):
    """ggml's quantizer outputs (`quants/ggml-quants.npz`), as a lazily-read NpzFile."""
    import numpy as np

    return np.load(shared_dir / "quants" / "ggml-quants.npz")


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
