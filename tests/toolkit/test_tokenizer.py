"""llmtk.tokenizer against llama-tokenize's ids, plus hand-made vocabularies for each mechanism.

Ground truth: `../shared/llamacpp/{smollm2,gemma3}/tokens.json`, `llama-tokenize --ids --no-escape`
on 22 texts (two 20 KB prose slices) for SmolLM2 (byte-level BPE, pre `smollm`) and gemma-3-270m
(SentencePiece-style, 262144 tokens, user-defined whitespace tokens).
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from llmtk.errors import InputError, UnsupportedError
from llmtk.tokenizer import PRE_TOKENIZERS, TokenAttr, Tokenizer
from llmtk.tokenizer import pretokenize as P
from llmtk.tokenizer.unicode import BYTE_TO_CHAR, byte_encode

N_CASES = 22
MODELS = ("smollm2", "gemma3")


@pytest.fixture(scope="module")
def smollm2(smollm2_path) -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_path)


@pytest.fixture(scope="module")
def gemma3(gemma3_path) -> Tokenizer:
    return Tokenizer.from_gguf(gemma3_path)


@pytest.fixture(scope="module")
def cases(shared_dir) -> dict[str, list[dict]]:
    return {m: json.loads((shared_dir / "llamacpp" / m / "tokens.json").read_text())["cases"] for m in MODELS}


def _first_difference(got: list[int], want: list[int]) -> str:
    k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"first difference at {k}: got {got[k:k + 6]}, llama.cpp {want[k:k + 6]} ({len(got)} vs {len(want)} ids)"


# -- llama.cpp ground truth ------------------------------------------------------------------------

def test_reference_has_22_cases_per_model(cases):
    assert [len(cases[m]) for m in MODELS] == [N_CASES, N_CASES]


@pytest.mark.parametrize("i", range(N_CASES))
@pytest.mark.parametrize("model", MODELS)
def test_ids_equal_llama_tokenize(model, i, cases, request):
    tok = request.getfixturevalue(model)
    case = cases[model][i]
    got = tok.encode(case["text"])
    assert got == case["ids"], f"{case['text'][:40]!r}: " + _first_difference(got, case["ids"])


def test_smollm_whitespace_run_before_a_digit_is_one_piece(smollm2):
    # Regression (the case where the `tokenizers` library disagrees with llama-tokenize): `smollm`
    # cuts every digit out first, so the GPT-2 scanner sees "\n\n   " at the end of a piece and
    # keeps the whole run, where the plain GPT-2 regex leaves the last space to " 0".
    assert smollm2.encode("::\n\n   0.3") == [9533, 1004, 32, 30, 35]
    assert smollm2.encode("a  1") == [81, 256, 33]     # 'a', '  ', '1'


def test_bpe_equals_tokenizers_library_under_the_same_pre_tokenizer(smollm2_path, shared_dir):
    """SmolLM2's vocabulary with the plain `gpt-2` pre-tokenizer against the `tokenizers` library
    on SmolLM2's tokenizer.json (ByteLevel with the GPT-2 regex): merges and byte alphabet agree."""
    tokenizers = pytest.importorskip("tokenizers")
    from llmtk.ggufio import GGUFReader

    hf = tokenizers.Tokenizer.from_file(str(shared_dir / "convert/_tokenizer/tokenizer.json"))
    with GGUFReader(smollm2_path) as reader:
        kv = dict(reader.kv)
    kv["tokenizer.ggml.pre"] = "gpt-2"
    tok = Tokenizer.from_metadata(kv)
    texts = [(shared_dir / "text/pydoc-tutorial.txt").read_text()[:60000], *_texts(7, 300)]
    for text in texts:
        want = hf.encode(text, add_special_tokens=False).ids
        got = tok.encode(text, add_special=False, parse_special=False)
        assert got == want, f"{text[:40]!r}: " + _first_difference(got, want)


# -- model metadata, BOS/EOS, special tokens ------------------------------------------------------

def test_vocabulary_properties(smollm2, gemma3):
    assert (smollm2.n_vocab, smollm2.bos_id, smollm2.eos_id, smollm2.add_bos) == (49152, 1, 2, False)
    assert (gemma3.n_vocab, gemma3.bos_id, gemma3.eos_id, gemma3.add_bos) == (262144, 2, 1, True)
    assert smollm2.tokens[19556] == "Hello" and gemma3.tokens[1902] == "\u2581world"
    assert gemma3.attrs[108] == TokenAttr.USER_DEFINED and gemma3.attrs[2] == TokenAttr.CONTROL


def test_end_of_generation_ids(smollm2, gemma3):
    assert smollm2.eot_id == 2 and {0, 2} <= smollm2.eog_ids          # <|endoftext|>, <|im_end|>
    assert gemma3.eot_id == 106 and {1, 106} <= gemma3.eog_ids         # <eos>, <end_of_turn>
    assert gemma3.attrs[gemma3.token_to_id["</s>"]] & TokenAttr.CONTROL  # made control at load


def test_bos_follows_the_vocabulary(smollm2, gemma3):
    assert gemma3.encode("Hello world") == [2, 9259, 1902]
    assert gemma3.encode("Hello world", add_special=False) == [9259, 1902]
    assert smollm2.encode("Hello world") == smollm2.encode("Hello world", add_special=False) == [19556, 905]


def test_control_tokens_parse_only_when_asked(smollm2, gemma3):
    text = "<|im_start|>user\nhi<|im_end|>\n"
    assert smollm2.encode(text) == [1, 4093, 198, 6004, 2, 198]
    plain = smollm2.encode(text, parse_special=False)
    assert 1 not in plain and 2 not in plain
    assert smollm2.decode(plain) == text
    assert gemma3.encode("<start_of_turn>user", add_special=False) == [gemma3.token_to_id["<start_of_turn>"], 2364]
    assert gemma3.token_to_id["<start_of_turn>"] not in gemma3.encode("<start_of_turn>", parse_special=False)


def test_user_defined_tokens_are_cut_even_without_parse_special(gemma3):
    # gemma3's whitespace runs are user-defined tokens: llama.cpp cuts them out in any case
    ids = gemma3.encode("a\n\nb", add_special=False, parse_special=False)
    assert 108 in ids and gemma3.decode(ids) == "a\n\nb"


def test_longest_special_token_wins(gemma3):
    # "\n\n\n" (109) is cut before "\n\n" (108) and "\n" (107)
    assert gemma3.encode("\n\n\n\n", add_special=False) == [gemma3.token_to_id["\n\n\n\n"]]
    assert gemma3.encode("x\n\n\nx", add_special=False)[1] == 109


# -- decoding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_decode_round_trip(model, cases, request):
    tok = request.getfixturevalue(model)
    for case in cases[model]:
        ids = tok.encode(case["text"])
        assert tok.decode(ids, remove_special=True) == case["text"]
        assert tok.decode(tok.encode(case["text"], add_special=False)) == case["text"]


def test_pieces(smollm2, gemma3):
    assert smollm2.token_to_piece(905) == b" world"
    assert smollm2.token_to_piece(1) == b"<|im_start|>" and smollm2.token_to_piece(1, special=False) == b""
    assert gemma3.token_to_piece(251) == b"\r"          # byte token <0x0D>
    assert gemma3.token_to_piece(1902) == b" world"
    with pytest.raises(InputError, match="262144"):
        gemma3.token_to_piece(262144)


# -- hand-made vocabularies -------------------------------------------------------------------------

def _bpe_kv(tokens: list[str], merges: list[str], pre: str = "gpt-2", **extra) -> dict:
    kv = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.merges": merges, "tokenizer.ggml.token_type": np.ones(len(tokens), np.int32)}
    kv.update(extra)
    return kv


def test_bpe_merges_lowest_rank_first():
    tokens = ["a", "b", "c", "ab", "bc"]
    first_ab = Tokenizer.from_metadata(_bpe_kv(tokens, ["a b", "b c"]))
    first_bc = Tokenizer.from_metadata(_bpe_kv(tokens, ["b c", "a b"]))
    assert first_ab.encode("abc") == [3, 2]
    assert first_bc.encode("abc") == [0, 4]


def test_bpe_equal_ranks_merge_leftmost_and_chain():
    tokens = ["a", "aa", "aaaa"]
    tok = Tokenizer.from_metadata(_bpe_kv(tokens, ["a a", "aa aa"]))
    assert tok.encode("aaaaa") == [2, 0]     # (aa)(aa)a -> (aaaa)a


def test_bpe_unknown_symbol_falls_back_to_single_byte_tokens():
    # "ab" merges but is not a token: llama.cpp emits the one-byte tokens it can find
    tok = Tokenizer.from_metadata(_bpe_kv(["a", "b"], ["a b"]))
    assert tok.encode("ab") == [0, 1]


def test_bpe_ignore_merges_takes_whole_word_tokens():
    tokens = ["a", "b", "c", "ab", "abc", "bc"]
    merges = ["b c", "a b", "ab c"]
    assert Tokenizer.from_metadata(_bpe_kv(tokens, merges, pre="gpt-2")).encode("abc") == [0, 5]
    assert Tokenizer.from_metadata(_bpe_kv(tokens, merges, pre="llama-bpe",
                                           **{"tokenizer.ggml.add_bos_token": False})).encode("abc") == [4]


def test_bpe_byte_level_alphabet():
    assert len(set(BYTE_TO_CHAR)) == 256 and BYTE_TO_CHAR[ord(" ")] == "\u0120"
    assert byte_encode(" é") == "\u0120\u00c3\u00a9"
    tokens = BYTE_TO_CHAR + ["\u0120\u00c3\u00a9"]
    # the intermediate "Ġ\u00c3" need not be a token: llama.cpp ranks merges by their strings
    tok = Tokenizer.from_metadata(_bpe_kv(tokens, ["\u0120 \u00c3", "\u0120\u00c3 \u00a9"]))
    ids = tok.encode(" é!")
    assert ids == [256, 0x21] and tok.decode(ids) == " é!"


def test_gemma4_style_bpe_on_raw_utf8_with_escaped_spaces():
    tokens = ["<pad>", "<bos>", *BYTES, "\u2581", "a", "\u2581a", "\n", "\n\n", "é"]
    kv = {"tokenizer.ggml.model": "gemma4", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.merges": ["\u2581 a", "\n \n"], "tokenizer.ggml.bos_token_id": 1,
          "tokenizer.ggml.token_type": np.array([3, 3] + [6] * 256 + [1] * 6, np.int32)}
    tok = Tokenizer.from_metadata(kv)
    ids = tok.encode(" a\n\n\nb", add_special=True)   # BOS forced on; "\n\n\n" is no token: merged
    assert [tok.tokens[i] for i in ids] == ["<bos>", "\u2581a", "\n\n", "\n", "<0x62>"]
    assert tok.decode(ids[1:]) == " a\n\n\nb"


def test_special_tokens_are_ordered_by_utf8_length():
    # "ééé" (3 characters, 6 bytes) goes before "éabc" (4 characters, 5 bytes), as in llama.cpp
    tokens = [*BYTE_TO_CHAR, "ééé", "éabc"]
    types = np.array([1] * 256 + [4, 4], np.int32)
    tok = Tokenizer.from_metadata(_bpe_kv(tokens, [], **{"tokenizer.ggml.token_type": types}))
    assert tok.encode("éééabc") == [256, ord("a"), ord("b"), ord("c")]   # byte tokens sit at their byte


def test_bpe_llama3_adds_bos_unless_metadata_says_not():
    tokens = ["<|begin_of_text|>", "a"]
    kv = _bpe_kv(tokens, [], pre="llama-bpe", **{"tokenizer.ggml.bos_token_id": 0})
    kv["tokenizer.ggml.token_type"] = np.array([3, 1], np.int32)
    assert Tokenizer.from_metadata(kv).encode("a") == [0, 1]
    kv["tokenizer.ggml.add_bos_token"] = False
    assert Tokenizer.from_metadata(kv).encode("a") == [1]


def _spm_kv(tokens: list[str], scores: list[float], types: list[int] | None = None, **extra) -> dict:
    kv = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.scores": np.array(scores, np.float32),
          "tokenizer.ggml.token_type": np.array(types or [1] * len(tokens), np.int32)}
    kv.update(extra)
    return kv


BYTES = [f"<0x{b:02X}>" for b in range(256)]


def test_spm_merges_highest_score_first_and_prefixes_a_space():
    tokens = ["<unk>", "<s>", "</s>", *BYTES, "\u2581", "a", "b", "c", "ab", "bc", "\u2581a"]
    types = [2, 3, 3] + [6] * 256 + [1] * 7
    scores = [0, 0, 0] + [0] * 256 + [-1, -1, -1, -1, -2, -1, -3]
    tok = Tokenizer.from_metadata(_spm_kv(tokens, scores, types))
    ids = tok.encode("abc")                # "▁abc": bc (-1) first, then ▁a (-3); ab (-2) is stale
    assert [tok.tokens[i] for i in ids] == ["<s>", "\u2581a", "bc"]
    assert tok.decode(ids[1:]) == "abc"                          # the prefix space is dropped
    assert tok.decode(ids, remove_special=True) == " abc"        # ...but not after a removed BOS
    scores[-3] = -0.5                      # now ab beats bc
    tok = Tokenizer.from_metadata(_spm_kv(tokens, scores, types))
    assert [tok.tokens[i] for i in tok.encode("abc", add_special=False)] == ["\u2581", "ab", "c"]


def test_spm_byte_fallback_and_no_space_prefix():
    tokens = ["<unk>", "<s>", "</s>", *BYTES, "x"]
    tok = Tokenizer.from_metadata(_spm_kv(tokens, [0.0] * len(tokens), [2, 3, 3] + [6] * 256 + [1],
                                          **{"tokenizer.ggml.add_space_prefix": False}))
    ids = tok.encode("xé", add_special=False)
    assert ids == [len(tokens) - 1, 3 + 0xC3, 3 + 0xA9]
    assert tok.decode(ids) == "xé"


def test_wordpiece_splits_punctuation_and_marks_word_starts():
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "\u2581hello", "\u2581wor", "ld", "\u2581!"]
    kv = {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": np.array([3, 2, 3, 3, 1, 1, 1, 1], np.int32),
          "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.seperator_token_id": 3,
          "tokenizer.ggml.unknown_token_id": 1}
    tok = Tokenizer.from_metadata(kv)
    assert tok.encode("hello world! zz") == [2, 4, 5, 6, 7, 1, 3]


def test_phi3_special_tokens_swallow_following_spaces():
    tokens = ["<unk>", "<s>", "</s>", "<|user|>", "a", "\u2581", "\u2581a"]
    kv = _spm_kv(tokens, [0.0] * 7, [2, 3, 3, 4, 1, 1, 1], **{"general.name": "Phi-3 mini"})
    tok = Tokenizer.from_metadata(kv)
    assert tok.attrs[3] & TokenAttr.RSTRIP and not tok.attrs[1] & TokenAttr.RSTRIP
    # RSTRIP drops the spaces after <|user|>; the text after a special token gets the space prefix
    assert tok.encode("<|user|>   a", add_special=False) == [3, 6]


def test_clean_spaces_when_decoding():
    tokens = [byte_encode(w) for w in ["Hello", " ,", " world", " ?", " '", " 's", " 're", " 't", " x"]]
    tok = Tokenizer.from_metadata(_bpe_kv(tokens, [], pre="gpt-2"))
    assert tok.clean_spaces
    assert tok.decode([0, 1, 2, 3]) == "Hello, world?"
    assert tok.decode([0, 5, 6, 7]) == "Hello's're 't"
    assert tok.decode([0, 4, 8]) == "Hello'x"


def test_bad_vocabularies_are_refused():
    with pytest.raises(UnsupportedError, match="'t5'"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(UnsupportedError, match="'nonesuch'.*valid: "):
        Tokenizer.from_metadata(_bpe_kv(["a"], [], pre="nonesuch"))
    with pytest.raises(InputError, match="merges"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(InputError, match="tokenizer.ggml.tokens"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2"})
    with pytest.raises(InputError, match="token_type has 1 entries for 2 tokens"):
        Tokenizer.from_metadata(_bpe_kv(["a", "b"], [], **{"tokenizer.ggml.token_type": [1]}))


# -- pre-tokenizers ---------------------------------------------------------------------------------

SAMPLE = ("Hello World  123456 it's ÜBER naïve 日本語 \u3000x\n\n  \r\n def f(x):\n\treturn x**2 # ok!!  "
          "I'M 'll'VE ⅷ½ e\u0301 🦙\u200d\u00a0x")


@pytest.mark.parametrize("name", sorted(PRE_TOKENIZERS))
def test_every_pre_tokenizer_cuts_losslessly(name):
    words = P.regex_split(SAMPLE, list(PRE_TOKENIZERS[name].regexes))
    assert "".join(words) == SAMPLE and all(words)


ALPHABET = (list("aAbZz09 5'sStTmMdDrRlLvVeE  \t\n\r\n.,;!?-_()[]{}$+<=>^~|`\"#&*/\\@%")
            + ["é", "ü", "Ω", "日", "١", "½", "\u0301", "\u00a0", "\u2009", "\u3000", "🦙", "\u200d",
               "\x0b", "\x0c", "\x85", "\u2028", "ǅ", "ⅷ"])
SCANNED = {"gpt2": P._GPT2, "llama3": P._LLAMA3, "qwen2": P._QWEN2, "qwen35": P._QWEN35, "newlines": P._NEWLINES}


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24))) for _ in range(n)]


def _cut(text: str, lengths: list[int]) -> list[str]:
    out, pos = [], 0
    for n in lengths:
        out.append(text[pos:pos + n])
        pos += n
    return out


@pytest.mark.parametrize("name", sorted(SCANNED))
def test_scanners_equal_their_regex(name):
    """The hand-written scanners (llama.cpp's fast paths) against the same regex run the general
    way (collapsed text, Python `re`) and, where installed, the `regex` module with real Unicode
    classes, on one piece: they may differ only at piece ends cut by an earlier regex."""
    expr = SCANNED[name]
    regex = pytest.importorskip("regex") if name == "qwen35" else None
    try:
        import regex as regex_module
    except ImportError:
        regex_module = None
    for text in _texts(sum(map(ord, name)), 3000):
        fl = [P.FLAGS[c] for c in text]
        scanned: list[int] = []
        P.SCANNERS[expr](text, fl, 0, len(text), scanned)
        want = _cut(text, scanned)
        if name != "qwen35":   # \p{M} outside ASCII cannot be told apart in the collapsed text
            splitter = P._RegexSplitter(expr)
            general: list[int] = []
            splitter.split(splitter.prepare(text), 0, len(text), general)
            assert _cut(text, general) == want, repr(text)
        if regex_module is not None:
            pieces, done = [], 0
            for m in (regex or regex_module).finditer(expr, text):
                a, b = m.span()
                pieces += [text[done:a]] * (a > done) + [text[a:b]]
                done = b
            pieces += [text[done:]] * (done < len(text))
            assert pieces == want, repr(text)


def test_ecmascript_dollar_is_end_of_input_only():
    assert P.regex_split("a  \n", ["\\s+$"]) == ["a", "  \n"]
    assert P.regex_split("a  \nb", ["\\s+$"]) == ["a  \nb"]
