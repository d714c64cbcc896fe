"""A parser for llama.cpp's GBNF grammar language (`llama_grammar_parser`'s semantics, own code).

A grammar is a list of rules; a rule is a list of alternatives; an alternative is a tuple of
elements: `Chars` (a character class, a quoted literal is one `Chars` per code point), `Ref`
(another rule) or `Token` (a vocabulary token, `<[id]>`, `<tok>`, negated with `!`).
Repetitions are rewritten into helper rules exactly as llama.cpp does (`S{m,n}` is `m` copies of
`S` followed by `n - m` nested optional rules), so the matcher sees only these three elements.
Every error is an `InputError` that names the line and column (1-based) of the source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from llmtk.errors import InputError

MAX_REPETITION = 2000  # llama.cpp's MAX_REPETITION_THRESHOLD
_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


@dataclass(frozen=True)
class Chars:
    """A character class: inclusive code point `ranges`, negated with `[^...]`; `.` is any."""
    ranges: tuple[tuple[int, int], ...]
    negated: bool = False
    any: bool = False

    def match(self, cp: int) -> bool:
        if self.any:
            return True
        for lo, hi in self.ranges:
            if lo <= cp <= hi:
                return not self.negated
        return self.negated

    def match_partial(self, low: int, high: int) -> bool:
        """Whether some code point in [low, high] (a partial UTF-8 sequence's completions) may match,
        as llama_grammar_match_partial_char decides it."""
        if self.any:
            return True
        for lo, hi in self.ranges:
            if lo <= high and low <= hi:
                return not self.negated
        return self.negated

    def match_range(self, low: int, high: int) -> bool | None:
        """True when every code point in [low, high] matches, False when none does, None when it
        depends on the code point. A True/False answer also holds for `match_partial` on every
        sub-interval (so a range that overlaps [low, high] without covering it, a reversed one
        included, gives None even where its neighbours cover the rest)."""
        if self.any:
            return True
        inside = False
        for lo, hi in self.ranges:
            if lo <= high and low <= hi:
                if not (lo <= low and high <= hi):
                    return None
                inside = True
        return inside != self.negated


@dataclass(frozen=True)
class Ref:
    rule: int


@dataclass(frozen=True)
class Token:
    id: int
    negated: bool = False


Element = Union[Chars, Ref, Token]


@dataclass
class Grammar:
    """Parsed rules by id, their names, and the id of `root` (or the start rule asked for)."""
    rules: list[list[tuple[Element, ...]]]
    names: list[str]
    root: int
    source: str = field(default="", repr=False)

    def rule_id(self, name: str) -> int:
        return self.names.index(name)


def _line_col(src: str, pos: int) -> tuple[int, int]:
    line = src.count("\n", 0, pos) + 1
    return line, pos - (src.rfind("\n", 0, pos) + 1) + 1


class GrammarError(InputError):
    """A GBNF syntax or semantic error, with its 1-based line and column."""

    def __init__(self, message: str, src: str, pos: int, name: str = "grammar") -> None:
        self.line, self.col = _line_col(src, min(pos, len(src)))
        self.pos = pos
        super().__init__(f"{name}:{self.line}:{self.col}: {message}")


def _is_word(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "-_")


class _Parser:
    def __init__(self, src: str, name: str, tokenize: Callable[[str], list[int]] | None) -> None:
        self.src = src + "\0"
        self.text = src
        self.name = name
        self.tokenize = tokenize
        self.ids: dict[str, int] = {}
        self.names: list[str] = []
        self.rules: dict[int, list[tuple[Element, ...]]] = {}
        self.first_ref: dict[int, int] = {}
        self.defined_at: dict[int, int] = {}

    def error(self, message: str, pos: int) -> GrammarError:
        return GrammarError(message, self.text, pos, self.name)

    def symbol(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.names)
            self.names.append(name)
        return self.ids[name]

    def fresh(self, base: str) -> int:
        rid = len(self.names)
        self.names.append(f"{base}_{rid}")
        self.ids[self.names[-1]] = rid
        return rid

    def space(self, pos: int, newline_ok: bool) -> int:
        s = self.src
        while s[pos] in " \t#" or (newline_ok and s[pos] in "\r\n"):
            if s[pos] == "#":
                while s[pos] not in "\r\n\0":
                    pos += 1
            else:
                pos += 1
        return pos

    def name_end(self, pos: int) -> int:
        end = pos
        while _is_word(self.src[end]):
            end += 1
        if end == pos:
            raise self.error(f"expected a rule name, found {self.src[pos]!r}", pos)
        return end

    def int_end(self, pos: int) -> int:
        end = pos
        while self.src[end].isascii() and self.src[end].isdigit():
            end += 1
        if end == pos:
            raise self.error(f"expected an integer, found {self.src[pos]!r}", pos)
        return end

    def char(self, pos: int) -> tuple[int, int]:
        s = self.src
        if s[pos] == "\\":
            e = s[pos + 1]
            if e in _HEX_ESCAPES:
                n = _HEX_ESCAPES[e]
                digits = s[pos + 2:pos + 2 + n]
                if len(digits) != n or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    raise self.error(f"bad escape '\\{e}': expected {n} hex digits", pos)
                return int(digits, 16), pos + 2 + n
            if e in _ESCAPES:
                return ord(_ESCAPES[e]), pos + 2
            raise self.error(f"bad escape '\\{e}' (known: \\x \\u \\U \\t \\n \\r \\\\ \\\" \\[ \\] \\-)", pos)
        if s[pos] == "\0" and pos >= len(self.text):
            raise self.error("unexpected end of input", pos)
        return ord(s[pos]), pos + 1

    def token(self, pos: int) -> tuple[int, int]:
        s, start = self.src, pos
        pos += 1  # '<'
        if s[pos] == "[":
            end = self.int_end(pos + 1)
            if s[end] != "]" or s[end + 1] != ">":
                raise self.error("expected ']>' after a token id", end)
            return int(s[pos + 1:end]), end + 2
        end = s.find(">", pos, len(self.text))
        if end < 0:
            raise self.error("unclosed token reference '<'", start)
        text = s[start:end + 1]
        if self.tokenize is None:
            raise self.error(f"token {text} needs a vocabulary (give a tokenizer)", start)
        ids = self.tokenize(text)
        if len(ids) != 1:
            raise self.error(f"token {text} is {len(ids)} tokens in this vocabulary, not one", start)
        return ids[0], end + 1

    def alternates(self, pos: int, rule_name: str, rule_id: int, nested: bool) -> int:
        alts = []
        seq, pos = self.sequence(pos, rule_name, nested)
        alts.append(seq)
        while self.src[pos] == "|":
            pos = self.space(pos + 1, True)
            seq, pos = self.sequence(pos, rule_name, nested)
            alts.append(seq)
        self.rules[rule_id] = [tuple(a) for a in alts]
        return pos

    def sequence(self, pos: int, rule_name: str, nested: bool) -> tuple[list[Element], int]:
        s = self.src
        seq: list[Element] = []
        last = None  # start index in seq of the last symbol, for */+/?/{}

        def repeat(lo: int, hi: int | None, at: int) -> None:
            if last is None:
                raise self.error("a repetition needs a preceding item", at)
            item = seq[last:]
            del seq[last:]
            seq.extend(item * lo)
            n_opt = 1 if hi is None else hi - lo
            prev = None
            for i in range(n_opt):
                rid = self.fresh(rule_name)
                if hi is None:
                    self.rules[rid] = [tuple(item) + (Ref(rid),), ()]
                else:
                    self.rules[rid] = [tuple(item) + ((Ref(prev),) if i > 0 else ()), ()]
                prev = rid
            if n_opt > 0:
                seq.append(Ref(prev))

        while True:
            c = s[pos]
            start = pos
            if c == '"':
                pos += 1
                last = len(seq)
                while s[pos] != '"':
                    if pos >= len(self.text):
                        raise self.error("unclosed string literal", start)
                    cp, pos = self.char(pos)
                    seq.append(Chars(((cp, cp),)))
                if last == len(seq):
                    last = None  # "" is nothing to repeat
                pos = self.space(pos + 1, nested)
            elif c == "[":
                pos += 1
                negated = s[pos] == "^"
                pos += negated
                ranges = []
                while s[pos] != "]":
                    if pos >= len(self.text):
                        raise self.error("unclosed character class '['", start)
                    lo, pos = self.char(pos)
                    hi = lo
                    if s[pos] == "-" and s[pos + 1] != "]":
                        if pos + 1 >= len(self.text):
                            raise self.error("unclosed character class '['", start)
                        hi, pos = self.char(pos + 1)
                    ranges.append((lo, hi))
                last = len(seq)
                seq.append(Chars(tuple(ranges), negated))
                pos = self.space(pos + 1, nested)
            elif c == "<" or (c == "!" and s[pos + 1] == "<"):
                neg = c == "!"
                tid, pos = self.token(pos + neg)
                last = len(seq)
                seq.append(Token(tid, neg))
                pos = self.space(pos, nested)
            elif _is_word(c):
                end = self.name_end(pos)
                rid = self.symbol(s[pos:end])
                self.first_ref.setdefault(rid, pos)
                last = len(seq)
                seq.append(Ref(rid))
                pos = self.space(end, nested)
            elif c == "(":
                pos = self.space(pos + 1, True)
                rid = self.fresh(rule_name)
                pos = self.alternates(pos, rule_name, rid, True)
                if s[pos] != ")":
                    raise self.error("unbalanced '(': expected ')'", start if s[pos] == "\0" else pos)
                last = len(seq)
                seq.append(Ref(rid))
                pos = self.space(pos + 1, nested)
            elif c == ".":
                last = len(seq)
                seq.append(Chars((), any=True))
                pos = self.space(pos + 1, nested)
            elif c in "*+?":
                pos = self.space(pos + 1, nested)
                repeat(*{"*": (0, None), "+": (1, None), "?": (0, 1)}[c], start)
                last = None
            elif c == "{":
                pos = self.space(pos + 1, nested)
                end = self.int_end(pos)
                lo, hi = int(s[pos:end]), None
                pos = self.space(end, nested)
                if s[pos] == "}":
                    hi = lo
                elif s[pos] == ",":
                    pos = self.space(pos + 1, nested)
                    if s[pos].isascii() and s[pos].isdigit():
                        end = self.int_end(pos)
                        hi = int(s[pos:end])
                        pos = self.space(end, nested)
                    if s[pos] != "}":
                        raise self.error("unbalanced '{': expected '}'", pos)
                else:
                    raise self.error("expected ',' or '}' in a repetition", pos)
                pos = self.space(pos + 1, nested)
                if lo > MAX_REPETITION:
                    raise self.error(f"repetition {lo} exceeds {MAX_REPETITION}", start)
                if hi is not None and hi < lo:
                    raise self.error(f"repetition {{{lo},{hi}}} has max < min", start)
                if hi is not None and hi > MAX_REPETITION:
                    hi = None
                repeat(lo, hi, start)
                last = None
            else:
                return seq, pos

    def rule(self, pos: int) -> int:
        end = self.name_end(pos)
        name = self.src[pos:end]
        rid = self.symbol(name)
        if rid in self.defined_at:
            raise self.error(f"rule '{name}' is defined twice", pos)
        self.defined_at[rid] = pos
        p = self.space(end, False)
        if self.src[p:p + 3] != "::=":
            raise self.error("expected '::='", p)
        p = self.space(p + 3, True)
        p = self.alternates(p, name, rid, False)
        c = self.src[p]
        if c == "\r":
            p += 2 if self.src[p + 1] == "\n" else 1
        elif c == "\n":
            p += 1
        elif c == ")":
            raise self.error("unbalanced ')'", p)
        elif c == "]":
            raise self.error("unbalanced ']'", p)
        elif c == "}":
            raise self.error("unbalanced '}'", p)
        elif p < len(self.text):
            raise self.error(f"unexpected {c!r}: expected a newline or the end", p)
        return self.space(p, True)


def parse(text: str, *, root: str = "root", name: str = "grammar",
          tokenize: Callable[[str], list[int]] | None = None) -> Grammar:
    """Parse GBNF `text` (llama.cpp's grammar language) into a `Grammar` starting at `root`.

    `tokenize` turns a `<tok>` reference into token ids (it must give exactly one); `name` prefixes
    error messages (`json.gbnf:3:14: bad escape ...`). Raises `GrammarError` (an `InputError`)
    for syntax errors, undefined rules, a missing root and left recursion.
    """
    p = _Parser(text, name, tokenize)
    pos = p.space(0, True)
    while pos < len(text):
        pos = p.rule(pos)
    for rid, n in enumerate(p.names):
        if rid not in p.rules:
            raise p.error(f"undefined rule '{n}'", p.first_ref.get(rid, 0))
    if root not in p.ids:
        raise p.error(f"the grammar has no '{root}' rule", len(text))
    rules = [p.rules[i] for i in range(len(p.names))]
    rec = _left_recursive(rules)
    if rec is not None:
        # name the user's rule: helper rules are named `<rule>_<id>`
        n = p.names[rec]
        user = n if n in p.defined_at and p.ids.get(n) == rec else n.rpartition("_")[0] or n
        at = p.defined_at.get(p.ids.get(user, rec), 0)
        raise p.error(f"left recursion in rule '{user}' (llama.cpp cannot match it)", at)
    return Grammar(rules, p.names, p.ids[root], text)


def _nullable(rules: list[list[tuple[Element, ...]]]) -> list[bool]:
    null = [False] * len(rules)
    changed = True
    while changed:
        changed = False
        for rid, alts in enumerate(rules):
            if not null[rid] and any(all(isinstance(e, Ref) and null[e.rule] for e in a) for a in alts):
                null[rid] = changed = True
    return null


def _left_recursive(rules: list[list[tuple[Element, ...]]]) -> int | None:
    """The first rule that can reach itself without consuming input, else None."""
    null = _nullable(rules)
    left: list[set[int]] = []
    for alts in rules:
        firsts = set()
        for a in alts:
            for e in a:
                if not isinstance(e, Ref):
                    break
                firsts.add(e.rule)
                if not null[e.rule]:
                    break
        left.append(firsts)
    for start in range(len(rules)):
        seen, todo = set(), list(left[start])
        while todo:
            r = todo.pop()
            if r == start:
                return start
            if r not in seen:
                seen.add(r)
                todo.extend(left[r])
    return None
