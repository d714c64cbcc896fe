"""Codepoint classes and the GPT-2 byte alphabet, as llama.cpp's `unicode.cpp` sees them.

llama.cpp classifies codepoints with a table generated from Unicode 15.1's UnicodeData.txt: one
general-category class per codepoint (letter, number, mark, punctuation, symbol, separator, control,
undefined) plus a fixed White_Space list. Python's `unicodedata` gives the same classes for every
codepoint it knows; `_ASSIGNED_AFTER_PY311` adds the ones Unicode 15.0/15.1 assigned that Python
3.11 (Unicode 14.0) still reports as unassigned (`Cn`).
"""
from __future__ import annotations

import unicodedata

# Class bits, the same values as llama.cpp's `unicode_cpt_flags`. 0 means "outside the text".
UNDEFINED = 0x0001
NUMBER = 0x0002
LETTER = 0x0004
SEPARATOR = 0x0008
MARK = 0x0010
PUNCTUATION = 0x0020
SYMBOL = 0x0040
CONTROL = 0x0080
CATEGORY_MASK = 0x00FF
WHITESPACE = 0x0100

_CATEGORY_FLAG = {"C": CONTROL, "L": LETTER, "M": MARK, "N": NUMBER, "P": PUNCTUATION,
                  "S": SYMBOL, "Z": SEPARATOR}

# White_Space from PropList.txt (llama.cpp's `\s`).
WHITESPACE_CPTS = frozenset([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                             0x2028, 0x2029, 0x202F, 0x205F, 0x3000])

# (first, last, class) for codepoints assigned by Unicode 15.0 and 15.1.
_ASSIGNED_AFTER_PY311 = [
    (0x00CF3, 0x00CF3, "M"), (0x00ECE, 0x00ECE, "M"), (0x02FFC, 0x02FFF, "S"),
    (0x031EF, 0x031EF, "S"), (0x10EFD, 0x10EFF, "M"), (0x1123F, 0x11240, "L"),
    (0x11241, 0x11241, "M"), (0x11B00, 0x11B09, "P"), (0x11F00, 0x11F01, "M"),
    (0x11F02, 0x11F02, "L"), (0x11F03, 0x11F03, "M"), (0x11F04, 0x11F10, "L"),
    (0x11F12, 0x11F33, "L"), (0x11F34, 0x11F3A, "M"), (0x11F3E, 0x11F42, "M"),
    (0x11F43, 0x11F4F, "P"), (0x11F50, 0x11F59, "N"), (0x1342F, 0x1342F, "L"),
    (0x13439, 0x1343F, "C"), (0x13440, 0x13440, "M"), (0x13441, 0x13446, "L"),
    (0x13447, 0x13455, "M"), (0x1B132, 0x1B132, "L"), (0x1B155, 0x1B155, "L"),
    (0x1D2C0, 0x1D2D3, "N"), (0x1DF25, 0x1DF2A, "L"), (0x1E030, 0x1E06D, "L"),
    (0x1E08F, 0x1E08F, "M"), (0x1E4D0, 0x1E4EB, "L"), (0x1E4EC, 0x1E4EF, "M"),
    (0x1E4F0, 0x1E4F9, "N"), (0x1F6DC, 0x1F6DC, "S"), (0x1F774, 0x1F776, "S"),
    (0x1F77B, 0x1F77F, "S"), (0x1F7D9, 0x1F7D9, "S"), (0x1FA75, 0x1FA77, "S"),
    (0x1FA87, 0x1FA88, "S"), (0x1FAAD, 0x1FAAF, "S"), (0x1FABB, 0x1FABD, "S"),
    (0x1FABF, 0x1FABF, "S"), (0x1FACE, 0x1FACF, "S"), (0x1FADA, 0x1FADB, "S"),
    (0x1FAE8, 0x1FAE8, "S"), (0x1FAF7, 0x1FAF8, "S"), (0x2B739, 0x2B739, "L"),
    (0x2EBF0, 0x2EE5D, "L"), (0x31350, 0x323AF, "L"),
]


def _compute_flags(ch: str) -> int:
    cpt = ord(ch)
    cat = unicodedata.category(ch)
    if cat == "Cn":
        flags = UNDEFINED
        for first, last, cls in _ASSIGNED_AFTER_PY311:
            if first <= cpt <= last:
                flags = _CATEGORY_FLAG[cls]
                break
    else:
        flags = _CATEGORY_FLAG[cat[0]]
    if cpt in WHITESPACE_CPTS:
        flags |= WHITESPACE
    return flags


class _FlagCache(dict):
    """char -> class bits, filled on first sight (texts use few distinct codepoints)."""

    def __missing__(self, ch: str) -> int:
        flags = self[ch] = _compute_flags(ch)
        return flags


FLAGS: dict[str, int] = _FlagCache()


def simple_lower(ch: str) -> str:
    """One-codepoint lowercase (UnicodeData's simple mapping), as llama.cpp's `unicode_tolower`."""
    low = ch.lower()
    return low if len(low) == 1 else ch


def _gpt2_byte_alphabet() -> list[str]:
    # Printable Latin-1 bytes stand for themselves; the other 68 get codepoints from 256 up, in order.
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = [""] * 256
    for b in keep:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR: list[str] = _gpt2_byte_alphabet()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_CHAR)}
_BYTE_TRANSLATE = {b: c for b, c in enumerate(BYTE_TO_CHAR)}


def byte_encode(word: str) -> str:
    """A word's UTF-8 bytes spelled in the GPT-2 byte alphabet (what byte-level BPE vocabularies hold)."""
    return word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_BYTE_TRANSLATE)
