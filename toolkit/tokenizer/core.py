"""The `Tokenizer`: a GGUF vocabulary that encodes and decodes like llama.cpp's `llama_vocab`.

Built from the `tokenizer.ggml.*` metadata alone. Encoding follows `llama_vocab::tokenize`:
special tokens (control, user-defined, unknown) are cut out of the raw text first, longest first
(`tokenizer_st_partition`), then each remaining text fragment goes through the vocabulary's model:
byte-level BPE with the pre-tokenizer of `tokenizer.ggml.pre` (`gpt2`), SentencePiece-style merging
by score (`llama`) or WordPiece (`bert`). BOS/EOS/SEP follow the vocabulary's add_* flags.
"""
from __future__ import annotations

import bisect
import enum
import operator
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from llmtk.ggufio.constants import Key
from llmtk.ggufio.constants import TokenizerKey as K
from llmtk.errors import InputError, UnsupportedError
from llmtk.ggufio.reader import escape_control
from llmtk.registry import Registry
from .bpe import BPEModel
from .pretokenize import PreTokenizer, get_pre_tokenizer, regex_split
from .spm import SPMModel
from .unicode import CHAR_TO_BYTE, byte_encode
from .wpm import wpm_encode


class TokenAttr(enum.IntFlag):
    """llama.cpp's `llama_token_attr` bits."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


# GGUF token_type values (llama.cpp's `llama_token_type`) -> attributes.
TOKEN_TYPE_ATTR = {
    0: TokenAttr.UNDEFINED, 1: TokenAttr.NORMAL, 2: TokenAttr.UNKNOWN, 3: TokenAttr.CONTROL,
    4: TokenAttr.USER_DEFINED, 5: TokenAttr.UNUSED, 6: TokenAttr.BYTE,
}

# Plain-int copies of the bits used in loops over the whole vocabulary (IntFlag arithmetic is slow).
_UNKNOWN, _UNUSED, _NORMAL, _CONTROL, _USER_DEFINED, _BYTE, _LSTRIP, _RSTRIP = (
    int(a) for a in (TokenAttr.UNKNOWN, TokenAttr.UNUSED, TokenAttr.NORMAL, TokenAttr.CONTROL,
                     TokenAttr.USER_DEFINED, TokenAttr.BYTE, TokenAttr.LSTRIP, TokenAttr.RSTRIP))
_SPECIAL = _CONTROL | _USER_DEFINED | _UNKNOWN
_C_SPACES = " \t\n\v\f\r"   # C isspace(): what LSTRIP/RSTRIP remove around a special token
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


@dataclass(frozen=True)
class _ModelDefaults:
    """Per `tokenizer.ggml.model`: llama.cpp's default special ids and flags before the metadata."""

    kind: str                       # "bpe" | "spm" | "wpm"
    bos: int | None
    eos: int | None
    unk: int | None
    sep: int | None = None
    pad: int | None = None
    mask: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_sep: bool = False
    add_space_prefix: bool = False
    clean_spaces: bool = True


TOKENIZER_MODELS: Registry[_ModelDefaults] = Registry(f"{K.MODEL} value")
TOKENIZER_MODELS.add("gpt2", _ModelDefaults("bpe", bos=11, eos=11, unk=None))
TOKENIZER_MODELS.add("gemma4", _ModelDefaults("bpe", bos=None, eos=None, unk=None))  # always pre-tokenizer "gemma4"
TOKENIZER_MODELS.add("llama", _ModelDefaults("spm", bos=1, eos=2, unk=0, add_bos=True, add_space_prefix=True,
                                             clean_spaces=False))
TOKENIZER_MODELS.add("bert", _ModelDefaults("wpm", bos=101, eos=None, unk=100, sep=102, pad=0, mask=103,
                                            add_bos=True, add_sep=True))

# Token texts llama.cpp always treats as end-of-generation, forcing them to CONTROL.
_EOG_TEXTS = frozenset([
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
])
# End-of-turn spellings: the first one present is the EOT token when the metadata names none.
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
# Fill-in-the-middle spellings: the first one found becomes CONTROL when the metadata names no id.
_FIM_TEXTS = {
    K.FIM_PRE_ID: ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                   "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    K.FIM_SUF_ID: ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                   "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    K.FIM_MID_ID: ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                   "▁<MID>", "<|code_middle|>", "<|middle|>"),
    K.FIM_PAD_ID: ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    K.FIM_REP_ID: ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    K.FIM_SEP_ID: ("<|file_sep|>",),
}
_FIM_ALIASES = {K.FIM_PRE_ID: K.PREFIX_ID, K.FIM_SUF_ID: K.SUFFIX_ID, K.FIM_MID_ID: K.MIDDLE_ID}
# gpt-oss: always rendered, never control.
_FORCED_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


_STRTOL_HEX = re.compile(r"\s*([+-]?)(?:0[xX](?=[0-9A-Fa-f]))?([0-9A-Fa-f]*)")


def _byte_of_token(text: str) -> int:
    """The byte a BYTE token stands for, as llama.cpp's `token_to_byte` reads it: `strtol` of
    the two characters after `<0x`, base 16, so `<0x0A>` is 10 and a malformed text gives what
    strtol makes of it (no digits: 0), truncated to a byte."""
    m = _STRTOL_HEX.match(text[3:5])
    digits = m.group(2) if m else ""
    value = int(digits, 16) if digits else 0
    return (-value if m and m.group(1) == "-" else value) & 0xFF


def _typed(kv: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    """kv[key] when it has the GGUF type llama.cpp reads it as (a string, a bool), else one line
    naming the key: llama.cpp refuses a key of the wrong type too (`gguf_get_val_*` asserts)."""
    value = kv.get(key)
    if value is None:
        return default
    if kind is bool and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if kind is not bool and isinstance(value, kind):
        return value
    raise InputError(f"GGUF metadata {key} is {escape_control(repr(value))[:40]}, expected a "
                     f"{'boolean' if kind is bool else 'string'}")


class Tokenizer:
    """A GGUF vocabulary that tokenizes exactly like llama.cpp (`llama-tokenize`).

    `tokens[i]` is token i's text as stored in the GGUF, `attrs[i]` its `TokenAttr` bits (an int),
    `token_to_piece(i)` the bytes it stands for; `eog_ids` the ids that end generation.
    """

    def __init__(self, kv: Mapping[str, Any]) -> None:
        model = _typed(kv, K.MODEL, str, None)
        defaults = TOKENIZER_MODELS[str(model)]
        self.model = model
        self.kind = defaults.kind
        tokens = kv.get(K.TOKENS)
        if not isinstance(tokens, list) or not tokens:
            raise InputError(f"{K.TOKENS} is missing or empty: the file has no vocabulary")
        if not all(isinstance(t, str) for t in tokens):
            raise InputError(f"{K.TOKENS} must be an array of strings")
        n = len(tokens)
        self.tokens: list[str] = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}  # last wins
        self.scores: list[float] = self._per_token(kv, K.SCORES, n, 0.0, float)
        types = np.array(self._per_token(kv, K.TOKEN_TYPE, n, 1, int), dtype=np.int64)
        type_attr = np.zeros(max(TOKEN_TYPE_ATTR) + 1, dtype=np.int64)
        for t, a in TOKEN_TYPE_ATTR.items():
            type_attr[t] = a
        known = (types >= 0) & (types < type_attr.size)
        # llama.cpp's token_type_to_attr: a type it does not know is UNDEFINED (no attribute)
        self.attrs: list[int] = np.where(known, type_attr[np.where(known, types, 0)], 0).tolist()

        self.pre_name: str = "gemma4" if model == "gemma4" else (_typed(kv, K.PRE, str, "") or "")
        self.pre: PreTokenizer | None = get_pre_tokenizer(self.pre_name) if self.kind == "bpe" else None
        self.add_bos = defaults.add_bos if self.pre is None or self.pre.add_bos is None else self.pre.add_bos
        self.add_eos = defaults.add_eos
        self.add_sep = defaults.add_sep
        self.add_space_prefix = _typed(kv, K.ADD_PREFIX, bool, defaults.add_space_prefix)
        self.clean_spaces = defaults.clean_spaces if self.pre is None else self.pre.clean_spaces
        self.escape_whitespaces = self.kind == "spm" or bool(self.pre and self.pre.escape_whitespaces)
        self.lowercase = _typed(kv, K.NORMALIZER_LOWERCASE, bool, False)
        self.strip_accents = _typed(kv, K.NORMALIZER_STRIP_ACCENTS, bool, self.lowercase)

        ids = {"bos": defaults.bos, "eos": defaults.eos, "unk": defaults.unk, "sep": defaults.sep,
               "pad": defaults.pad, "mask": defaults.mask}
        keys = {"bos": K.BOS_ID, "eos": K.EOS_ID, "unk": K.UNK_ID, "sep": K.SEP_ID, "pad": K.PAD_ID,
                "mask": K.MASK_ID, "eot": K.EOT_ID, "eom": K.EOM_ID}
        ids.update(eot=None, eom=None)
        for name, key in keys.items():
            if ids[name] is not None and ids[name] >= n:
                ids[name] = None
            value = kv.get(key)
            if isinstance(value, int) and 0 <= value < n:
                ids[name] = value
        if self.pre_name in ("chatglm-bpe", "glm4", "glm5") and kv.get(K.BOS_ID) is None:
            ids["bos"] = None
        self.bos_id: int | None = ids["bos"]
        self.eos_id: int | None = ids["eos"]
        self.unk_id: int | None = ids["unk"]
        self.sep_id: int | None = ids["sep"]
        self.pad_id: int | None = ids["pad"]
        self.eot_id: int | None = ids["eot"]
        for key, attr in ((K.ADD_BOS, "add_bos"), (K.ADD_EOS, "add_eos"), (K.ADD_SEP, "add_sep")):
            setattr(self, attr, _typed(kv, key, bool, getattr(self, attr)))
        if self.pre_name == "gemma4":
            self.add_bos = True

        self._fix_special_attrs(kv)
        self._set_strip_attrs(kv)
        # Special tokens are cut out longest (in UTF-8 bytes) first; ties keep id order (llama.cpp's
        # std::sort leaves their order unspecified).
        special = [i for i, a in enumerate(self.attrs) if a & _SPECIAL]
        self._special: list[tuple[str, int, int]] = [
            (self.tokens[i], i, self.attrs[i])
            for i in sorted(special, key=lambda i: -len(self.tokens[i].encode("utf-8", "surrogatepass")))]
        # first two characters -> positions in `_special`, to skip tokens the text cannot hold
        self._special_by_prefix: dict[str, list[int]] = {}
        for k, (tok, _, _) in enumerate(self._special):
            self._special_by_prefix.setdefault(tok[:2], []).append(k)

        if self.kind == "bpe":
            merges = kv.get(K.MERGES)
            if not isinstance(merges, list):
                raise InputError(f"{K.MERGES} is missing: a BPE vocabulary needs its merges")
            if not all(isinstance(m, str) for m in merges):
                raise InputError(f"{K.MERGES} must be an array of strings")
            self._bpe = BPEModel(self.token_to_id, merges, ignore_merges=self.pre.ignore_merges,
                                 byte_fallback_hex=not self.pre.byte_encode,
                                 newline_runs_whole=self.pre_name == "gemma4")
        elif self.kind == "spm":
            self._spm = SPMModel(self.token_to_id, self.scores)
        self._max_token_len = max(len(t) for t in self.tokens)
        self._pieces: list[bytes | None] = [None] * n

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_metadata(cls, kv: Mapping[str, Any]) -> "Tokenizer":
        """From GGUF metadata as `GGUFReader.kv` holds it (arrays as lists or NumPy arrays)."""
        return cls(kv)

    @classmethod
    def from_gguf(cls, source: "str | os.PathLike | Any") -> "Tokenizer":
        """From a GGUF file path (any shard of a split model) or an open reader."""
        if hasattr(source, "kv"):
            return cls(source.kv)
        from llmtk.ggufio.shards import open_gguf

        with open_gguf(source) as reader:
            return cls(reader.kv)

    @staticmethod
    def _per_token(kv: Mapping[str, Any], key: str, n: int, default: Any, conv: type) -> list:
        values = kv.get(key)
        if values is None:
            return [default] * n
        if not isinstance(values, (list, tuple, np.ndarray)) or np.ndim(values) != 1:
            raise InputError(f"{key} must be an array with one entry per token")
        if len(values) < n:
            raise InputError(f"{key} has {len(values)} entries for {n} tokens")
        try:
            return np.asarray(values[:n], dtype=np.float64 if conv is float else np.int64).tolist()
        except (TypeError, ValueError):
            raise InputError(f"{key} must hold numbers") from None

    def _fix_special_attrs(self, kv: Mapping[str, Any]) -> None:
        """llama.cpp's load-time fix-ups that turn known end-of-turn/FIM texts into CONTROL tokens."""
        t2i = self.token_to_id
        control = []
        fim_eog = []    # llama.cpp ends generation at the FIM pad, repo and file-separator tokens
        for key, texts in _FIM_TEXTS.items():
            given = [kv[k] for k in (key, _FIM_ALIASES.get(key)) if isinstance(kv.get(k), int)]
            if given:
                fim = given[0] if 0 <= given[0] < len(self.tokens) else None
            else:
                found = [t2i[t] for t in texts if t in t2i]
                fim = min(found) if found else None
                if fim is not None:
                    control.append(fim)
            if fim is not None and key in (K.FIM_PAD_ID, K.FIM_REP_ID, K.FIM_SEP_ID):
                fim_eog.append(fim)
        control += [t2i[t] for t in _EOG_TEXTS if t in t2i]
        eog = [t2i[t] for t in _EOG_TEXTS if t in t2i]
        for tid in control:
            self.attrs[tid] |= _CONTROL
        if self.eot_id is None:
            self.eot_id = next((t2i[t] for t in _EOT_TEXTS if t in t2i), None)
        eog += fim_eog + [t for t in (self.eos_id, self.eot_id) if t is not None]
        for i, a in enumerate(self.attrs):
            if a & _CONTROL and "unused" in self.tokens[i]:
                self.attrs[i] = a | _UNUSED
        for t in _FORCED_USER_DEFINED:
            if t in t2i:
                self.attrs[t2i[t]] = _USER_DEFINED
        present = {t for t in ("<|return|>", "<|call|>", "<|calls|>", "<|flush|>", "<|end|>",
                               "<|tool_response>", "<|plamo:eos|>", "</s>") if t in t2i}
        has_call = "<|call|>" in present or "<|calls|>" in present
        if "<|end|>" in present and has_call and ("<|return|>" in present or "<|flush|>" in present):
            self.attrs[t2i["<|end|>"]] = _USER_DEFINED
            eog = [t for t in eog if t != t2i["<|end|>"]]
        if "</s>" in present and ("<|tool_response>" in present or "<|plamo:eos|>" in present):
            self.attrs[t2i["</s>"]] = _NORMAL
            eog = [t for t in eog if t != t2i["</s>"]]
        self.eog_ids: frozenset[int] = frozenset(eog)

    def _set_strip_attrs(self, kv: Mapping[str, Any]) -> None:
        """Per-model LSTRIP/RSTRIP around special tokens (phi-3, jina-v2, modern-bert)."""
        name = str(_typed(kv, Key.NAME, str, "")).lower()
        arch = str(_typed(kv, Key.ARCHITECTURE, str, ""))
        t2i = self.token_to_id
        if (any(p in self.pre_name for p in ("jina-v2-de", "jina-v2-es", "jina-v2-code"))
                or any(a in arch for a in ("nomic-bert-moe", "jina-bert-v3"))):
            if "<mask>" in t2i:
                self.attrs[t2i["<mask>"]] |= _LSTRIP
        elif "phi-3" in name or "phi3" in name:
            for i, a in enumerate(self.attrs):
                if a & _SPECIAL:
                    self.attrs[i] = a | _RSTRIP
            if "</s>" in t2i:
                self.attrs[t2i["</s>"]] |= _RSTRIP
            for t in ("<unk>", "<s>", "<|endoftext|>"):
                if t in t2i:
                    self.attrs[t2i[t]] &= ~_RSTRIP
        elif "modern-bert" in name and "[MASK]" in t2i:
            self.attrs[t2i["[MASK]"]] |= _LSTRIP

    # -- properties ---------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return (f"Tokenizer(model={self.model!r}, pre={self.pre_name!r}, n_vocab={self.n_vocab}, "
                f"bos_id={self.bos_id}, eos_id={self.eos_id}, add_bos={self.add_bos})")

    # -- encoding -----------------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, as `llama_tokenize(vocab, text, add_special, parse_special)`.

        add_special adds BOS/EOS (and SEP for WordPiece) where the vocabulary asks for them;
        parse_special lets control tokens written in the text (`<|im_start|>`) become their ids
        (user-defined tokens are always cut out, as in llama.cpp).
        """
        if not isinstance(text, str):
            raise InputError(f"text to tokenize must be str, got {type(text).__name__}")
        out: list[int] = []
        fragments = self._partition(text, parse_special) if text else []
        if self.kind == "bpe":
            if add_special and self.add_bos:
                out.append(self._required(self.bos_id, "BOS"))
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                else:
                    self._encode_bpe(frag, out)
            if add_special and self.add_eos:
                out.append(self._required(self.eos_id, "EOS"))
        elif self.kind == "spm":
            if add_special and self.add_bos:
                out.append(self._required(self.bos_id, "BOS"))
            prev_special = True
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                    prev_special = True
                    continue
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                try:
                    self._spm.encode(frag.replace(" ", "\u2581"), out)
                except KeyError as e:
                    raise UnsupportedError(f"SentencePiece vocabulary lacks a byte token: {e.args[0]}") from None
                prev_special = False
            if add_special and self.add_eos:
                out.append(self._required(self.eos_id, "EOS"))
        else:
            if add_special:
                out.append(self._required(self.bos_id, "BOS"))
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                else:
                    wpm_encode(frag, self.token_to_id, self._max_token_len, self._required(self.unk_id, "UNK"),
                               out, lowercase=self.lowercase, strip_accents=self.strip_accents)
            if add_special:
                out.append(self._required(self.sep_id, "SEP"))
        return out

    def _required(self, tid: int | None, what: str) -> int:
        if tid is None:
            raise InputError(f"the vocabulary asks for a {what} token but defines none")
        return tid

    def _encode_bpe(self, text: str, out: list[int]) -> None:
        if self.pre.escape_whitespaces:
            text = text.replace(" ", "\u2581")
        if _ESCAPED_BYTE.search(text):
            # invalid UTF-8 read with surrogateescape: llama.cpp decodes each bad byte as U+FFFD
            text = _ESCAPED_BYTE.sub("\ufffd", text)
        encode_word = self._bpe.encode_word
        byte_level = self.pre.byte_encode
        for word in regex_split(text, list(self.pre.regexes)):
            out.extend(encode_word(byte_encode(word) if byte_level else word))

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut special tokens out of `text`: each one in turn, longest first, over every fragment
        still raw (llama.cpp's `tokenizer_st_partition`). Returns raw strings and token ids."""
        # fragments (lo, hi, id) in text order; id -1 is raw text[lo:hi]
        frags: list[tuple[int, int, int]] = [(0, len(text), -1)]
        grams = set(text) | set(map(operator.add, text, text[1:]))
        candidates = sorted(k for g in grams.intersection(self._special_by_prefix) for k in self._special_by_prefix[g])
        for k in candidates:
            tok, tid, attr = self._special[k]
            if not parse_special and attr & (_CONTROL | _UNKNOWN):
                continue
            hit = text.find(tok)
            if hit < 0:
                continue
            starts = [f[0] for f in frags]
            touched: list[int] = []      # raw fragments holding a whole occurrence
            while hit >= 0:
                i = bisect.bisect_right(starts, hit) - 1
                lo, hi, ftid = frags[i]
                if ftid < 0 and hit + len(tok) <= hi:
                    touched.append(i)
                hit = text.find(tok, max(hit + 1, hi))
            if not touched:
                continue
            new: list[tuple[int, int, int]] = []
            done = 0
            for i in touched:
                new += frags[done:i]
                new += _cut(text, frags[i], tok, tid, attr)
                done = i + 1
            new += frags[done:]
            frags = new
        return [text[lo:hi] if tid < 0 else tid for lo, hi, tid in frags]

    # -- decoding -----------------------------------------------------------------------------

    def token_to_piece(self, tid: int, special: bool = True) -> bytes:
        """The bytes token `tid` stands for (`llama_token_to_piece`); control and unknown tokens
        render as their text only with `special`."""
        if not 0 <= tid < len(self.tokens):
            raise InputError(f"token id {tid} is outside the vocabulary (0..{len(self.tokens) - 1})")
        if not special and self.attrs[tid] & (_CONTROL | _UNKNOWN):
            return b""
        piece = self._pieces[tid]
        if piece is None:
            piece = self._pieces[tid] = self._piece(tid)
        return piece

    def _piece(self, tid: int) -> bytes:
        text = self.tokens[tid]
        attr = self.attrs[tid]
        if attr & _SPECIAL:
            return text.encode("utf-8")
        if attr & _NORMAL:
            if self.kind == "bpe" and not self.escape_whitespaces:
                return _gpt2_decode(text)
            return text.replace("\u2581", " ").encode("utf-8")
        if attr & _BYTE:
            return bytes([_byte_of_token(text)])
        return b""

    def decode(self, ids: Iterable[int], *, special: bool = True, remove_special: bool = False) -> str:
        """Text of a token sequence (`llama_detokenize`); invalid UTF-8 becomes U+FFFD.

        special renders control tokens as their text; remove_special drops the BOS/EOS that
        `encode(add_special=True)` added.
        """
        ids = list(ids)
        strip_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.bos_id:
            strip_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        parts = []
        for k, tid in enumerate(ids):
            piece = self.token_to_piece(tid, special)
            if k == 0 and strip_space and piece.startswith(b" "):
                piece = piece[1:]
            parts.append(piece)
        data = b"".join(parts)
        if self.clean_spaces:
            data = _clean_spaces(data)
        return data.decode("utf-8", "replace")


def _cut(text: str, frag: tuple[int, int, int], tok: str, tid: int, attr: int) -> list[tuple[int, int, int]]:
    """One raw fragment with every occurrence of a special token cut out, left to right."""
    lo, hi, _ = frag
    out = []
    hit = text.find(tok, lo, hi)
    while hit >= 0:
        left_end = hit
        if attr & _LSTRIP:
            while left_end > lo and text[left_end - 1] in _C_SPACES:
                left_end -= 1
        if left_end > lo:
            out.append((lo, left_end, -1))
        lo = hit + len(tok)
        out.append((hit, lo, tid))
        if attr & _RSTRIP:
            while lo < hi and text[lo] in _C_SPACES:
                lo += 1
        hit = text.find(tok, lo, hi)
    if lo < hi:
        out.append((lo, hi, -1))
    return out


def _gpt2_decode(text: str) -> bytes:
    out = bytearray()
    for ch in text:
        b = CHAR_TO_BYTE.get(ch)
        if b is None:
            out += b"[UNK_BYTE_0x" + ch.encode("utf-8").hex().encode() + text.encode("utf-8") + b"]"
        else:
            out.append(b)
    return bytes(out)


def _clean_spaces(data: bytes) -> bytes:
    """llama.cpp's `clean_up_tokenization_spaces`: no space before ? ! . , ; " ' " loses both
    spaces; " 's", " 'm", " 're", " 've" lose the space."""
    out = bytearray()
    for i, x in enumerate(data):
        if i > 0 and out and out[-1] == 0x20 and x in b"?!.,":
            out.pop()
        out.append(x)
    buf = bytearray(out)       # pass 2 blanks the space it skips, as llama.cpp does in place
    out = bytearray(buf[:1])
    i = 1
    n = len(buf)
    while i < n:
        x = buf[i]
        if x == 0x27 and i + 1 < n and buf[i - 1] == 0x20 and buf[i + 1] == 0x20:
            out.pop()
            buf[i + 1] = 0
            out.append(x)
            i += 2
            continue
        out.append(x)
        i += 1
    data = bytes(out)
    out = bytearray()
    n = len(data)
    for i, x in enumerate(data):
        if i > 0 and data[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = data[i + 1]
            if x1 in b"sm" or (i + 2 < n and data[i + 1:i + 3] in (b"re", b"ve")):
                out.pop()
        out.append(x)
    return bytes(out)
