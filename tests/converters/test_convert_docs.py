"""The supported architectures are listed from the converter registry, never by hand.

`llmtk convert --help` renders the list at run time (tests/cli); README.md and docs/convert.md
hold a copy between `<!-- architectures ... -->` markers that must equal what the registry gives
now (`python docs/regen_architectures.py` rewrites them). An unknown architecture names the nearest supported one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmtk.converters import ARCHITECTURES, convert, supported_architectures
from llmtk.converters.pipeline import architecture_table, nearest_architecture
from llmtk.errors import UnsupportedError

ROOT = Path(__file__).resolve().parents[2]


def _block(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    m = re.search(r"<!-- architectures[^>]*-->\n(.*?)\n<!-- /architectures -->", text, re.S)
    assert m, f"{path}: no <!-- architectures --> block"
    return m.group(1)


def test_docs_table_is_the_registry() -> None:
    assert _block(ROOT / "docs" / "convert.md") == architecture_table(), \
        "docs/convert.md's table differs from the registry: run python docs/regen_architectures.py"


def test_readme_list_is_the_registry() -> None:
    listed = re.search(r"\((\d+)\): (.*)\.$", _block(ROOT / "README.md"))
    assert listed, "README.md: architectures block is not '... (N): A, B, C.'"
    assert int(listed.group(1)) == len(ARCHITECTURES)
    assert listed.group(2).split(", ") == supported_architectures(), \
        "README.md's list differs from the registry: run python docs/regen_architectures.py"


@pytest.mark.parametrize(("asked", "nearest"), [("Starcoder3ForCausalLM", "Starcoder2ForCausalLM"),
                                                ("Glm4vForCausalLM", "Glm4ForCausalLM"),
                                                ("gemma2forcausallm", "Gemma2ForCausalLM"),
                                                ("Exaone4_5_ForCausalLM", "Exaone4ForCausalLM")])
def test_unknown_architecture_names_the_nearest(tmp_path: Path, asked: str, nearest: str) -> None:
    assert nearest_architecture(asked) == nearest
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [asked]}))
    with pytest.raises(UnsupportedError) as e:
        convert(tmp_path, tmp_path / "x.gguf", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and asked in msg and f"nearest supported: {nearest} " in msg
