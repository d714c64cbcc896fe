"""Pre-tokenizers against llama.cpp itself: every `tokenizer.ggml.pre` in the registry, set on one
byte-level BPE vocabulary (SmolLM2's, from ../shared/convert2), must cut a mixed text into the
ids llama.cpp's `test-tokenizer-0 VOCAB TEXT` writes (`common_tokenize`, no special tokens).

The live tests need that tool (`LLAMA_CPP_BIN` or PATH; tests/llamacpp_tools.py) and skip
without it; the hand-checked splits below pin the two digit-grouping pre-tokenizers without it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from llamacpp_tools import llama_tool

from llmtk.tokenizer import PRE_TOKENIZERS, Tokenizer
from llmtk.tokenizer.pretokenize import get_pre_tokenizer, regex_split

# pieces that stress the digit, letter-case, contraction and whitespace rules
_PIECES = ["1", "22", "333", "4444", "55555", "666666", "7777777", "12345678901234", "a", "B", "_", "x9", "9x", " ",
           "\n", "\t", ".", ",", "\u0663\u0664\u0665", "\u00b2\u00b3", "\u00f1", "\u00c9", "'s", "'LL", "HTTP",
           "Server", "  ", "\u00a0", "\u3000", "\u4e2d\u6587", "123abc", "abc123", "0.5", "-42", "$100", "100%",
           "v1.2.3", "\U0001d7d9\U0001d7da", "\u216b", "don't", "\r\n"]


def _split(name: str, text: str) -> list[str]:
    return regex_split(text, list(get_pre_tokenizer(name).regexes))


def test_tiny_aya_groups_digits_in_threes_keeping_the_text_before_them() -> None:
    """llama.cpp's digit scanner for tiny_aya leaves the text before a number on its first group,
    so the whitespace rule then sees the digit after the spaces (checked with test-tokenizer-0)."""
    assert _split("tiny_aya", "salary\n    1000\n") == ["salary", "\n", "   ", " ", "1", "000", "\n"]
    assert _split("tiny_aya", "x1234567y") == ["x", "1", "234", "567", "y"]
    assert _split("tiny_aya", "123456") == ["123", "456"]


def test_superbpe_cuts_number_runs_in_threes_from_the_right() -> None:
    assert _split("superbpe", "a1234567b 12") == ["a", "1", "234", "567", "b ", "12"]


@pytest.fixture(scope="module")
def smollm_vocab(shared_dir: Path, tmp_path_factory) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "converters"))
    from convert_helpers import materialize

    from llmtk.converters import convert

    root = tmp_path_factory.mktemp("pre-vocab")
    return convert(materialize(shared_dir, "arcee", root, "convert2"), root / "vocab.gguf", "f16",
                   vocab_only=True, progress=False)


@pytest.fixture(scope="module")
def probe_text(shared_dir: Path, tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    mixed = "".join(_PIECES[i] for i in rng.integers(0, len(_PIECES), 3000))
    tutorial = (shared_dir / "text" / "pydoc-tutorial.txt").read_text(encoding="utf-8")[:20000]
    path = tmp_path_factory.mktemp("pre-text") / "probe.txt"
    path.write_bytes((tutorial + mixed + "999").encode("utf-8"))
    return path


def _compare(tool: Path, vocab: Path, text: Path, name: str, tmp_path: Path) -> None:
    from llmtk.ggufio.edit import edit_gguf

    gguf_path = tmp_path / f"vocab-{name}.gguf"
    edit_gguf(vocab, gguf_path, set_kv=[f"tokenizer.ggml.pre={name}"])
    subprocess.run([str(tool), str(gguf_path), str(text)], check=True, capture_output=True, timeout=120)
    ref = [int(x) for x in Path(f"{text}.tokcpp").read_text().split()]
    # bytes, not read_text(): universal newlines would turn the probe's "\r\n" into "\n"
    ids = Tokenizer.from_gguf(gguf_path).encode(text.read_bytes().decode("utf-8"), add_special=False,
                                                parse_special=False)
    first = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
    assert ids == ref, f"{name}: {len(ids)} ids vs llama.cpp's {len(ref)}, first difference at {first}"


@pytest.mark.parametrize("name", ["smollm", "superbpe", "tiny_aya"])
def test_new_pre_tokenizers_equal_llama_cpp(smollm_vocab, probe_text, tmp_path: Path, name: str) -> None:
    _compare(llama_tool("test-tokenizer-0"), smollm_vocab, probe_text, name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRE_TOKENIZERS.names())
def test_every_pre_tokenizer_equals_llama_cpp(smollm_vocab, probe_text, tmp_path: Path, name: str) -> None:
    _compare(llama_tool("test-tokenizer-0"), smollm_vocab, probe_text, name, tmp_path)
