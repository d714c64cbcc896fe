"""Grammar stacks advanced over code points and bytes, and token masks over a vocabulary.

The matcher follows llama.cpp's pushdown semantics (`llama_grammar_advance_stack`,
`llama_grammar_accept`): a stack is a tuple of positions `(rule, alternative, element)` whose top
is a terminal (`Chars` or `Token`); the empty stack means the grammar is complete. A set of stacks
plus a partial UTF-8 sequence is one *state*; states are interned to small integers and the byte
transitions between them are kept in one `(n_states, 256)` table, filled lazily. So feeding a
text and masking a vocabulary both become table look-ups once a state has been seen.

Masking walks a trie of the tokens' bytes level by level with NumPy (`state[child] =
table[state[parent], byte[child]]`), computing in Python only the transitions not yet in the
table; a token is allowed when its trie node's state is alive (a partial UTF-8 sequence at the
end is kept only if some completion may still match, as llama_grammar_match_partial_char does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from llmtk.grammar.parser import Chars, Grammar, Ref, Token

Pos = tuple[int, int, int]      # (rule id, alternative, element index)
Stack = tuple[Pos, ...]         # top is the last position
DEAD = 0                        # the state id that no byte leaves


class Automaton:
    """Interned states of one grammar and their byte transitions (shared by matchers/maskers)."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self.rules = grammar.rules
        self._advanced: dict[Stack, tuple[Stack, ...]] = {}
        self._ids: dict[tuple, int] = {}
        self.states: list[tuple[tuple[Stack, ...], int, int]] = [((), 0, -1)]  # id 0: dead
        self.table = np.full((64, 256), -1, dtype=np.int32)
        self.table[DEAD] = DEAD
        stacks: list[Stack] = []
        for a, alt in enumerate(self.rules[grammar.root]):
            self._advance((grammar.root, a, 0) if alt else None, (), stacks)
        self.start = self.intern(tuple(dict.fromkeys(stacks)), 0, 0)

    # -- stacks --------------------------------------------------------------------------------

    def elem(self, p: Pos):
        return self.rules[p[0]][p[1]][p[2]]

    def _advance(self, top: Pos | None, below: Stack, out: list[Stack]) -> None:
        stack = below if top is None else below + (top,)
        done = self._advanced.get(stack)
        if done is None:
            done = self._expand(stack)
            self._advanced[stack] = done
        out.extend(done)

    def _expand(self, stack: Stack) -> tuple[Stack, ...]:
        """Every stack reachable by expanding rule references at the top (llama_grammar_advance_stack)."""
        out: dict[Stack, None] = {}
        seen: set[Stack] = set()
        todo = [stack]
        while todo:
            st = todo.pop()
            if st in seen:
                continue
            seen.add(st)
            if not st:
                out[st] = None
                continue
            r, a, i = st[-1]
            e = self.rules[r][a][i]
            if not isinstance(e, Ref):
                out[st] = None
                continue
            base = st[:-1]
            if i + 1 < len(self.rules[r][a]):
                base = base + ((r, a, i + 1),)
            for a2, alt in enumerate(self.rules[e.rule]):
                todo.append(base + ((e.rule, a2, 0),) if alt else base)
        return tuple(out)

    def accept_cp(self, stacks: Iterable[Stack], cp: int) -> tuple[Stack, ...]:
        out: list[Stack] = []
        for st in stacks:
            if not st:
                continue
            r, a, i = st[-1]
            e = self.rules[r][a][i]
            if isinstance(e, Chars) and e.match(cp):
                nxt = (r, a, i + 1) if i + 1 < len(self.rules[r][a]) else None
                self._advance(nxt, st[:-1], out)
        return tuple(dict.fromkeys(out))

    def accept_token_id(self, stacks: Iterable[Stack], tid: int) -> tuple[Stack, ...]:
        out: list[Stack] = []
        for st in stacks:
            if st:
                r, a, i = st[-1]
                e = self.rules[r][a][i]
                if isinstance(e, Token) and (e.id == tid) != e.negated:
                    nxt = (r, a, i + 1) if i + 1 < len(self.rules[r][a]) else None
                    self._advance(nxt, st[:-1], out)
        return tuple(dict.fromkeys(out))

    # -- states --------------------------------------------------------------------------------

    def intern(self, stacks: tuple[Stack, ...], value: int, n_remain: int) -> int:
        if not stacks:
            return DEAD
        key = (frozenset(stacks), value, n_remain)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self.states)
            self.states.append((stacks, value, n_remain))
            if sid >= len(self.table):
                grown = np.full((2 * len(self.table), 256), -1, dtype=np.int32)
                grown[:len(self.table)] = self.table
                self.table = grown
        return sid

    def can_end(self, sid: int) -> bool:
        stacks, _, n_remain = self.states[sid]
        return sid != DEAD and n_remain == 0 and () in stacks

    def step(self, sid: int, byte: int) -> int:
        """The state after one more byte (the table entry, computed on first use)."""
        nxt = int(self.table[sid, byte])
        if nxt < 0:
            nxt = self._step(sid, byte)
            self.table[sid, byte] = nxt
        return nxt

    def _step(self, sid: int, byte: int) -> int:
        stacks, value, n_remain = self.states[sid]
        if n_remain == 0:
            if byte < 0x80:
                return self.intern(self.accept_cp(stacks, byte), 0, 0)
            if byte < 0xC0 or byte >= 0xF8:
                return DEAD     # a stray continuation byte or an invalid lead byte
            n_remain = 1 if byte < 0xE0 else 2 if byte < 0xF0 else 3
            value = byte & (0x3F >> n_remain)
        else:
            if byte >> 6 != 2:
                return DEAD
            value = (value << 6) | (byte & 0x3F)
            n_remain -= 1
            if n_remain == 0:
                return self.intern(self.accept_cp(stacks, value), 0, 0)
        if n_remain == 1 and value < 2:
            return DEAD         # overlong encoding of a 7-bit character
        low = value << (6 * n_remain)
        high = low | ((1 << (6 * n_remain)) - 1)
        if low == 0:
            low = {2: 1 << 11, 3: 1 << 16}.get(n_remain, 0)
        for st in stacks:
            if st:
                e = self.elem(st[-1])
                if isinstance(e, Chars) and e.match_partial(low, high):
                    return self.intern(stacks, value, n_remain)
        return DEAD

    def feed(self, sid: int, data: bytes) -> int:
        for b in data:
            sid = self.step(sid, b)
            if sid == DEAD:
                break
        return sid


class Matcher:
    """A grammar's state while text arrives, in bytes (UTF-8 may be split anywhere) or tokens."""

    def __init__(self, grammar: Grammar | Automaton) -> None:
        self.automaton = grammar if isinstance(grammar, Automaton) else Automaton(grammar)
        self.state = self.automaton.start

    @property
    def alive(self) -> bool:
        return self.state != DEAD

    @property
    def can_end(self) -> bool:
        """The text so far is a complete sentence of the grammar."""
        return self.automaton.can_end(self.state)

    def accept_bytes(self, data: bytes) -> bool:
        """Advance over `data`; False (and dead) when it leaves the grammar."""
        self.state = self.automaton.feed(self.state, data)
        return self.state != DEAD

    def accept_text(self, text: str) -> bool:
        return self.accept_bytes(text.encode("utf-8"))

    def accept_token(self, tid: int, piece: bytes) -> bool:
        """Advance over one token: token-element stacks match its id, the others its bytes."""
        a = self.automaton
        stacks, _, n_remain = a.states[self.state]
        by_id = a.accept_token_id(stacks, tid) if n_remain == 0 else ()
        by_bytes = a.states[a.feed(self.state, piece)][0] if piece else ()
        merged = tuple(dict.fromkeys(by_id + by_bytes))
        if by_id:
            self.state = a.intern(merged, 0, 0)
        else:
            self.state = a.feed(self.state, piece) if piece else DEAD
        return self.state != DEAD


@dataclass
class MatchResult:
    accepted: bool
    stop: int        # index of the first code point that cannot follow (len(text) if none)
    complete: bool   # the whole text was a valid prefix, but is it a full sentence


def match_text(grammar: Grammar | Automaton, text: str) -> MatchResult:
    """Whether `text` is a sentence of `grammar`, and where it stops matching if not."""
    m = Matcher(grammar)
    for i, ch in enumerate(text):
        if not m.accept_text(ch):
            return MatchResult(False, i, False)
    return MatchResult(m.can_end, len(text), m.can_end)


class TokenTrie:
    """The tokens' decoded bytes as a trie in breadth-first order: node 0 is the root, nodes of
    depth d are `levels[d]` (a slice), `parent[n]` and `byte[n]` describe the edge into node n,
    `node_of[t]` is token t's node (0 for tokens with no bytes)."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        ids: dict[bytes, int] = {b"": 0}
        parent, byte = [0], [0]
        self.levels: list[slice] = []
        by_len: dict[int, set[bytes]] = {}
        for p in pieces:
            for k in range(1, len(p) + 1):
                by_len.setdefault(k, set()).add(p[:k])
        for k in range(1, max(by_len, default=0) + 1):
            start = len(parent)
            for pre in sorted(by_len.get(k, ())):
                ids[pre] = len(parent)
                parent.append(ids[pre[:-1]])
                byte.append(pre[-1])
            self.levels.append(slice(start, len(parent)))
        self.parent = np.asarray(parent, dtype=np.int64)
        self.byte = np.asarray(byte, dtype=np.int64)
        self.node_of = np.asarray([ids[p] for p in pieces], dtype=np.int64)
        self.n_nodes = len(parent)


class TokenMasker:
    """Allowed-token masks of a grammar state over a vocabulary (`pieces[i]` = token i's bytes).

    `eog_ids` (end-of-generation tokens) are allowed only where the grammar can end; tokens with
    no bytes are never allowed by text. `mask(matcher)` returns a bool array of shape (n_vocab,).
    """

    def __init__(self, grammar: Grammar | Automaton, pieces: Sequence[bytes], eog_ids: Iterable[int] = (),
                 trie: TokenTrie | None = None, cache_size: int = 256) -> None:
        self.automaton = grammar if isinstance(grammar, Automaton) else Automaton(grammar)
        self.trie = trie if trie is not None else TokenTrie(pieces)
        self.n_vocab = len(pieces)
        self.eog = np.asarray(sorted(set(eog_ids)), dtype=np.int64)
        self.by_text = np.ones(self.n_vocab, dtype=bool)
        self.by_text[self.trie.node_of == 0] = False
        self.by_text[self.eog] = False
        self._cache: dict[int, npt.NDArray[np.bool_]] = {}
        self._cache_size = cache_size

    @classmethod
    def from_tokenizer(cls, grammar: Grammar | Automaton, tokenizer) -> "TokenMasker":
        pieces = [tokenizer.token_to_piece(i) for i in range(tokenizer.n_vocab)]
        return cls(grammar, pieces, getattr(tokenizer, "eog_ids", ()))

    def matcher(self) -> Matcher:
        return Matcher(self.automaton)

    def node_states(self, sid: int) -> npt.NDArray[np.int32]:
        """The state reached at every trie node from state `sid` (DEAD where the grammar rejects)."""
        a, t = self.automaton, self.trie
        ns = np.zeros(t.n_nodes, dtype=np.int32)
        ns[0] = sid
        for sl in t.levels:
            ps = ns[t.parent[sl]]
            if not ps.any():
                break
            bs = t.byte[sl]
            nxt = a.table[ps, bs]
            unknown = nxt < 0
            if unknown.any():
                for s, b in set(zip(ps[unknown].tolist(), bs[unknown].tolist())):
                    a.step(s, b)
                nxt = a.table[ps, bs]
            ns[sl] = nxt
        return ns

    def mask(self, m: Matcher | int) -> npt.NDArray[np.bool_]:
        sid = m.state if isinstance(m, Matcher) else m
        hit = self._cache.get(sid)
        if hit is not None:
            return hit
        out = np.zeros(self.n_vocab, dtype=bool)
        if sid != DEAD:
            ns = self.node_states(sid)
            out = (ns[self.trie.node_of] != DEAD) & self.by_text
            a = self.automaton
            stacks, _, n_remain = a.states[sid]
            if a.can_end(sid) and len(self.eog):
                out[self.eog] = True
            if n_remain == 0:
                for st in stacks:
                    if st:
                        e = a.elem(st[-1])
                        if isinstance(e, Token):
                            if e.negated:
                                keep = out[e.id] if e.id < self.n_vocab else False
                                out[:] = True
                                if e.id < self.n_vocab:
                                    out[e.id] = keep
                            elif e.id < self.n_vocab:
                                out[e.id] = True
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[sid] = out
        return out
