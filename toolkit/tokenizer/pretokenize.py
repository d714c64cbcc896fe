"""Pre-tokenization of byte-level BPE vocabularies: llama.cpp's `unicode_regex_split`.

A pre-tokenizer is a list of regexes applied one after another: each one cuts every piece left by
the previous one into matches and the gaps between them. llama.cpp replaces the most common regexes
by hand-written scanners (GPT-2, Llama-3, Qwen2, newline runs) whose behaviour differs from the regex
in corner cases; the most visible one: a run of spaces at the very end of a piece is kept whole,
even when the piece was cut there by an earlier regex (SmolLM's digit split), where the regex
`\\s+(?!\\S)` over the whole text would leave the last space for the next word. We follow the
scanners exactly, and run any other regex with Python's `re` the way llama.cpp runs `std::regex`:
on a "collapsed" text where every non-ASCII codepoint is replaced by one byte standing for its class.

`PRE_TOKENIZERS` maps each `tokenizer.ggml.pre` value to its regexes and vocabulary options.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from llmtk.errors import UnsupportedError
from llmtk.ggufio.constants import TokenizerKey
from llmtk.registry import Registry
from .unicode import (CATEGORY_MASK, FLAGS, LETTER, MARK, NUMBER, PUNCTUATION, SYMBOL, WHITESPACE,
                      simple_lower)

_RN = ("\r", "\n")


# ---------------------------------------------------------------------------------------------
# Hand-written scanners. Each cuts text[lo:hi] into pieces and appends their lengths to `out`.
# Positions outside [lo, hi) read as class 0 ("out of range"), exactly like llama.cpp's lambdas.

def _scan_gpt2(text: str, fl: list[int], lo: int, hi: int, out: list[int]) -> None:
    """'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"""
    def F(p: int) -> int:
        return fl[p] if p < hi else 0

    pos = start = lo
    while pos < hi:
        c = text[pos]
        f = fl[pos]
        if c == "'" and pos + 1 < hi:
            c1 = text[pos + 1]
            if c1 in "stmd":
                pos += 2
                out.append(pos - start); start = pos
                continue
            if pos + 2 < hi and c1 + text[pos + 2] in ("re", "ve", "ll"):
                pos += 3
                out.append(pos - start); start = pos
                continue
        f2 = F(pos + 1) if c == " " else f
        for cls in (LETTER, NUMBER):
            if f2 & cls:
                if c == " ":
                    pos += 1
                while F(pos) & cls:
                    pos += 1
                break
        else:
            if f2 and not f2 & (WHITESPACE | LETTER | NUMBER):
                if c == " ":
                    pos += 1
                while True:
                    g = F(pos)
                    if not g or g & (WHITESPACE | LETTER | NUMBER):
                        break
                    pos += 1
            else:
                n = 0
                while F(pos + n) & WHITESPACE:
                    n += 1
                if n > 1 and pos + n < hi:   # \s+(?!\S): leave the last space to the next word
                    pos += n - 1
                elif n > 0:
                    pos += n
                else:
                    pos += 1
        out.append(pos - start); start = pos


Scanner = Callable[[str, list[int], int, int, list[int]], None]


def _make_scan_llama3(max_digits: int, word_cls: int) -> Scanner:
    """Llama-3 (digits in threes, letters), Qwen2 (single digits) and Qwen3.5 (letters and marks):
    (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?WORD+|\\p{N}{1,k}
    | ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"""

    def scan(text: str, fl: list[int], lo: int, hi: int, out: list[int]) -> None:
        def F(p: int) -> int:
            return fl[p] if p < hi else 0

        pos = start = lo
        while pos < hi:
            c = text[pos]
            f = fl[pos]
            if c == "'" and pos + 1 < hi:
                c1 = simple_lower(text[pos + 1])
                if c1 in "stmd":
                    pos += 2
                    out.append(pos - start); start = pos
                    continue
                if pos + 2 < hi and c1 + simple_lower(text[pos + 2]) in ("re", "ve", "ll"):
                    pos += 3
                    out.append(pos - start); start = pos
                    continue
            if not (c in _RN or f & NUMBER) and (f & word_cls or F(pos + 1) & word_cls):
                pos += 1
                while F(pos) & word_cls:
                    pos += 1
            elif f & NUMBER:
                run = pos
                while F(pos) & NUMBER:
                    pos += 1
                    if pos - run >= max_digits:
                        out.append(pos - start); start = run = pos
            else:
                f2 = F(pos + 1) if c == " " else f
                stop = WHITESPACE | LETTER | NUMBER | (word_cls & MARK)
                if f and not f2 & stop:
                    if c == " ":
                        pos += 1
                    while True:
                        g = F(pos)
                        if not g or g & stop:
                            break
                        pos += 1
                    while pos < hi and text[pos] in _RN:
                        pos += 1
                else:
                    n = 0
                    last_rn = -1
                    while F(pos + n) & WHITESPACE:
                        if text[pos + n] in _RN:
                            last_rn = pos + n + 1
                        n += 1
                    if last_rn >= 0:            # \s*[\r\n]+
                        pos = last_rn
                    elif n > 1 and pos + n < hi:
                        pos += n - 1
                    elif n > 0:
                        pos += n
                    else:
                        pos += 1
            if pos > start:
                out.append(pos - start); start = pos

    return scan


def _scan_newlines(text: str, fl: list[int], lo: int, hi: int, out: list[int]) -> None:
    """[^\\n]+|[\\n]+"""
    pos = lo
    while pos < hi:
        nl = text[pos] == "\n"
        run = pos
        while pos < hi and (text[pos] == "\n") == nl:
            pos += 1
        out.append(pos - run)


def _scan_digit_triples(text: str, fl: list[int], lo: int, hi: int, out: list[int]) -> None:
    """llama.cpp's `unicode_regex_split_custom_afmoe`, which it runs in place of tiny_aya's
    `\\d{1,3}(?=(?:\\d{3})*\\b)`: every run of numbers is cut into its leading 1-2 digits, then
    threes; the text before a run is not cut off but stays on the run's first group."""
    prev = pos = lo
    while pos < hi:
        if not fl[pos] & NUMBER:
            pos += 1
            continue
        start = pos
        while pos < hi and fl[pos] & NUMBER:
            pos += 1
        cut = start + (pos - start) % 3
        if cut == start:
            cut += 3
        while cut <= pos:
            out.append(cut - prev)
            prev, cut = cut, cut + 3
    if prev < hi:
        out.append(hi - prev)


_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
_TAIL = "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = _CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" + _TAIL
_QWEN2 = _CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" + _TAIL
_QWEN35 = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*"
           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_NEWLINES = "[^\\n]+|[\\n]+"
_DIGIT_TRIPLES = "\\d{1,3}(?=(?:\\d{3})*\\b)"

# Regexes llama.cpp never hands to std::regex (matched by their exact spelling, as it does).
SCANNERS: dict[str, Scanner] = {
    _GPT2: _scan_gpt2,
    _LLAMA3: _make_scan_llama3(3, LETTER),
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" + _TAIL: _make_scan_llama3(3, LETTER),
    _QWEN2: _make_scan_llama3(1, LETTER),
    _QWEN35: _make_scan_llama3(1, LETTER | MARK),
    _NEWLINES: _scan_newlines,
    _DIGIT_TRIPLES: _scan_digit_triples,
}


# ---------------------------------------------------------------------------------------------
# Any other regex: Python `re` on the collapsed text, with ECMAScript's ASCII-only \s \d \w.

# \p{..} -> (byte standing for the class in the collapsed text, the ASCII members of the class)
_CLASS_BYTES = {
    "N": ("\xd1", "0-9"),
    "L": ("\xd2", "A-Za-z"),
    "P": ("\xd3", "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"),
    "M": ("\xd4", ""),
    "S": ("\xd5", "\\$\\+<->\\^`\\|~"),
}
_PROPERTY_CLASS = {"\\p{N}": "N", "\\p{L}": "L", "\\p{P}": "P", "\\p{M}": "M", "\\p{S}": "S",
                   "\\p{Lu}": "L", "\\p{Ll}": "L", "\\p{Lt}": "L", "\\p{Lm}": "L", "\\p{Lo}": "L"}
_FLAG_BYTE = {NUMBER: "\xd1", LETTER: "\xd2", PUNCTUATION: "\xd3", MARK: "\xd4", SYMBOL: "\xd5"}
_PROPERTY_RE = re.compile(r"\\p\{[A-Za-z]+\}")


def _uses_classes(expr: str) -> bool:
    return any(p in expr for p in _PROPERTY_CLASS)


def _collapse_regex(expr: str) -> str:
    """Rewrite \\p{X} as a class of its collapsed byte plus its ASCII members."""
    out = []
    inside = False
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == "[" and (i == 0 or expr[i - 1] != "\\"):
            inside = True
        elif ch == "]" and inside and expr[i - 1] != "\\":
            inside = False
        elif ch == "\\" and (m := _PROPERTY_RE.match(expr, i)) and m.group() in _PROPERTY_CLASS:
            byte, ascii_members = _CLASS_BYTES[_PROPERTY_CLASS[m.group()]]
            body = byte + ascii_members
            out.append(body if inside else "[" + body + "]")
            i = m.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _ecmascript_to_python(expr: str) -> str:
    """ECMAScript's `$` (no multiline) is the end of the input only; Python's `$` also matches
    before a final newline, so anchors outside character classes become `\\Z`."""
    out = []
    inside = escaped = False
    for ch in expr:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "[":
            inside = True
        elif ch == "]":
            inside = False
        elif ch == "$" and not inside:
            ch = "\\Z"
        out.append(ch)
    return "".join(out)


def _collapse_char(ch: str) -> str:
    if ch < "\x80":
        return ch
    f = FLAGS[ch]
    if f & WHITESPACE:
        return "\x0b"
    return _FLAG_BYTE.get(f & CATEGORY_MASK, "\xd0")


@dataclass
class _RegexSplitter:
    expr: str
    collapsed: bool = field(init=False)
    pattern: re.Pattern = field(init=False)

    def __post_init__(self) -> None:
        self.collapsed = _uses_classes(self.expr)
        if self.collapsed and any(ord(ch) >= 128 for ch in self.expr):
            raise UnsupportedError(f"pre-tokenizer regex {self.expr!r} mixes \\p{{..}} classes and "
                                   "non-ASCII characters (llama.cpp refuses it too)")
        body = _collapse_regex(self.expr) if self.collapsed else self.expr
        self.pattern = re.compile(_ecmascript_to_python(body), re.ASCII)

    def prepare(self, text: str) -> str:
        if self.collapsed:
            return "".join([_collapse_char(ch) for ch in text])
        # wide-character regex: non-ASCII whitespace reads as \v so that ASCII \s matches it
        return "".join(["\x0b" if ch >= "\x80" and FLAGS[ch] & WHITESPACE else ch for ch in text])

    def split(self, subject: str, lo: int, hi: int, out: list[int]) -> None:
        piece = subject[lo:hi]
        done = 0
        for m in self.pattern.finditer(piece):
            a, b = m.span()
            if a > done:
                out.append(a - done)
            if b > a:
                out.append(b - a)
            done = b
        if done < len(piece):
            out.append(len(piece) - done)


def regex_split(text: str, exprs: list[str]) -> list[str]:
    """Cut `text` into words with llama.cpp's sequence of pre-tokenizer regexes."""
    if not text:
        return []
    fl = [FLAGS[ch] for ch in text]
    lengths = [len(text)]
    for expr in exprs:
        scanner = SCANNERS.get(expr)
        new: list[int] = []
        pos = 0
        if scanner is not None:
            for n in lengths:
                scanner(text, fl, pos, pos + n, new)
                pos += n
        else:
            splitter = _regex_splitter(expr)
            subject = splitter.prepare(text)
            for n in lengths:
                splitter.split(subject, pos, pos + n, new)
                pos += n
        lengths = new
    words = []
    pos = 0
    for n in lengths:
        words.append(text[pos:pos + n])
        pos += n
    return words


_SPLITTERS: dict[str, _RegexSplitter] = {}


def _regex_splitter(expr: str) -> _RegexSplitter:
    if expr not in _SPLITTERS:
        _SPLITTERS[expr] = _RegexSplitter(expr)
    return _SPLITTERS[expr]


# ---------------------------------------------------------------------------------------------
# The registry: tokenizer.ggml.pre -> regexes and the vocabulary options llama.cpp ties to it.

@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp pre-tokenizes one `tokenizer.ggml.pre` family of byte-level BPE vocabularies."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False      # a word that is itself a token is not merged
    clean_spaces: bool = True        # detokenizer removes spaces before punctuation
    add_bos: bool | None = None      # default before the GGUF's add_bos_token
    byte_encode: bool = True         # GPT-2 byte alphabet (False: raw UTF-8, ▁ for spaces)
    escape_whitespaces: bool = False


_DEFAULT_REGEXES = ("[\\p{P}\\$\\+<=>\\^~\\|]+", _GPT2, "\\p{N}+", "[0-9][0-9][0-9]")
_DIGIT_THEN_GPT2 = ("\\p{N}", _GPT2)
_CJK_HANGUL = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_DEEPSEEK_LLM = (
    "[\r\n]",
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134"
    "\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    _CJK_HANGUL,
    "\\p{N}+",
)
_DEEPSEEK_CODER = ("[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", _CJK_HANGUL, "\\p{N}")
_DEEPSEEK_V3 = (
    "\\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
)
_FALCON = ("[\\p{P}\\$\\+<=>\\^~\\|`]+", _GPT2, "[0-9][0-9][0-9]")
_UPPER_THEN_LOWER = "((?=[\\p{L}])([^a-z]))"   # llama.cpp's stand-ins for [\p{Lu}..] / [\p{Ll}..]
_LOWER = "((?=[\\p{L}])([^A-Z]))"
_TEKKEN = ("[^\\r\\n\\p{L}\\p{N}]?" + _UPPER_THEN_LOWER + "*" + _LOWER + "+|[^\\r\\n\\p{L}\\p{N}]?"
           + _UPPER_THEN_LOWER + "+" + _LOWER + "*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",)
_CASED_CONTRACTION = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
_GPT4O = ("[^\\r\\n\\p{L}\\p{N}]?" + _UPPER_THEN_LOWER + "*" + _LOWER + "+" + _CASED_CONTRACTION
          + "|[^\\r\\n\\p{L}\\p{N}]?" + _UPPER_THEN_LOWER + "+" + _LOWER + "*" + _CASED_CONTRACTION
          + "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",)
_BLOOM = (" ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+",)
_SEED_CODER = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",)
# llama.cpp's LLAMA_VOCAB_PRE_TYPE_TINY_AYA: digits grouped in threes from the right, then GPT-4o's
# split with \p{Lu}.. classes (which collapse to any letter, as in llama.cpp)
_TINY_AYA = (_DIGIT_TRIPLES,
             "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
             + _CASED_CONTRACTION + "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
             "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" + _CASED_CONTRACTION
             + "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
# llama.cpp's LLAMA_VOCAB_PRE_TYPE_SUPERBPE: number runs, cut into threes from the right by an
# empty lookahead match
_SUPERBPE = ("\\p{N}+", "(?=(\\d{3})+(?!\\d))")
_BAILING = ("'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
            "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",)

_ROWS: list[tuple[tuple[str, ...], PreTokenizer]] = [
    (("default",), PreTokenizer(_DEFAULT_REGEXES)),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
     PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)),
    (("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
    (("deepseek-llm",), PreTokenizer(_DEEPSEEK_LLM, clean_spaces=False)),
    (("deepseek-coder",), PreTokenizer(_DEEPSEEK_CODER, clean_spaces=False)),
    (("deepseek-v3", "hunyuan-dense", "joyai-llm"), PreTokenizer(_DEEPSEEK_V3, clean_spaces=False)),
    (("falcon",), PreTokenizer(_FALCON)),
    (("starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"), PreTokenizer(_DIGIT_THEN_GPT2)),
    (("smollm", "command-r"), PreTokenizer(_DIGIT_THEN_GPT2, clean_spaces=False)),
    (("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
      "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4", "jina-v1-en", "jina-v2-code",
      "roberta-bpe"), PreTokenizer((_GPT2,))),
    (("trillion", "granite-docling"), PreTokenizer((_GPT2,), clean_spaces=False)),
    (("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2"),
     PreTokenizer((_QWEN2,), clean_spaces=False)),
    (("stablelm2", "megrez"), PreTokenizer((_QWEN2,))),
    (("qwen35",), PreTokenizer((_QWEN35,), clean_spaces=False)),
    (("chatglm-bpe",), PreTokenizer((_LLAMA3,))),
    (("glm4", "glm5"), PreTokenizer((_LLAMA3,), ignore_merges=True)),
    (("tekken",), PreTokenizer(_TEKKEN, clean_spaces=False, ignore_merges=True, add_bos=True)),
    (("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), PreTokenizer(_GPT4O, clean_spaces=False)),
    (("bloom", "gpt3-finnish"), PreTokenizer(_BLOOM)),
    (("poro-chat",), PreTokenizer(_BLOOM, clean_spaces=False)),
    (("viking",), PreTokenizer(_BLOOM + ("\\p{N}",), clean_spaces=False)),
    (("seed-coder",), PreTokenizer(_SEED_CODER, clean_spaces=False)),
    (("tiny_aya", "cohere2moe"), PreTokenizer(_TINY_AYA, clean_spaces=False)),
    (("superbpe",), PreTokenizer(_SUPERBPE, clean_spaces=False)),
    (("bailingmoe", "bailingmoe2", "llada-moe"), PreTokenizer(_BAILING, clean_spaces=False)),
    (("gemma4",), PreTokenizer((_NEWLINES,), byte_encode=False, escape_whitespaces=True)),
]

PRE_TOKENIZERS: Registry[PreTokenizer] = Registry(f"{TokenizerKey.PRE} value")
for _names, _pre in _ROWS:
    for _name in _names:
        PRE_TOKENIZERS.add(_name, _pre)


def get_pre_tokenizer(name: str) -> PreTokenizer:
    """The pre-tokenizer of a `tokenizer.ggml.pre` value ('' means llama.cpp's default)."""
    return PRE_TOKENIZERS[name or "default"]
