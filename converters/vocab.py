"""Tokenizer export: BPE from `tokenizer.json`, SentencePiece from `tokenizer.model`, special tokens.

Reproduces what llama.cpp's converter writes without transformers or sentencepiece:
- BPE (`tokenizer.ggml.model = gpt2`): the vocabulary with its added tokens, token types as
  llama.cpp assigns them, merges, and `tokenizer.ggml.pre` chosen by hashing the token ids of
  llama.cpp's probe text (`_pre_hashes.py`), falling back to recognising the pre-tokenizer
  regex in `tokenizer.json` for tokenizers llama.cpp has no hash for.
- SentencePiece (`llama`): pieces, scores and types parsed from the protobuf by hand.
- Special tokens (`SpecialVocab` in gguf-py): ids from tokenizer_config.json and config.json,
  add_bos/add_eos from the post-processor and tokenizer_config, the chat template.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import gguf

from llmtk.errors import InputError, UnsupportedError
from llmtk.ggufio.constants import TokenizerKey

from ._pre_hashes import PRE_BY_HASH, PROBE_TEXT
from .kv import KVStore

logger = logging.getLogger(__name__)
K = gguf.Keys.Tokenizer

# gguf TokenType / sentencepiece piece types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPIECE_UNDERLINE = "\u2581"

# Pre-tokenizer regexes as tokenizer.json spells them -> the llama.cpp pre-type applying the same
# split (llama-vocab.cpp). Used only when the probe hash is unknown to llama.cpp.
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
PRE_BY_REGEX: dict[tuple[str, ...], str] = {
    (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",):
        "llama-bpe",
    (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",):
        "qwen2",
    (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",):
        "qwen35",
    (_GPT2_RE,): "gpt-2",
    (r"\p{N}", _GPT2_RE): "smollm",  # llama.cpp splits starcoder/refact/command-r/smollm alike
}


def _pretokenizer_regexes(pre: dict | None) -> tuple[str, ...] | None:
    """The split regexes a `tokenizer.json` pre_tokenizer applies, in order, as llama.cpp would
    need them; None when it holds a step this recogniser does not know."""
    if not pre:
        return None
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    out: list[str] = []
    for s in steps:
        t = s.get("type")
        if t == "ByteLevel":
            if s.get("use_regex", True):
                out.append(_GPT2_RE)
        elif t == "Digits":
            if not s.get("individual_digits", False):
                return None
            out.append(r"\p{N}")
        elif t == "Split":
            pattern = s.get("pattern", {})
            if "Regex" not in pattern or s.get("behavior") not in ("Isolated", None) or s.get("invert"):
                return None
            out.append(pattern["Regex"])
        else:
            return None
    return tuple(out)


def _hf_tokenizer(tokenizer_json: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json))


def detect_pre(tokenizer_json: Path, hf_dir: Path, tok=None) -> str:
    """`tokenizer.ggml.pre`: llama.cpp's hash of the probe text's ids, else the regex fallback."""
    tok = tok or _hf_tokenizer(tokenizer_json)
    ids = tok.encode(PROBE_TEXT, add_special_tokens=True).ids
    chkhsh = hashlib.sha256(str(ids).encode()).hexdigest()
    if chkhsh in PRE_BY_HASH:
        return PRE_BY_HASH[chkhsh]
    tj = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    regexes = _pretokenizer_regexes(tj.get("pre_tokenizer"))
    if regexes is not None and regexes in PRE_BY_REGEX:
        name = PRE_BY_REGEX[regexes]
        logger.warning("%s: pre-tokenizer hash %s is unknown to llama.cpp; its regex matches %r", hf_dir,
                       chkhsh, name)
        return name
    raise UnsupportedError(f"{tokenizer_json}: BPE pre-tokenizer not recognised (probe hash {chkhsh}, "
                           f"regexes {list(regexes) if regexes else 'unparsed'}); llmtk knows "
                           f"{len(set(PRE_BY_HASH.values()))} llama.cpp pre-tokenizers by hash and "
                           f"{', '.join(sorted(set(PRE_BY_REGEX.values())))} by regex")


def does_token_look_special(token: str) -> bool:
    """llama.cpp's list of added tokens that are control tokens even when not marked special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read JSON ({e})") from None


@dataclass
class AddedToken:
    id: int
    content: str
    special: bool
    normalized: bool


_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _added_tokens(hf_dir: Path, tj: dict) -> dict[str, AddedToken]:
    """Added tokens by content as transformers sees them: tokenizer.json's list, with the flags of
    tokenizer_config.json's `added_tokens_decoder` taking precedence, then the special tokens that
    tokenizer_config.json names (bos..mask, then `additional_special_tokens`) and neither lists:
    transformers' `PreTrainedTokenizerFast.__init__` adds them, at their base-vocabulary id when
    they have one, else at the next free id (GLM-4's `[gMASK]`, `<|user|>`)."""
    out: dict[str, AddedToken] = {}
    for a in tj.get("added_tokens", []):
        special = bool(a.get("special", False))
        out[a["content"]] = AddedToken(int(a["id"]), a["content"], special, bool(a.get("normalized", not special)))
    cfg_path = hf_dir / "tokenizer_config.json"
    cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
    for sid, a in (cfg.get("added_tokens_decoder") or {}).items():
        special = bool(a.get("special", False))
        out[a["content"]] = AddedToken(int(sid), a["content"], special, bool(a.get("normalized", not special)))
    base: dict[str, int] = (tj.get("model") or {}).get("vocab") or {}
    extra = [cfg.get(k) for k in _SPECIAL_ATTRS] + list(cfg.get("additional_special_tokens") or [])
    next_id = max([*base.values(), *(a.id for a in out.values())], default=-1) + 1
    for entry in extra:
        content = entry.get("content") if isinstance(entry, dict) else entry
        if not isinstance(content, str) or content in out:
            continue
        if content in base:
            out[content] = AddedToken(base[content], content, True, False)
        else:
            out[content] = AddedToken(next_id, content, True, False)
            next_id += 1
    return out


def added_vocab(hf_dir: Path) -> dict[str, int]:
    """transformers' `get_added_vocab()` of a `tokenizer.json` folder: added token -> id."""
    tj_path = hf_dir / "tokenizer.json"
    tj = _read_json(tj_path) if tj_path.is_file() else {}
    return {a.content: a.id for a in _added_tokens(hf_dir, tj).values()}


def bpe_vocab(hf_dir: Path, vocab_size: int | None) -> tuple[list[str], list[int], str]:
    """Tokens, token types and pre-tokenizer name of a `tokenizer.json` BPE vocabulary
    (llama.cpp's `get_vocab_base`)."""
    tj_path = hf_dir / "tokenizer.json"
    if not tj_path.is_file():
        raise InputError(f"{hf_dir}: no tokenizer.json (BPE) or tokenizer.model (SentencePiece) found")
    tj = _read_json(tj_path)
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise UnsupportedError(f"{tj_path}: tokenizer model {model.get('type')!r} is not BPE; llmtk converts "
                               "BPE tokenizer.json and SentencePiece tokenizer.model")
    added = _added_tokens(hf_dir, tj)
    vocab: dict[str, int] = dict(model.get("vocab", {}))
    for a in added.values():
        vocab[a.content] = a.id
    if vocab_size is None:
        vocab_size = len(vocab)
    if vocab and max(vocab.values()) >= vocab_size:
        raise InputError(f"{tj_path}: token id {max(vocab.values())} is not below vocab_size {vocab_size} of "
                         "config.json")
    hf_tok = _hf_tokenizer(tj_path)
    pre = detect_pre(tj_path, hf_dir, hf_tok)
    reverse = {i: t for t, i in vocab.items()}
    by_id = {a.id: a for a in added.values()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = reverse[i]
        if token in added:
            a = by_id.get(i, added[token])
            if not a.normalized:
                # llama.cpp expects control/user-defined tokens pre-normalized: encode + decode them
                token = hf_tok.decode(hf_tok.encode(token, add_special_tokens=False).ids,
                                      skip_special_tokens=False)
            if a.special or does_token_look_special(token):
                types.append(CONTROL)
            else:
                token = token.replace(SPIECE_UNDERLINE, " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(token)
    return tokens, types, pre


# --- SentencePiece ------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterable[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        fno, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield fno, wt, v


@dataclass
class SentencePiece:
    piece: str
    score: float = 0.0
    type: int = NORMAL  # sentencepiece ModelProto.SentencePiece.Type: 1 normal .. 6 byte


def read_sentencepiece(path: Path) -> list[SentencePiece]:
    """The pieces of a sentencepiece `tokenizer.model` (ModelProto field 1, repeated SentencePiece
    {1: piece, 2: score (float), 3: type}), parsed without the sentencepiece package."""
    try:
        buf = path.read_bytes()
        pieces: list[SentencePiece] = []
        for fno, wt, v in _fields(buf):
            if fno != 1 or wt != 2:
                continue
            sp = SentencePiece("")
            for f2, w2, v2 in _fields(v):
                if f2 == 1 and w2 == 2:
                    sp.piece = v2.decode("utf-8")
                elif f2 == 2 and w2 == 5:
                    sp.score = struct.unpack("<f", v2)[0]
                elif f2 == 3 and w2 == 0:
                    sp.type = v2
            pieces.append(sp)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a valid sentencepiece model ({e})") from None
    if not pieces:
        raise InputError(f"{path}: sentencepiece model holds no pieces")
    return pieces


def sentencepiece_vocab(hf_dir: Path, vocab_size: int | None, *, phi3: bool = False
                        ) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores, types of `tokenizer.model` plus added tokens (llama.cpp's
    `_create_vocab_sentencepiece`; `phi3=True` follows Phi-3's variant of it)."""
    pieces = read_sentencepiece(hf_dir / "tokenizer.model")
    n = vocab_size or len(pieces)
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i, sp in enumerate(pieces):
        if i >= n:
            logger.warning("ignoring sentencepiece tokens from id %d: vocab_size is %d", i, n)
            break
        # sentencepiece's IsUnknown/IsControl/IsUnused/IsByte; user-defined pieces stay NORMAL
        t = {UNKNOWN: UNKNOWN, CONTROL: CONTROL, UNUSED: UNUSED, BYTE: BYTE}.get(sp.type, NORMAL)
        tokens[i], scores[i], types[i] = sp.piece.encode("utf-8"), sp.score, t
    added_file = hf_dir / "added_tokens.json"
    if added_file.is_file():
        for key, tid in _read_json(added_file).items():
            if tid >= n:
                continue
            tokens[tid], scores[tid], types[tid] = key.encode("utf-8"), -1000.0, USER_DEFINED
    cfg_file = hf_dir / "tokenizer_config.json"
    decoder = (_read_json(cfg_file).get("added_tokens_decoder") or {}) if cfg_file.is_file() else {}
    for sid, data in decoder.items():
        tid, token = int(sid), data["content"]
        if tid >= n:
            continue
        if phi3:
            types[tid] = CONTROL if data.get("special") else USER_DEFINED
        elif data.get("special") or does_token_look_special(token):
            types[tid] = CONTROL
        else:
            token = token.replace(SPIECE_UNDERLINE, " ")
            types[tid] = USER_DEFINED
        scores[tid], tokens[tid] = -1000.0, token.encode("utf-8")
    if phi3 and (hf_dir / "tokenizer.json").is_file():
        for data in _read_json(hf_dir / "tokenizer.json").get("added_tokens", []):
            tid = int(data["id"])
            tokens[tid], scores[tid] = data["content"].encode("utf-8"), -1000.0
            types[tid] = CONTROL if data.get("special") else USER_DEFINED
    return tokens, scores, types


# --- special tokens (gguf-py SpecialVocab) ------------------------------------------------------

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_ID_KEYS = {"bos": K.BOS_ID, "eos": K.EOS_ID, "unk": K.UNK_ID, "sep": K.SEP_ID, "pad": K.PAD_ID,
            "cls": TokenizerKey.CLS_ID, "mask": K.MASK_ID,
            "eot": K.EOT_ID, "eom": K.EOM_ID, "prefix": K.PREFIX_ID, "suffix": K.SUFFIX_ID,
            "middle": K.MIDDLE_ID}
_ADD_KEYS = {"bos": K.ADD_BOS, "eos": K.ADD_EOS, "sep": K.ADD_SEP}


@dataclass
class SpecialVocab:
    """Merges, special token ids, add-special flags and chat template of an HF tokenizer folder."""

    hf_dir: Path
    load_merges: bool = False
    n_vocab: int | None = None
    types: tuple[str, ...] = SPECIAL_TYPES
    merges: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    add: dict[str, bool] = field(default_factory=dict)
    chat_template: Any = None
    lowercase: bool | None = None
    strip_accents: bool | None = None

    def __post_init__(self) -> None:
        self._from_tokenizer_json()
        self._from_config_json()
        if self.load_merges and not self.merges:
            self._from_merges_txt()

    def set_id(self, typ: str, tid: Any) -> None:
        if not isinstance(tid, int) or isinstance(tid, bool):
            return
        if tid < 0:
            raise InputError(f"{self.hf_dir}: special token {typ} has invalid id {tid}")
        if self.n_vocab is not None and tid >= self.n_vocab:
            logger.warning("special token %s id %d is not below n_vocab %d, skipped", typ, tid, self.n_vocab)
            return
        self.ids.setdefault(typ, tid)

    def _from_merges_txt(self) -> None:
        path = self.hf_dir / "merges.txt"
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0].startswith("#"):
            lines = lines[1:]
        self.merges = [" ".join(parts) for line in lines if len(parts := line.strip().split()) == 2]

    def _normalizer(self, norm: dict) -> None:
        t = norm.get("type")
        if t == "Lowercase":
            self.lowercase = True
        elif t == "StripAccents":
            self.strip_accents = True
        elif t == "BertNormalizer":
            self.lowercase = norm.get("lowercase", self.lowercase)
            self.strip_accents = norm.get("strip_accents", self.strip_accents)
        elif t == "Sequence":
            for n in norm.get("normalizers", []):
                self._normalizer(n)

    def _from_tokenizer_json(self) -> None:
        tj_path, cfg_path = self.hf_dir / "tokenizer.json", self.hf_dir / "tokenizer_config.json"
        tj = _read_json(tj_path) if tj_path.is_file() else None
        cfg = _read_json(cfg_path) if cfg_path.is_file() else None
        added = (tj or {}).get("added_tokens", [])
        if tj:
            merges = tj.get("model", {}).get("merges")
            if self.load_merges and isinstance(merges, list) and merges:
                if isinstance(merges[0], str):
                    self.merges = list(merges)
                elif isinstance(merges[0], list) and len(merges[0]) == 2:
                    # pair form (transformers >= 4.45): spaces inside a part become U+0120 as in GPT-2
                    self.merges = [f"{a} {b}" if " " not in a and " " not in b
                                   else f"{a.replace(' ', chr(0x120))} {b.replace(' ', chr(0x120))}"
                                   for a, b in merges]
                else:
                    raise UnsupportedError(f"{tj_path}: unknown merges format")
            if norm := tj.get("normalizer"):
                self._normalizer(norm)
            self._post_processor(tj, cfg)
        if not cfg:
            return
        alt = None
        if (p := self.hf_dir / "chat_template.jinja").is_file():
            alt = p.read_text(encoding="utf-8")
            extra = sorted((self.hf_dir / "additional_chat_templates").glob("*.jinja"))
            if extra:
                alt = [{"name": "default", "template": alt}] + [
                    {"name": e.stem, "template": e.read_text(encoding="utf-8")} for e in extra]
        elif (p := self.hf_dir / "chat_template.json").is_file():
            alt = _read_json(p).get("chat_template")
        tmpl = cfg.get("chat_template", alt)
        if tmpl is None or isinstance(tmpl, (str, list)):
            self.chat_template = tmpl
        for typ in self.types:
            flag = cfg.get(f"add_{typ}_token")
            if isinstance(flag, bool) and typ not in self.add:
                self.add[typ] = flag
            entry = cfg.get(f"{typ}_token")
            content = entry.get("content") if isinstance(entry, dict) else entry
            if not isinstance(content, str):
                continue
            self.set_id(typ, next((a.get("id") for a in added if a.get("content") == content), None))

    def _post_processor(self, tj: dict, cfg: dict | None) -> None:
        """add_bos/add_eos/add_sep from the post-processor, reading simple templates the way
        gguf-py does (including how it fills in tokenizer_config's bos/cls/sep/eot entries)."""
        c = cfg or {}
        bos, cls_, eos, sep = c.get("bos_token"), c.get("cls_token"), c.get("eos_token"), c.get("sep_token")
        if not bos and cls_ and cfg:
            cfg["bos_token"] = bos = cls_
        if not eos and sep and cfg:
            cfg["eos_token"] = eos = sep
        pp = tj.get("post_processor")
        if not pp:
            return
        for proc in pp.get("processors", [pp]):
            kind = proc.get("type")
            if kind == "ByteLevel":
                self.add.setdefault("bos", False)
                self.add.setdefault("eos", False)
            elif kind == "RobertaProcessing":
                self.add.update(bos=True, eos=True, sep=True)
                if not cls_ and cfg:
                    cfg["cls_token"] = cls_ = proc.get("cls", [bos])[0]
                if not sep and cfg:
                    cfg["sep_token"] = sep = proc.get("sep", [eos])[0]
            elif kind == "TemplateProcessing":
                bos, cls_, eos, sep = self._template(proc, cfg, bos, cls_, eos, sep)

    def _template(self, proc: dict, cfg: dict | None, bos, cls_, eos, sep):
        def special(item: dict):
            return item.get("SpecialToken", {}).get("id")

        single, pair = proc.get("single", []), proc.get("pair", [])
        first = last = None
        if len(single) > 1:
            if first := special(single[0]):
                if not cfg:
                    bos = first
                elif first not in (bos, cls_):
                    if not bos:
                        cfg["bos_token"] = bos = first
                    if not cls_:
                        cfg["cls_token"] = cls_ = first
                self.add["bos"] = first in (bos, cls_)
            if last := special(single[-1]):
                if not cfg:
                    eos = last
                elif last != eos:
                    # the template ends with another token: the old eos becomes eot (or eom)
                    for extra in ("eot", "eom"):
                        if extra not in self.types:
                            self.types = (*self.types, extra)
                            cfg[f"{extra}_token"] = eos
                            break
                    cfg["eos_token"] = eos = last
                self.add["eos"] = last == eos
        if pair:
            start = 1 if first and special(pair[0]) == first else 0
            stop = -1 if last and special(pair[-1]) == last else None
            middle = pair[start:stop]
            if middle and middle[0].get("Sequence", {}).get("id") == "A" \
                    and middle[-1].get("Sequence", {}).get("id") == "B" and (middle := middle[1:-1]):
                add_sep = False
                if (entry := special(middle[0])) and entry in (sep, eos) and not last:
                    add_sep = True
                if len(middle) == 2 and (entry := special(middle[1])) and entry in (sep, eos):
                    add_sep = True
                self.add["sep"] = add_sep
                if add_sep and not sep and cfg:
                    cfg["sep_token"] = eos
        return bos, cls_, eos, sep

    def _from_config_json(self) -> None:
        path = self.hf_dir / "config.json"
        if not path.is_file():
            return
        config = _read_json(path)
        for typ in self.types:
            tid = config.get(f"{typ}_token_id")
            if tid is None and isinstance(config.get("text_config"), dict):
                tid = config["text_config"].get(f"{typ}_token_id")
            self.set_id(typ, tid)

    def write(self, kv: KVStore) -> None:
        """Add to `kv` in gguf-py's order: merges, ids, add flags, template, normalizer."""
        if self.merges:
            kv.strs(K.MERGES, self.merges)
        elif self.load_merges:
            logger.warning("%s: merges requested but none found", self.hf_dir)
        for typ, tid in self.ids.items():
            kv.u32(_ID_KEYS[typ], tid)
        for typ, flag in self.add.items():
            if typ in _ADD_KEYS:
                kv.bool(_ADD_KEYS[typ], flag)
        if self.chat_template is not None:
            write_chat_template(kv, self.chat_template)
        if self.lowercase is not None:
            kv.bool(TokenizerKey.NORMALIZER_LOWERCASE, self.lowercase)
        if self.strip_accents is not None:
            kv.bool(TokenizerKey.NORMALIZER_STRIP_ACCENTS, self.strip_accents)


def write_chat_template(kv: KVStore, value: str | list[dict[str, str]]) -> None:
    """One template as `tokenizer.chat_template`; named ones as gguf-py writes them
    (`default` in the main key, the others as `tokenizer.chat_template.<name>` plus a name list)."""
    if isinstance(value, str):
        kv.str(K.CHAT_TEMPLATE, value)
        return
    names: list[str] = []
    default = None
    for t in value:
        name = re.sub(r"[^a-zA-Z0-9_]", "_", t["name"])
        if name == "default":
            default = t["template"]
        else:
            names.append(name)
            kv.str(K.CHAT_TEMPLATE_N.format(name=name), t["template"])
    if names:
        kv.strs(K.CHAT_TEMPLATES, names)
    if default is not None:
        kv.str(K.CHAT_TEMPLATE, default)


def write_gpt2_vocab(kv: KVStore, hf_dir: Path, vocab_size: int | None,
                     extra_ids: Iterable[tuple[str, int]] = ()) -> None:
    """llama.cpp's `_set_vocab_gpt2`: model gpt2, pre, tokens, types, then special tokens + merges;
    `extra_ids` are (type, id) an architecture sets where the tokenizer files did not (GLM-4)."""
    tokens, types, pre = bpe_vocab(hf_dir, vocab_size)
    kv.str(K.MODEL, "gpt2")
    kv.str(K.PRE, pre)
    kv.strs(K.LIST, tokens)
    kv.i32s(K.TOKEN_TYPE, types)
    special = SpecialVocab(hf_dir, load_merges=True)
    for typ, tid in extra_ids:
        special.set_id(typ, tid)
    special.write(kv)


def write_sentencepiece_vocab(kv: KVStore, hf_dir: Path, vocab_size: int | None, *, phi3: bool = False) -> None:
    """llama.cpp's `_set_vocab_sentencepiece`: model llama, pre default, tokens, scores, types."""
    tokens, scores, types = sentencepiece_vocab(hf_dir, vocab_size, phi3=phi3)
    kv.str(K.MODEL, "llama")
    kv.str(K.PRE, "default")
    kv.strs(K.LIST, [t.decode("utf-8") for t in tokens])
    kv.f32s(K.SCORES, scores)
    kv.i32s(K.TOKEN_TYPE, types)
    SpecialVocab(hf_dir, n_vocab=len(tokens)).write(kv)


# --- Llama-2 style BPE tokenizer.json without tokenizer.model (gguf-py LlamaHfVocab) ----------

def is_llama_hf_bpe(hf_dir: Path) -> bool:
    """A byte-fallback BPE `tokenizer.json` with a Sequence decoder (a SentencePiece model saved
    by transformers), which llama.cpp exports as a `llama` vocabulary; Llama-3 style is not."""
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        return False
    tj = _read_json(path)
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        return False
    if model.get("ignore_merges", False) and not model.get("byte_fallback", True):
        return False
    return bool(model.get("byte_fallback", False)) and (tj.get("decoder") or {}).get("type") == "Sequence"


def write_llama_hf_vocab(kv: KVStore, hf_dir: Path) -> None:
    """Tokens of the base vocabulary then added tokens above it, scores -1000, byte/control types."""
    tj = _read_json(hf_dir / "tokenizer.json")
    base: dict[str, int] = tj["model"]["vocab"]
    n_base = len(base)
    added = sorted(_added_tokens(hf_dir, tj).values(), key=lambda a: a.id)
    added_above = [a for a in added if a.id >= n_base]
    cfg_path = hf_dir / "tokenizer_config.json"
    cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
    vocab = {**base, **{a.content: a.id for a in added}}
    special_texts = []
    for typ in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        e = cfg.get(f"{typ}_token")
        special_texts.append(e.get("content") if isinstance(e, dict) else e)
    for e in cfg.get("additional_special_tokens") or []:
        special_texts.append(e.get("content") if isinstance(e, dict) else e)
    special_ids = {vocab[t] for t in special_texts if isinstance(t, str) and t in vocab}
    reverse = {i: t for t, i in vocab.items()}
    above_ids = {a.id for a in added_above}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_base):
        if i in above_ids:
            continue
        text = reverse[i]
        tokens.append(text)
        types.append(BYTE if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text)
                     else CONTROL if i in special_ids else NORMAL)
    for a in added_above:
        tokens.append(a.content)
        if a.content in special_texts:
            types.append(CONTROL if a.id in special_ids else NORMAL)
        else:
            types.append(USER_DEFINED)
    kv.str(K.MODEL, "llama")
    kv.str(K.PRE, "default")
    kv.strs(K.LIST, tokens)
    kv.f32s(K.SCORES, [-1000.0] * len(tokens))
    kv.i32s(K.TOKEN_TYPE, types)
    SpecialVocab(hf_dir, n_vocab=len(tokens)).write(kv)
