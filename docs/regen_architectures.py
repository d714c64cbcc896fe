"""Rewrite the `<!-- architectures -->` blocks of README.md and docs/convert.md from the converter
registry: `python docs/regen_architectures.py` after registering a Hugging Face class
(tests/converters/test_convert_docs.py fails until the blocks equal the registry)."""
from __future__ import annotations

import re
from pathlib import Path

from llmtk.converters.pipeline import architecture_table, supported_architectures

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- architectures[^>]*-->\n)(.*?)(\n<!-- /architectures -->)", re.S)


def put(path: Path, body: str) -> None:
    text, n = BLOCK.subn(lambda m: m.group(1) + body + m.group(3), path.read_text(encoding="utf-8"))
    if n != 1:
        raise SystemExit(f"{path}: expected one <!-- architectures --> block, found {n}")
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    names = supported_architectures()
    put(ROOT / "docs" / "convert.md", architecture_table())
    put(ROOT / "README.md", f"`llmtk convert` handles these Hugging Face architectures ({len(names)}): "
        + ", ".join(names) + ".")
    print(f"{len(names)} architectures written to README.md and docs/convert.md")
