"""llmtk's converter against llama.cpp's: every manifest in ../shared/convert must match exactly.

8 architectures x 5 outtypes: every metadata key in llama.cpp's order with its value, every
tensor's name (in order), type, GGUF shape and sha256 of its bytes. No deliberate differences
are needed (docs/convert.md). The one full llama.cpp output is compared byte for byte.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import ARCHS, ARCHS2, OUTTYPES, UNSUPPORTED2, assert_manifest_equal, manifest, materialize

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
    assert_manifest_equal(got, ref)


def test_llama_f16_is_byte_identical(ckpt_root, tmp_path: Path) -> None:
    shared, root = ckpt_root
    out = convert(materialize(shared, "llama", root), tmp_path / "x.gguf", "f16", progress=False)
    assert out.read_bytes() == (shared / "convert" / "llama" / "tiny-llama-f16.gguf").read_bytes()


def _reference_archs(shared: Path, refset: str = "convert") -> dict[str, str]:
    """Folder of ../shared/<refset> -> the HF architecture its tiny checkpoint's config names."""
    return {p.name: json.loads((p / f"tiny-{p.name}" / "config.json").read_text())["architectures"][0]
            for p in sorted((shared / refset).iterdir()) if (p / f"tiny-{p.name}").is_dir()}


def test_every_reference_and_every_registered_architecture_is_tested(shared_dir: Path) -> None:
    """ARCHS x OUTTYPES are exactly the manifests in ../shared/convert, ARCHS2 x OUTTYPES those of
    the supported folders of ../shared/convert2 (test_convert2_manifests.py), every other folder
    there is listed in UNSUPPORTED2 and has no converter, and every converter in the registry has
    a reference: a new reference folder, outtype or architecture cannot go untested."""
    from llmtk.converters import ARCHITECTURES

    refs = _reference_archs(shared_dir)
    assert sorted(refs) == sorted(ARCHS), "reference folders in ../shared/convert differ from ARCHS"
    refs2 = _reference_archs(shared_dir, "convert2")
    assert not set(ARCHS2) & set(UNSUPPORTED2), "a convert2 folder is both tested and unsupported"
    assert sorted(refs2) == sorted(ARCHS2 + UNSUPPORTED2), \
        "folders in ../shared/convert2 differ from ARCHS2 + UNSUPPORTED2 (convert_helpers.py)"
    for refset, archs in (("convert", ARCHS), ("convert2", ARCHS2)):
        for arch in archs:
            # (convert2 folders also hold the logits oracle's discrimination-q4_0.json)
            have = sorted(p.stem for p in (shared_dir / refset / arch).glob("*.json")
                          if not p.stem.startswith("discrimination-"))
            assert have == sorted(OUTTYPES), f"{refset}/{arch}: manifests {have}, tested {OUTTYPES}"
    tested = {refs[a] for a in ARCHS} | {refs2[a] for a in ARCHS2}
    assert sorted(tested - set(ARCHITECTURES)) == [], "reference checkpoints without a converter"
    unsupported = {refs2[a]: a for a in UNSUPPORTED2}
    registered_untested = sorted(set(ARCHITECTURES) & set(unsupported))
    assert registered_untested == [], (f"registered, but their convert2 folders are listed in UNSUPPORTED2: "
                                       f"{[unsupported[h] for h in registered_untested]}; move them to ARCHS2")
    assert sorted(set(ARCHITECTURES) - tested) == [], "converters without a reference in ../shared/convert{,2}"
