"""Grammar stacks advanced over code points and bytes, and token masks over a vocabulary.

The matcher follows llama.cpp's pushdown semantics (`llama_grammar_advance_stack`,
`llama_grammar_accept`): a stack is a tuple of positions `(rule, alternative, element)` whose top
is a terminal (`Chars` or `Token`); the empty stack means the grammar is complete. A set of stacks
plus a partial UTF-8 sequence is one *state*; states are interned to small integers and the byte
transitions between them are kept in one `(n_states, 256)` table, filled lazily. So feeding a
text and masking a vocabulary both become table look-ups once a state has been seen.

A code point reaches the stacks only through which top `Chars` match it, so a partial sequence
whose completions all match the same tops (each top matches all or none of them, `match_range`)
is *settled*: interned by those tops, not by its value, with one representative value whose
completion stands for all. Inside a JSON string every multi-byte character then passes through
the same few states instead of one per prefix value. Transitions are computed per group of bytes
that must land in one state (ASCII bytes matching the same tops, the 64 continuation bytes of a
settled sequence), and a whole group is filled at once.

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
        self.settled: list[bool] = [False]      # a partial sequence interned by the tops it matches
        self._ascii: dict[Chars, npt.NDArray[np.bool_]] = {}
        self._groups: dict[tuple[Chars, ...], tuple[npt.NDArray[np.intp], list[npt.NDArray[np.bool_]]]] = {}
        self._nonascii: dict[Chars, bool | None] = {}
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

    def chars_tops(self, stacks: Iterable[Stack]) -> list[tuple[Stack, Chars]]:
        """The stacks whose top is a character class, with that class."""
        out = []
        for st in stacks:
            if st:
                e = self.elem(st[-1])
                if isinstance(e, Chars):
                    out.append((st, e))
        return out

    def advance_past_top(self, matched: Iterable[Stack]) -> tuple[Stack, ...]:
        """The stacks after each of `matched` moves past its top terminal."""
        out: list[Stack] = []
        for st in matched:
            r, a, i = st[-1]
            nxt = (r, a, i + 1) if i + 1 < len(self.rules[r][a]) else None
            self._advance(nxt, st[:-1], out)
        return tuple(dict.fromkeys(out))

    def accept_cp(self, stacks: Iterable[Stack], cp: int) -> tuple[Stack, ...]:
        return self.advance_past_top(st for st, e in self.chars_tops(stacks) if e.match(cp))

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

    def intern(self, stacks: tuple[Stack, ...], value: int, n_remain: int,
               matched: frozenset[Stack] | None = None) -> int:
        """The id of a state. A partial UTF-8 sequence is keyed by its exact `value`, or, settled,
        by `matched` (the stacks whose top matches every completion, none matching the others):
        `value` is then one representative, whose completion stands for all."""
        if not stacks:
            return DEAD
        key = (frozenset(stacks), value if matched is None else matched, n_remain)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self.states)
            self.states.append((stacks, value, n_remain))
            self.settled.append(matched is not None)
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
            self.fill_row(sid, (byte,))
            nxt = int(self.table[sid, byte])
        return nxt

    def fill_row(self, sid: int, need: Iterable[int] | None = None) -> None:
        """Compute the transitions of state `sid` for the bytes `need` (all when None), one grammar
        step per group of bytes that must land in the same state, filling the whole group: ASCII
        bytes by which tops they match, all continuation bytes of a settled partial sequence;
        stray continuation and invalid bytes are DEAD."""
        stacks, value, n_remain = self.states[sid]
        tops = self.chars_tops(stacks)
        row = self.table[sid].copy()
        if n_remain == 0:
            gid, hits = self._ascii_groups(tuple(e for _, e in tops))
            leads = any(self._beyond_ascii(e) is not False for _, e in tops)
            for b in range(256) if need is None else need:
                if row[b] >= 0:
                    continue
                if b < 0x80:
                    g = gid[b]
                    row[:0x80][gid == g] = self.intern(
                        self.advance_past_top(st for (st, _), hit in zip(tops, hits[g]) if hit), 0, 0)
                elif 0xC0 <= b < 0xF8 and leads:
                    n = 1 if b < 0xE0 else 2 if b < 0xF0 else 3
                    row[b] = self._partial(stacks, tops, b & (0x3F >> n), n)
                else:
                    row[b] = DEAD   # a stray continuation byte, an invalid lead, or no top beyond ASCII
        else:
            memo: dict[tuple[bool, ...], int] = {}
            for b in range(256) if need is None else need:
                if row[b] >= 0:
                    continue
                if b >> 6 != 2:
                    row[b] = DEAD
                elif self.settled[sid]:     # every continuation byte goes where the representative's does
                    row[0x80:0xC0] = self._continue(stacks, tops, value << 6, n_remain - 1, memo)
                else:
                    row[b] = self._continue(stacks, tops, (value << 6) | (b & 0x3F), n_remain - 1, memo)
        self.table[sid] = row

    def _ascii_groups(self, elems: tuple[Chars, ...]) -> tuple[npt.NDArray[np.intp], list[npt.NDArray[np.bool_]]]:
        """ASCII bytes grouped by which of `elems` match them: each byte's group, each group's hits."""
        hit = self._groups.get(elems)
        if hit is None:
            per_byte = np.zeros((128, len(elems)), dtype=bool)
            for k, e in enumerate(elems):
                per_byte[:, k] = self._ascii_hits(e)
            packed = np.packbits(per_byte, axis=1)
            ids: dict[bytes, int] = {}      # a group's number: its first byte's place in `first`
            first: list[int] = []
            for b, r in enumerate(packed):
                if ids.setdefault(r.tobytes(), len(first)) == len(first):
                    first.append(b)
            gid = np.asarray([ids[r.tobytes()] for r in packed], dtype=np.intp)
            hit = self._groups[elems] = (gid, [per_byte[b] for b in first])
        return hit

    def _ascii_hits(self, e: Chars) -> npt.NDArray[np.bool_]:
        """`e.match` over the 128 ASCII code points."""
        hits = self._ascii.get(e)
        if hits is None:
            hits = np.full(128, e.any)
            if not e.any:
                for lo, hi in e.ranges:
                    hits[max(lo, 0):min(hi, 127) + 1] = True
                hits ^= e.negated
            self._ascii[e] = hits
        return hits

    def _beyond_ascii(self, e: Chars) -> bool | None:
        """`e.match_range` over every code point a lead byte may start (False: all leads DEAD)."""
        if e not in self._nonascii:
            self._nonascii[e] = e.match_range(0x80, 0x1FFFFF)
        return self._nonascii[e]

    def _continue(self, stacks: tuple[Stack, ...], tops: list[tuple[Stack, Chars]], value: int, n_remain: int,
                  memo: dict[tuple[bool, ...], int]) -> int:
        """The state after a continuation byte: `value` so far, `n_remain` bytes still to come (0:
        the code point is complete; `memo` keeps the states of complete code points by which tops
        they match)."""
        if n_remain:
            return self._partial(stacks, tops, value, n_remain)
        sig = tuple(e.match(value) for _, e in tops)
        nxt = memo.get(sig)
        if nxt is None:
            nxt = memo[sig] = self.intern(self.advance_past_top(st for (st, _), hit in zip(tops, sig) if hit), 0, 0)
        return nxt

    def _partial(self, stacks: tuple[Stack, ...], tops: list[tuple[Stack, Chars]], value: int, n_remain: int) -> int:
        """The state inside a multi-byte character (llama_grammar_match_partial_char): dead unless
        some completion may still match. When each top matches all or none of the completions
        the sequence is *settled*: interned by the tops that match, not by its value."""
        if n_remain == 1 and value < 2:
            return DEAD         # overlong encoding of a 7-bit character
        low = value << (6 * n_remain)
        high = low | ((1 << (6 * n_remain)) - 1)
        if value:   # (after value 0 some continuation bytes are overlong and some not: kept exact)
            matched = []
            for st, e in tops:
                hit = e.match_range(low, high)
                if hit is None:
                    break
                if hit:
                    matched.append(st)
            else:
                return self.intern(stacks, value, n_remain, frozenset(matched)) if matched else DEAD
        if low == 0:
            low = {2: 1 << 11, 3: 1 << 16}.get(n_remain, 0)
        for _, e in tops:
            if e.match_partial(low, high):
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
            unknown = np.flatnonzero(nxt < 0)
            if len(unknown):
                ups, ubs = ps[unknown], bs[unknown]
                need: dict[int, list[int]] = {}
                for s, b in set(zip(ups.tolist(), ubs.tolist())):
                    need.setdefault(s, []).append(b)
                for s, todo in need.items():
                    a.fill_row(s, todo)
                nxt[unknown] = a.table[ups, ubs]
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
