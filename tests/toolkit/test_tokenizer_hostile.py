"""Tokenizers built from hostile GGUF metadata (issue 17, found by the `tokenizer` fuzz target):
every bad value is one LlmtkError naming the key, or is read as llama.cpp reads it."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import engine  # noqa: E402

from llmtk.errors import InputError  # noqa: E402
from llmtk.tokenizer import Tokenizer  # noqa: E402


def _kv(kind: str) -> dict:
    g = engine.parse_gguf(engine.seed_tokenizer(kind))
    return {k: v for k, _, _, v in g.kv}


@pytest.mark.parametrize("key, value, needle", [
    ("tokenizer.ggml.scores", 1.5, "one entry per token"),
    ("tokenizer.ggml.token_type", 7, "one entry per token"),
    ("tokenizer.ggml.pre", 2.0, "expected a string"),
    ("tokenizer.ggml.add_space_prefix", [1, 2], "expected a boolean"),
    ("tokenizer.ggml.add_bos_token", "yes", "expected a boolean"),
    ("tokenizer.ggml.tokens", ["a", 5], "array of strings"),
])
def test_wrongly_typed_tokenizer_keys_are_one_line_errors(key, value, needle):
    kv = _kv("llama")
    kv[key] = value
    with pytest.raises(InputError, match=needle) as e:
        Tokenizer(kv)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_merges_must_be_strings():
    kv = _kv("gpt2")
    kv["tokenizer.ggml.merges"] = [1, 2]
    with pytest.raises(InputError, match="merges must be an array of strings"):
        Tokenizer(kv)


def test_huge_token_type_is_undefined_not_a_16_gib_table():
    """A token type of 2^31 - 1 once sized a lookup table by the largest type (MemoryError);
    llama.cpp reads any type it does not know as UNDEFINED."""
    kv = _kv("llama")
    types = list(kv["tokenizer.ggml.token_type"])
    types[-1], types[-2] = 2**31 - 1, -5
    kv["tokenizer.ggml.token_type"] = types
    tok = Tokenizer(kv)
    assert tok.attrs[-1] == tok.attrs[-2] == 0
    tok.decode(tok.encode("hello j"))


@pytest.mark.parametrize("text, byte", [("<0x0A>", 10), ("<0x>", 0), ("<0xZZ>", 0), ("<0x5>", 5), ("<0x-1>", 255)])
def test_byte_tokens_read_as_llama_cpp_strtol_reads_them(text, byte):
    """`token_to_byte` is strtol(text[3:5], 16): malformed byte tokens decode, never raise."""
    kv = _kv("llama")
    toks = list(kv["tokenizer.ggml.tokens"])
    toks[3 + 0x41] = text  # the byte token of 'A'
    kv["tokenizer.ggml.tokens"] = toks
    tok = Tokenizer(kv)
    assert tok.token_to_piece(3 + 0x41) == bytes([byte])


def test_tokenizer_fuzz_seeds_tokenize():
    for kind in ("gpt2", "qwen2", "llama", "bert"):
        tok = Tokenizer(_kv(kind))
        ids = tok.encode(engine.TOKENIZER_TEXT)
        assert ids and isinstance(tok.decode(np.asarray(ids).tolist()), str)
