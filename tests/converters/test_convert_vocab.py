"""Tokenizer export pieces: pre-tokenizer detection by hash and by regex, SentencePiece protobuf
parsing, special tokens, and gguf-py's naming heuristics."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from llmtk.converters import vocab as V
from llmtk.converters.kv import KVStore
from llmtk.converters.metadata import default_file_name, load_metadata, model_id_components, size_label
from llmtk.errors import UnsupportedError


def _tiny_bpe(path: Path, pre_tokenizer: dict | None) -> Path:
    """A 256-token byte-level BPE tokenizer.json whose probe hash llama.cpp does not know."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(path))
    tj = json.loads(path.read_text())
    tj["pre_tokenizer"] = pre_tokenizer
    path.write_text(json.dumps(tj))
    return path


GPT2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
DIGITS_GPT2 = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, GPT2]}
LLAMA3 = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
                                           r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


@pytest.mark.parametrize("pre, expected", [(GPT2, "gpt-2"), (DIGITS_GPT2, "smollm"), (LLAMA3, "llama-bpe")])
def test_unknown_hash_falls_back_to_the_regex(tmp_path: Path, pre: dict, expected: str) -> None:
    path = _tiny_bpe(tmp_path / "tokenizer.json", pre)
    assert V.detect_pre(path, tmp_path) == expected


def test_unrecognised_pre_tokenizer_is_an_error(tmp_path: Path) -> None:
    path = _tiny_bpe(tmp_path / "tokenizer.json", {"type": "Whitespace"})
    with pytest.raises(UnsupportedError, match="pre-tokenizer not recognised.*probe hash [0-9a-f]{64}"):
        V.detect_pre(path, tmp_path)


def test_smollm_tokenizer_is_found_by_hash(shared_dir: Path) -> None:
    path = shared_dir / "convert" / "_tokenizer" / "tokenizer.json"
    assert V.detect_pre(path, path.parent) == "smollm"
    assert V.PRE_BY_HASH["855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"] == "smollm"


def _pb_field(fno: int, wire: int, payload: bytes | int) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    key = varint(fno << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 5:
        return key + payload
    return key + varint(len(payload)) + payload


def _spm_model(pieces: list[tuple[str, float, int]]) -> bytes:
    body = b"".join(_pb_field(1, 2, _pb_field(1, 2, p.encode()) + _pb_field(2, 5, struct.pack("<f", s))
                              + _pb_field(3, 0, t)) for p, s, t in pieces)
    return body + _pb_field(2, 2, _pb_field(1, 2, b"unigram.model"))  # a trainer_spec to skip


def test_sentencepiece_model_parsed_by_hand(tmp_path: Path) -> None:
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("<0x0A>", 0.0, 6), ("\u2581the", -1.5, 1),
              ("<extra>", 0.0, 4), ("<unused0>", 0.0, 5)]
    (tmp_path / "tokenizer.model").write_bytes(_spm_model(pieces))
    got = V.read_sentencepiece(tmp_path / "tokenizer.model")
    assert [(p.piece, p.score, p.type) for p in got] == pieces
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": {"7": {"content": "<|im_end|>", "special": False}}}))
    tokens, scores, types = V.sentencepiece_vocab(tmp_path, 9)
    # user-defined pieces stay NORMAL as sentencepiece's Is* checks leave them; padding is UNUSED
    assert types == [V.UNKNOWN, V.CONTROL, V.CONTROL, V.BYTE, V.NORMAL, V.NORMAL, V.UNUSED, V.CONTROL, V.UNUSED]
    assert tokens[7] == b"<|im_end|>" and tokens[8] == b"[PAD8]"
    assert scores[4] == -1.5 and scores[7] == -1000.0 and scores[8] == -10000.0
    kv = KVStore("llama")
    V.write_sentencepiece_vocab(kv, tmp_path, 9)
    assert kv.get("tokenizer.ggml.model") == "llama" and kv.get("tokenizer.ggml.pre") == "default"


def test_special_vocab_reads_template_processing(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({
        "added_tokens": [{"id": 1, "content": "<s>", "special": True}, {"id": 2, "content": "</s>", "special": True}],
        "post_processor": {"type": "TemplateProcessing", "single": [
            {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
        "model": {"type": "BPE", "vocab": {}, "merges": [["a", "b"], ["a b", "c"]]}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                               "add_eos_token": False}))
    sv = V.SpecialVocab(tmp_path, load_merges=True)
    assert sv.ids == {"bos": 1, "eos": 2}
    assert sv.add == {"bos": True, "eos": False}
    assert sv.merges == ["a b", "a\u0120b c"]


@pytest.mark.parametrize("folder, name, size, finetune", [
    ("tiny-llama", "Tiny Llama", None, None),
    ("tiny-qwen3moe", "Tiny Qwen3Moe", None, None),
    ("SmolLM2-135M-Instruct", "SmolLM2 135M Instruct", "135M", "Instruct"),
])
def test_model_id_heuristics(folder: str, name: str, size: str | None, finetune: str | None) -> None:
    from llmtk.converters.metadata import id_to_title

    parts = model_id_components(folder, 135_000_000)
    assert (id_to_title(parts.full_name), parts.size_label, parts.finetune) == (name, size, finetune)


def test_size_labels_and_file_names(tmp_path: Path) -> None:
    assert size_label(3_181_600, 0, 0, 0) == "3.2M"
    assert size_label(0, 1_000_000, 600_000, 4) == "4x1.6M"
    assert size_label(134_515_008, 0, 0, 0) == "135M"
    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    md = load_metadata(folder, 134_515_008, 134_515_008, 0, 0)
    assert default_file_name(md, "Q4_K_M") == "SmolLM2-135M-Instruct-Q4_K_M.gguf"
    assert default_file_name(md, None, vocab_only=True) == "SmolLM2-Instruct-vocab.gguf"


def test_llama_with_only_a_sentencepiece_model(shared_dir: Path, tmp_path: Path) -> None:
    """A Llama folder with tokenizer.model and no tokenizer.json: `llama` vocabulary padded to
    vocab_size, scores, special ids from config.json, add_space_prefix from tokenizer_config."""
    from llmtk.converters import convert
    from convert_helpers import manifest

    src = shared_dir / "convert" / "llama" / "tiny-llama"
    dest = tmp_path / "tiny-llama"
    dest.mkdir()
    for name in ("config.json", "model.safetensors"):
        (dest / name).symlink_to(src / name)
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("\u2581a", -1.0, 1), ("b", -2.0, 1)]
    (dest / "tokenizer.model").write_bytes(_spm_model(pieces))
    (dest / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": True, "add_bos_token": True}))
    kv = manifest(convert(dest, tmp_path / "x.gguf", "f16", progress=False))["kv"]
    tok_keys = [k for k in kv if k.startswith("tokenizer.")]
    assert tok_keys == ["tokenizer.ggml.add_space_prefix", "tokenizer.ggml.model", "tokenizer.ggml.pre",
                        "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                        "tokenizer.ggml.add_bos_token"]
    assert kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.pre"] == "default"
    assert kv["tokenizer.ggml.tokens"]["array_len"] == 49152
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
    # llama.cpp's 49152-vocabulary rule overrides the tokenizer_config's add_bos_token
    assert kv["tokenizer.ggml.add_space_prefix"] is True and kv["tokenizer.ggml.add_bos_token"] is False
