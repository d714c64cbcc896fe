"""llama.cpp's own command-line tools, for tests that compare llmtk with them live.

They are optional: a build's `bin/` folder named by the `LLAMA_CPP_BIN` environment variable, or
the tools on PATH. A test that needs one calls `llama_tool`, which skips with the reason when it
is absent, so the suite passes without a llama.cpp build and checks more with one."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

_HINT = "set LLAMA_CPP_BIN to a llama.cpp build's bin/ folder, or put its tools on PATH"


def find_llama_tool(name: str) -> Path | None:
    """The path of llama.cpp's tool `name` (`llama-quantize`), or None."""
    folder = os.environ.get("LLAMA_CPP_BIN")
    if folder:
        path = Path(folder).expanduser() / name
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(name)
    return Path(found) if found else None


def llama_tool(name: str) -> Path:
    """`find_llama_tool(name)`, skipping the calling test when the tool is absent."""
    path = find_llama_tool(name)
    if path is None:
        pytest.skip(f"llama.cpp tool {name} not found ({_HINT})")
    return path
