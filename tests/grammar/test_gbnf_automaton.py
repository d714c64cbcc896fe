"""The automaton's interned states (partial UTF-8 sequences settled by the classes they match, rows
filled by byte groups) against a per-code-point reference: the same accept/reject, can-end and
stacks after every byte, the same masks on random byte-piece vocabularies."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llmtk.grammar import Automaton, Chars, TokenMasker, json_schema_to_gbnf, parse, shipped, shipped_names
from llmtk.grammar.matcher import DEAD

EXTRA = {
    "classes": r'''root ::= ( [^a-z\u00e9] | [\u00a0-\u07ff] [\u0800-\uffff] | [\U0001F600-\U0001F64F] | [z-a]
                              | [^\u3040-\u309f] "." | [\x7f-\u0801] | [\u0400-\u04ff\u0500-\u052f]
                              | "é" | . "!" )+''',
    "edges": r'''root ::= ( [\u07ff\u0800] | [\uffff\U00010000] | [\U0010ffff] | [\u0080-\u00bf] | [^\u0000-\u007f]
                            | "日本" | [^\u0100-\U0010ffff] "\n" )*''',
    "dot": "root ::= .+",
    "not_astral": r'root ::= [^\U00010000-\U0010ffff]* "|" [^\u0000-\u00ff]+',
    "schema_strings": json_schema_to_gbnf({
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                         "kind": {"enum": ["é", "日本", "x"]},
                                         "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["name"], "additionalProperties": False}),
    "schema_pattern": json_schema_to_gbnf({"type": "string", "pattern": "^[а-я]{1,4}(ё|[\u3041-\u3096]+)?$"}),
    "schema_any": json_schema_to_gbnf({"type": "object"}),
}
GRAMMARS = {**{name: shipped(name).read_text(encoding="utf-8") for name in shipped_names()}, **EXTRA}
TEXT = ("a é ñ 日本語 ひらがな カタカナ привет 😀 \U0010FFFF \u07ff\u0800\uffff "
        "{\"k\": [1, \"x\\n\"]} 。！？、\n-")


# lead and continuation bytes where decoding has special cases (overlong, value 0, the last ones)
EDGES = {0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF7, 0x80, 0x81, 0x82, 0x8F, 0x90, 0x9F, 0xA0, 0xBF}


class Reference:
    """The matcher before partial sequences were settled: one state per exact (stacks, value,
    n_remain), stepped one byte at a time (llama_grammar_match_partial_char / decode_utf8)."""

    def __init__(self, a: Automaton) -> None:
        self.a = a
        self.start = (a.states[a.start][0], 0, 0)

    def accept_cp(self, stacks, cp):
        out = []
        for s in stacks:
            if s:
                e = self.a.elem(s[-1])
                if isinstance(e, Chars) and e.match(cp):
                    r, alt, i = s[-1]
                    nxt = (r, alt, i + 1) if i + 1 < len(self.a.rules[r][alt]) else None
                    self.a._advance(nxt, s[:-1], out)
        return tuple(dict.fromkeys(out))

    def step(self, state, byte):
        if state is None:
            return None
        stacks, value, n_remain = state
        if n_remain == 0:
            if byte < 0x80:
                return self.alive(self.accept_cp(stacks, byte), 0, 0)
            if byte < 0xC0 or byte >= 0xF8:
                return None
            n_remain = 1 if byte < 0xE0 else 2 if byte < 0xF0 else 3
            value = byte & (0x3F >> n_remain)
        else:
            if byte >> 6 != 2:
                return None
            value = (value << 6) | (byte & 0x3F)
            n_remain -= 1
            if n_remain == 0:
                return self.alive(self.accept_cp(stacks, value), 0, 0)
        if n_remain == 1 and value < 2:
            return None
        low = value << (6 * n_remain)
        high = low | ((1 << (6 * n_remain)) - 1)
        if low == 0:
            low = {2: 1 << 11, 3: 1 << 16}.get(n_remain, 0)
        for s in stacks:
            if s:
                e = self.a.elem(s[-1])
                if isinstance(e, Chars) and e.match_partial(low, high):
                    return (stacks, value, n_remain)
        return None

    @staticmethod
    def alive(stacks, value, n_remain):
        return (stacks, value, n_remain) if stacks else None

    def feed(self, state, data):
        for b in data:
            state = self.step(state, b)
        return state

    @staticmethod
    def can_end(state):
        return state is not None and state[2] == 0 and () in state[0]


def same(a: Automaton, sid: int, ref_state) -> bool:
    if ref_state is None:
        return sid == DEAD
    stacks, _, n_remain = a.states[sid]
    return sid != DEAD and frozenset(stacks) == frozenset(ref_state[0]) and n_remain == ref_state[2]


def random_bytes(rng: np.random.Generator, n: int) -> bytes:
    """Pieces of TEXT cut anywhere (mid-character too), random bytes and lone UTF-8 fragments."""
    data = TEXT.encode()
    out = b""
    while len(out) < n:
        kind = rng.integers(4)
        if kind < 2:
            i = int(rng.integers(len(data)))
            out += data[i:i + int(rng.integers(1, 6))]
        elif kind == 2:
            fragments = [0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF7, 0xF8, 0xFF]
            out += bytes(rng.choice(fragments, size=int(rng.integers(1, 3))).tolist())
        else:
            out += bytes(rng.integers(256, size=int(rng.integers(1, 3))).tolist())
    return out[:n]


def walk(a: Automaton, ref: Reference, rng: np.random.Generator, n: int):
    """A random path through the grammar (mostly bytes that keep it alive), checking every step
    and every byte that could follow; yields (state id, reference state) along the way."""
    sid, state = a.start, ref.start
    for _ in range(n):
        assert same(a, sid, state)
        assert a.can_end(sid) == ref.can_end(state)
        yield sid, state
        alive = []
        for b in range(256):
            nxt = ref.step(state, b)
            assert same(a, a.step(sid, b), nxt), (state, b)
            if nxt is not None:
                alive.append(b)
        if not alive:
            return
        edges = [b for b in alive if b in EDGES]
        multi = [b for b in alive if b >= 0x80]
        r = rng.random()
        b = int(rng.choice(edges if edges and r < 0.4 else multi if multi and r < 0.7 else alive))
        sid, state = a.step(sid, b), ref.step(state, b)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_states_match_the_reference_byte_by_byte(name):
    a = Automaton(parse(GRAMMARS[name]))
    ref = Reference(a)
    rng = np.random.default_rng(7)
    for _ in range(10):
        for _ in walk(a, ref, rng, 24):
            pass
    for _ in range(40):                     # arbitrary byte strings, invalid UTF-8 included
        data = random_bytes(rng, int(rng.integers(1, 24)))
        sid, state = a.start, ref.start
        for b in data:
            sid, state = a.step(sid, b), ref.step(state, b)
            assert same(a, sid, state), (data, b)
            assert a.can_end(sid) == ref.can_end(state)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_masks_match_the_reference(name):
    rng = np.random.default_rng(11)
    pieces = sorted({random_bytes(rng, int(rng.integers(1, 7))) for _ in range(600)})
    pieces += [b"", b"</s>"] + [bytes([b]) for b in range(256)]
    eog = [len(pieces) - 257]
    a = Automaton(parse(GRAMMARS[name]))
    masker = TokenMasker(a, pieces, eog_ids=eog)
    ref = Reference(Automaton(a.grammar))
    checked = 0
    for _ in range(4):
        for sid, state in walk(a, ref, rng, 16):
            if rng.random() < 0.5:
                continue
            want = np.array([bool(p) and i not in eog and ref.feed(state, p) is not None
                             for i, p in enumerate(pieces)])
            want[eog] = ref.can_end(state)
            masker._cache.clear()
            assert (masker.mask(sid) == want).all(), (name, state)
            checked += 1
    assert checked


def test_inside_a_string_few_states():
    """A JSON string's multi-byte characters settle into a handful of states, not one per value."""
    a = Automaton(parse(shipped("json").read_text(encoding="utf-8")))
    sid = a.feed(a.start, b'"')
    before = len(a.states)
    for ch in "éñ日本語ひらがなカタカナпривет😀\U0010FFFF\u0800\uffff":
        sid = a.feed(sid, ch.encode())
        assert sid != DEAD and a.states[sid][2] == 0
    assert len(a.states) - before <= 8


@st.composite
def classes(draw):
    bound = st.integers(0, 300)
    ranges = tuple(draw(st.lists(st.tuples(bound, bound), max_size=4)))
    return Chars(ranges, draw(st.booleans()), draw(st.booleans()) and not ranges)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(classes(), st.integers(0, 300), st.integers(0, 40))
def test_match_range_holds_for_every_code_point_and_sub_interval(e, low, width):
    high = low + width
    hit = e.match_range(low, high)
    if hit is None:
        return
    assert all(e.match(cp) == hit for cp in range(low, high + 1))
    for lo in range(low, high + 1, 3):
        for hi in range(lo, high + 1, 5):
            assert e.match_partial(lo, hi) == hit
