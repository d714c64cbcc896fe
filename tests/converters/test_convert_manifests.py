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


def _reference_archs(shared: Path) -> dict[str, str]:
    """Folder of ../shared/convert -> the HF architecture its tiny checkpoint's config names."""
    return {p.name: json.loads((p / f"tiny-{p.name}" / "config.json").read_text())["architectures"][0]
            for p in sorted((shared / "convert").iterdir()) if (p / f"tiny-{p.name}").is_dir()}


def test_every_reference_and_every_registered_architecture_is_tested(shared_dir: Path) -> None:
    """ARCHS x OUTTYPES are exactly the manifests in ../shared/convert, and every converter in the
    registry has one: a new reference folder, outtype or architecture cannot go untested."""
    from llmtk.converters import ARCHITECTURES

    refs = _reference_archs(shared_dir)
    assert sorted(refs) == sorted(ARCHS), "reference folders in ../shared/convert differ from ARCHS"
    for arch in ARCHS:
        have = sorted(p.stem for p in (shared_dir / "convert" / arch).glob("*.json"))
        assert have == sorted(OUTTYPES), f"{arch}: manifests {have}, tested {OUTTYPES}"
    assert sorted(set(refs.values()) - set(ARCHITECTURES)) == [], "reference checkpoints without a converter"
    # (the second set, ../shared/convert2, is not compared yet: its architectures have no converter)
    assert sorted(set(ARCHITECTURES) - set(refs.values())) == [], "converters without a reference in ../shared/convert"
