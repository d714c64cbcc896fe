"""WordPiece (`tokenizer.ggml.model = bert`), as llama.cpp's `llm_tokenizer_wpm`.

Words are split on whitespace, punctuation, ASCII symbols and CJK ideographs (each of those is a
word of its own), optionally lowercased and stripped of accents, then matched greedily longest
first with a ▁ marking the word start; a word with an unmatchable rest becomes [UNK].
"""
from __future__ import annotations

import unicodedata

from .unicode import CONTROL, FLAGS, MARK, PUNCTUATION, SYMBOL, WHITESPACE, simple_lower

_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cpt: int) -> bool:
    return any(a <= cpt <= b for a, b in _CJK_RANGES)


def wpm_words(text: str, *, lowercase: bool, strip_accents: bool) -> list[str]:
    words = [""]
    for ch in text:
        if strip_accents:
            ch = unicodedata.normalize("NFD", ch)[0]
        f = FLAGS[ch]
        if f & WHITESPACE:
            if words[-1]:
                words.append("")
            continue
        if ch in ("\x00", "\ufffd") or f & CONTROL:
            continue
        if strip_accents and f & MARK:
            continue
        s = simple_lower(ch) if lowercase else ch
        if f & PUNCTUATION or (ch < "\x7f" and f & SYMBOL) or _is_cjk(ord(ch)):
            if words[-1]:
                words.append("")
            words[-1] = s
            words.append("")
        else:
            words[-1] += s
    if not words[-1]:
        words.pop()
    return words


def wpm_encode(text: str, token_to_id: dict[str, int], max_token_len: int, unk_id: int,
               out: list[int], *, lowercase: bool, strip_accents: bool) -> None:
    for word in wpm_words(text, lowercase=lowercase, strip_accents=strip_accents):
        w = "\u2581" + word
        n = len(w)
        mark = len(out)
        i = 0
        while i < n:
            for j in range(min(n, i + max_token_len + 1), i, -1):
                tid = token_to_id.get(w[i:j])
                if tid is not None:
                    out.append(tid)
                    i = j
                    break
            else:
                del out[mark:]
                break
        if len(out) == mark:
            out.append(unk_id)
