"""Text generation, like llama.cpp's llama-cli/llama-simple, optionally constrained by a grammar.

    from llmtk.generate import generate
    for tok in generate("model.gguf", "Hello my name is", n_predict=32, temp=0):
        print(tok.text, end="", flush=True)

`llmtk.generate` (this package) is also callable as `generate`. Modules: `sampling` (llama.cpp's
sampler chain and its seeded draw), `chat` (the GGUF's chat template in jinja2's sandbox).

A grammar (GBNF text, a parsed `Grammar`, or a JSON Schema) is applied as llama.cpp's
`common_sampler_sample` does: the chain samples from the raw logits; if that token breaks the
grammar, the grammar's mask (`TokenMasker.mask`, disallowed logits -inf) is applied and the chain
samples again. `grammar_first=True` masks before the first draw instead (a different
distribution when sampling; the same tokens when greedy).
"""
from __future__ import annotations

import codecs
import logging
import sys
import time
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from llmtk.errors import InputError
from llmtk.generate.sampling import Sampler, SamplerParams

__all__ = ["GenToken", "Sampler", "SamplerParams", "generate", "grammar_masker", "model_tokenizer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenToken:
    """One generated token: its id, its bytes, and the text it completes (UTF-8 split across
    tokens is held back until whole; invalid bytes become U+FFFD)."""

    id: int
    piece: bytes
    text: str


# (tokenizer) -> {grammar text: TokenMasker}: the trie of a vocabulary and a grammar's state table
# are built once and reused across calls (several seeds, several prompts)
_MASKERS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_TRIES: weakref.WeakKeyDictionary[Any, tuple[list[bytes], Any]] = weakref.WeakKeyDictionary()
_TOKENIZERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def model_tokenizer(model: Any) -> Any:
    """The tokenizer of a loaded model's GGUF metadata, built once per model."""
    tok = _TOKENIZERS.get(model)
    if tok is None:
        from llmtk.tokenizer import Tokenizer

        tok = _TOKENIZERS[model] = Tokenizer.from_metadata(model.reader.kv)
    return tok


def grammar_masker(grammar_text: str, tokenizer: Any, cache_size: int = 8):
    """A `TokenMasker` of GBNF `grammar_text` over `tokenizer`'s vocabulary (kept per tokenizer)."""
    from llmtk.grammar import TokenMasker, TokenTrie, parse

    per_tok = _MASKERS.setdefault(tokenizer, {})
    hit = per_tok.get(grammar_text)
    if hit is not None:
        return hit
    if tokenizer not in _TRIES:
        pieces = [tokenizer.token_to_piece(i) for i in range(tokenizer.n_vocab)]
        _TRIES[tokenizer] = (pieces, TokenTrie(pieces))
    pieces, trie = _TRIES[tokenizer]

    def tokenize(text: str) -> list[int]:
        return tokenizer.encode(text, add_special=False, parse_special=True)

    g = parse(grammar_text, tokenize=tokenize)
    masker = TokenMasker(g, pieces, tokenizer.eog_ids, trie=trie)
    if len(per_tok) >= cache_size:
        per_tok.pop(next(iter(per_tok)))
    per_tok[grammar_text] = masker
    return masker


def _grammar_text(grammar: Any, json_schema: Any) -> str | None:
    if grammar is not None and json_schema is not None:
        raise InputError("give a grammar or a JSON Schema, not both")
    if json_schema is not None:
        import json

        from llmtk.grammar import json_schema_to_gbnf

        if isinstance(json_schema, (str, bytes)):
            try:
                json_schema = json.loads(json_schema)
            except ValueError as e:
                raise InputError(f"JSON Schema is not valid JSON: {e}") from None
        return json_schema_to_gbnf(json_schema)
    if grammar is None:
        return None
    if not isinstance(grammar, str):
        raise InputError(f"grammar must be GBNF text, got {type(grammar).__name__}")
    return grammar


def _allowed_one(matcher: Any, tid: int, piece: bytes, is_eog: bool) -> bool:
    """Whether one token keeps the grammar alive (TokenMasker's rule for a single id, without
    computing the whole mask): end-of-generation only where the grammar can end."""
    from llmtk.grammar import Matcher

    if is_eog and matcher.can_end:
        return True
    probe = Matcher(matcher.automaton)
    probe.state = matcher.state
    return probe.accept_token(tid, b"" if is_eog else piece)


def generate(model: Any = None, prompt: str = "", *, n_predict: int = 128, grammar: str | None = None,
             json_schema: Any = None, temp: float = 0.8, top_k: int = 40, top_p: float = 0.95,
             min_p: float = 0.05, typical_p: float = 1.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
             frequency_penalty: float = 0.0, presence_penalty: float = 0.0, seed: int = -1, chat: bool = False,
             system: str | None = None, tokenizer: Any = None, add_special: bool = True,
             grammar_first: bool = False, ignore_eos: bool = False, n_ctx: int | None = None,
             stats: dict | None = None) -> Iterator[GenToken]:
    """Yield up to `n_predict` tokens continuing `prompt`, stopping at an end-of-generation token.

    `model`: a loaded `llmtk.model.Model`, a GGUF path, or None for the embedded SmolLM2 (Q4_1).
    The prompt is tokenized as llama.cpp does (BOS where the vocabulary asks, special tokens
    parsed); `chat=True` first renders it as one user turn with the model's chat template.
    Sampling parameters and defaults are llama.cpp's (`temp <= 0`: greedy; `seed=-1`: random);
    `grammar` (GBNF text) or `json_schema` (dict or JSON text) constrain the output.
    `n_predict < 0` runs until end of generation or the context is full (`n_ctx`, default the
    model's training context). A dict given as `stats` is filled with counts and seconds
    (`n_prompt`, `n_gen`, `t_prompt`, `t_gen`, `t_sample`, `t_mask`, `n_mask`, `stop`).
    """
    from llmtk.model import Model, load_model

    params = SamplerParams(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                           repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                           frequency_penalty=frequency_penalty, presence_penalty=presence_penalty, seed=seed)
    params.check()
    gtext = _grammar_text(grammar, json_schema)
    owns = not isinstance(model, Model)
    if owns:
        if model is None:
            from llmtk.resources import smollm2_path

            model = smollm2_path()
        model = load_model(Path(model))
    try:
        yield from _generate(model, prompt, n_predict, params, gtext, chat, system,
                             tokenizer if tokenizer is not None else model_tokenizer(model),
                             add_special, grammar_first, ignore_eos, n_ctx, stats if stats is not None else {})
    finally:
        if owns:
            model.close()


def _generate(model: Any, prompt: str, n_predict: int, params: SamplerParams, gtext: str | None, chat: bool,
              system: str | None, tok: Any, add_special: bool, grammar_first: bool, ignore_eos: bool,
              n_ctx: int | None, stats: dict) -> Iterator[GenToken]:
    masker = matcher = None
    if gtext is not None:
        masker = grammar_masker(gtext, tok)
        matcher = masker.matcher()
    if chat:
        from llmtk.generate.chat import chat_prompt

        prompt = chat_prompt(model.reader.kv, tok, prompt, system)
    ids = tok.encode(prompt, add_special=add_special, parse_special=True)
    if not ids:
        raise InputError("the prompt is empty: there is nothing to continue")
    cap = n_ctx or model.hp.n_ctx_train or 0
    if n_predict < 0 and not cap:
        raise InputError("n_predict < 0 needs a context size: give n_ctx")
    limit = len(ids) + n_predict if n_predict >= 0 else cap
    if cap:
        if len(ids) >= cap:
            raise InputError(f"the prompt has {len(ids)} tokens: the context n_ctx={cap} leaves no room to generate")
        limit = min(limit, cap)
    eog = tok.eog_ids
    sampler = Sampler(params)
    for t in ids:
        sampler.accept(t)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    stats.update(n_prompt=len(ids), n_gen=0, t_prompt=0.0, t_gen=0.0, t_sample=0.0, t_mask=0.0, n_mask=0,
                 seed=sampler.rng.seed, stop="length", prompt_text=prompt)
    cache = model.new_cache(limit)
    t0 = time.perf_counter()
    logits = model.forward(np.asarray(ids, dtype=np.int32), cache, all_logits=False)[-1]
    stats["t_prompt"] = time.perf_counter() - t0
    n = 0
    while n_predict < 0 or n < n_predict:
        t0 = time.perf_counter()
        if ignore_eos:
            logits = logits.copy()
            logits[list(eog)] = -np.inf
        tid = None
        if masker is None or not grammar_first:
            tid = sampler.sample(logits)
        if masker is not None and (tid is None or not _allowed_one(matcher, tid, tok.token_to_piece(tid), tid in eog)):
            tm = time.perf_counter()
            allowed = masker.mask(matcher)
            stats["t_mask"] += time.perf_counter() - tm
            stats["n_mask"] += 1
            tid = sampler.sample(logits, allowed)
        stats["t_sample"] += time.perf_counter() - t0
        if tid is None:
            stats["stop"] = "grammar" if masker is not None else "no candidate"
            log.warning("generation stopped: no token is allowed")
            break
        if tid in eog:
            stats["stop"] = "eog"
            break
        piece = tok.token_to_piece(tid)
        if matcher is not None and not matcher.accept_token(tid, piece):
            raise AssertionError(f"token {tid} was sampled outside the grammar")  # a masker bug
        sampler.accept(tid)
        n += 1
        stats["n_gen"] = n
        yield GenToken(tid, piece, decoder.decode(piece))
        if (n_predict >= 0 and n >= n_predict) or cache.n_past >= cache.n_ctx:
            if cache.n_past >= cache.n_ctx and n_predict < 0:
                stats["stop"] = "context"
            break
        t0 = time.perf_counter()
        logits = model.forward(np.asarray([tid], dtype=np.int32), cache, all_logits=False)[-1]
        stats["t_gen"] += time.perf_counter() - t0
    tail = decoder.decode(b"", final=True)
    if tail:
        stats["tail"] = tail


class _CallableModule(types.ModuleType):
    """`llmtk.generate(...)`: the package doubles as the call."""

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[GenToken]:
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
