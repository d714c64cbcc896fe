"""The matcher over bytes (UTF-8 split across tokens) and token masks on SmolLM2's vocabulary."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk.grammar import Automaton, Matcher, TokenMasker, parse, shipped


def test_partial_utf8_across_chunks():
    g = parse('root ::= [ぁ-ゟ]+ "!"')
    data = "ひらがな!".encode()
    for cut in range(1, len(data)):
        m = Matcher(g)
        assert m.accept_bytes(data[:cut]) and m.accept_bytes(data[cut:]) and m.can_end, cut
    m = Matcher(g)
    assert m.accept_bytes(b"\xe3") and not m.can_end          # lead byte of U+3041..U+30FF: may match
    assert not Matcher(g).accept_bytes("漢".encode()[:1])      # U+6F22's lead byte E6 cannot reach [ぁ-ゟ]
    assert not Matcher(g).accept_bytes(b"\x80")                # stray continuation byte
    assert not Matcher(g).accept_bytes(b"\xc1")                # overlong lead


def test_mask_on_a_toy_vocabulary():
    pieces = [b"a", b"ab", b"b", b"\xe3", b"\x81\x82", b"", b"</s>", "あ".encode()]
    g = parse('root ::= "a" "b"? "あ"')
    masker = TokenMasker(g, pieces, eog_ids=[6])
    m = masker.matcher()
    assert masker.mask(m).tolist() == [True, True, False, False, False, False, False, False]
    assert m.accept_token(0, b"a")
    assert masker.mask(m).tolist() == [False, False, True, True, False, False, False, True]
    assert m.accept_token(3, b"\xe3")                           # half a character
    assert masker.mask(m).tolist() == [False, False, False, False, True, False, False, False]
    assert m.accept_token(4, b"\x81\x82") and m.can_end
    assert masker.mask(m).tolist() == [False] * 6 + [True, False]  # only end of generation


def test_token_elements_in_masks():
    pieces = [b"x", b"y", b"<t>"]
    masker = TokenMasker(parse('root ::= <[2]> "x"'), pieces)
    m = masker.matcher()
    assert masker.mask(m).tolist() == [False, False, True]
    assert m.accept_token(2, b"<t>") and masker.mask(m).tolist() == [True, False, False]


@pytest.fixture(scope="module")
def smollm2_vocab(request):
    from llmtk.errors import LlmtkError
    from llmtk.resources import smollm2_path
    from llmtk.tokenizer import Tokenizer

    try:
        tok = Tokenizer.from_gguf(smollm2_path())
    except LlmtkError as e:
        pytest.skip(f"SmolLM2 model package missing: {e}")
    return tok, [tok.token_to_piece(i) for i in range(tok.n_vocab)]


@pytest.mark.parametrize("name, text", [
    ("json", '{"name": "Ada", "n": [1, 2.5], "ok": true, "é": null}'),
    ("arithmetic", "(12.5 + 3) * -4 / (7 - 2)"),
    ("japanese", "猫が好きです。"),
])
def test_masks_on_smollm2_keep_a_valid_prefix(smollm2_vocab, name, text):
    tok, pieces = smollm2_vocab
    rng = np.random.default_rng(19)
    masker = TokenMasker(Automaton(parse(shipped(name).read_text(encoding="utf-8"))), pieces, tok.eog_ids)
    ids = tok.encode(text, add_special=False)
    m = masker.matcher()
    for step, tid in enumerate(ids + [None]):
        mask = masker.mask(m)
        if not m.can_end or tid is not None:
            assert mask.any(), (name, step)      # the grammar can continue: some token is allowed
        allowed = np.flatnonzero(mask)
        for t in rng.choice(allowed, size=min(20, len(allowed)), replace=False).tolist():
            probe = Matcher(masker.automaton)
            probe.state = m.state
            assert probe.accept_token(t, pieces[t]) or t in tok.eog_ids, (name, step, pieces[t])
        rejected = np.flatnonzero(~mask)
        for t in rng.choice(rejected, size=min(20, len(rejected)), replace=False).tolist():
            probe = Matcher(masker.automaton)
            probe.state = m.state
            assert not pieces[t] or t in tok.eog_ids or not probe.accept_token(t, pieces[t]), (name, step, pieces[t])
        if tid is None:
            break
        assert mask[tid], (name, step, pieces[tid])   # the text's own tokens are allowed
        assert m.accept_token(tid, pieces[tid])
    assert m.can_end and mask[list(tok.eog_ids)].all()
