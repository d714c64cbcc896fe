"""llmtk's converter against llama.cpp's: every manifest in ../shared/convert must match exactly.

8 architectures x 5 outtypes: every metadata key in llama.cpp's order with its value, every
tensor's name (in order), type, GGUF shape and sha256 of its bytes. No deliberate differences
are needed (docs/convert.md). The one full llama.cpp output is compared byte for byte.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import ARCHS, OUTTYPES, manifest, materialize

from llmtk.converters import convert


@pytest.fixture(scope="module")
def ckpt_root(shared_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    return shared_dir, tmp_path_factory.mktemp("ckpt")


@pytest.mark.parametrize("outtype", OUTTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_manifest_matches_llama_cpp(ckpt_root, tmp_path: Path, arch: str, outtype: str) -> None:
    shared, root = ckpt_root
    ref = json.loads((shared / "convert" / arch / f"{outtype}.json").read_text())
    out = convert(materialize(shared, arch, root), tmp_path / ref["file"], outtype, progress=False)
    got = manifest(out)
    assert list(got["kv"]) == list(ref["kv"]), "metadata keys or their order differ"
    for key, value in ref["kv"].items():
        assert got["kv"][key] == value, key
    assert [t["name"] for t in got["tensors"]] == [t["name"] for t in ref["tensors"]]
    for mine, theirs in zip(got["tensors"], ref["tensors"]):
        assert mine == theirs, mine["name"]


def test_llama_f16_is_byte_identical(ckpt_root, tmp_path: Path) -> None:
    shared, root = ckpt_root
    out = convert(materialize(shared, "llama", root), tmp_path / "x.gguf", "f16", progress=False)
    assert out.read_bytes() == (shared / "convert" / "llama" / "tiny-llama-f16.gguf").read_bytes()
