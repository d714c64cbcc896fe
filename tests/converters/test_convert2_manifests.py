"""llmtk's converter and tokenizer against llama.cpp on the second reference set, ../shared/convert2.

The dense architectures (`DENSE2`) x 5 outtypes: metadata keys in llama.cpp's order with their
values, every tensor's name (in order), type, GGUF shape and sha256 of its bytes (the MoE ones,
`MOE2`, are compared in test_convert2_moe_manifests.py). f16 and q8_0 run by default,
f32/bf16/auto are `slow` (each conversion takes about a second, mostly the 49152-token vocabulary).

Tokenizers, for every architecture with a converter (`ARCHS2`): each arch's `logits-topk.npz` holds the first 4 x 64 tokens llama-perplexity made of
`text/pydoc-tutorial.txt` (`common_tokenize(text, add_special=true)`, special tokens not parsed,
the file's final newline dropped by `-f`); the converted GGUF's tokenizer must give exactly those.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import ARCHS2, DENSE2, OUTTYPES, assert_manifest_equal, manifest, materialize

from llmtk.converters import convert

DEFAULT_OUTTYPES = ("f16", "q8_0")
# BPE pre-tokenization is local and SentencePiece merges reach a few characters at most, so the
# first 256 tokens of a 16 KB prefix (over 4000 tokens) are those of the whole text; the slow
# test tokenizes the whole text as llama-perplexity does
PREFIX_CHARS = 16384


@pytest.fixture(scope="module")
def ckpt_root(shared_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    return shared_dir, tmp_path_factory.mktemp("ckpt2")


@pytest.fixture(scope="module")
def converted(ckpt_root, tmp_path_factory):
    """`converted(arch, outtype)` -> the GGUF llmtk writes under the manifest's file name, made
    once per module (the tokenizer tests read the f16 files the manifest tests check)."""
    shared, root = ckpt_root
    done: dict[tuple[str, str], Path] = {}

    def get(arch: str, outtype: str) -> Path:
        if (arch, outtype) not in done:
            ref = json.loads((shared / "convert2" / arch / f"{outtype}.json").read_text())
            out = tmp_path_factory.mktemp(f"{arch}-{outtype}") / ref["file"]
            done[arch, outtype] = convert(materialize(shared, arch, root, "convert2"), out, outtype, progress=False)
        return done[arch, outtype]
    return get


def _cases() -> list:
    return [pytest.param(arch, outtype, marks=() if outtype in DEFAULT_OUTTYPES else pytest.mark.slow,
                         id=f"{arch}-{outtype}")
            for arch in DENSE2 for outtype in OUTTYPES]


@pytest.mark.parametrize(("arch", "outtype"), _cases())
def test_manifest_matches_llama_cpp(ckpt_root, converted, arch: str, outtype: str) -> None:
    ref = json.loads((ckpt_root[0] / "convert2" / arch / f"{outtype}.json").read_text())
    got = manifest(converted(arch, outtype))
    assert_manifest_equal(got, ref)


def _perplexity_text(shared: Path) -> str:
    text = (shared / "text" / "pydoc-tutorial.txt").read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text  # llama.cpp's `-f` drops one final newline


def _check_tokens(shared: Path, gguf_path: Path, arch: str, text: str) -> None:
    from llmtk.tokenizer import Tokenizer

    ref = np.load(shared / "convert2" / arch / "logits-topk.npz")["tokens"].reshape(-1)
    ids = Tokenizer.from_gguf(gguf_path).encode(text, add_special=True, parse_special=False)
    assert len(ids) > ref.size
    got = np.array(ids[:ref.size], dtype=np.int32)
    bad = np.flatnonzero(got != ref)
    assert bad.size == 0, f"{bad.size} of {ref.size} ids differ, first at {bad[0]}: {got[bad[0]]} != {ref[bad[0]]}"


@pytest.mark.parametrize("arch", ARCHS2)
def test_tokenizer_matches_llama_perplexity(ckpt_root, converted, arch: str) -> None:
    text = _perplexity_text(ckpt_root[0])
    _check_tokens(ckpt_root[0], converted(arch, "f16"), arch, text[:text.rindex("\n\n", 0, PREFIX_CHARS)])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS2)
def test_tokenizer_matches_llama_perplexity_on_the_whole_text(ckpt_root, converted, arch: str) -> None:
    _check_tokens(ckpt_root[0], converted(arch, "f16"), arch, _perplexity_text(ckpt_root[0]))
