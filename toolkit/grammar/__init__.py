"""GBNF grammars (llama.cpp's language): parser, matcher, token masks, JSON Schema to GBNF.

    from llmtk.grammar import parse, match_text, TokenMasker, shipped, json_schema_to_gbnf
    g = parse(shipped("json").read_text())
    match_text(g, '{"a": 1}').accepted        # True

The grammars shipped with llmtk live in the top-level `grammars/` folder (package data
`llmtk.grammars`); `shipped(name)` finds one, `shipped_names()` lists them.
"""
from __future__ import annotations

from pathlib import Path

from llmtk.errors import InputError
from llmtk.grammar.matcher import Automaton, Matcher, MatchResult, TokenMasker, TokenTrie, match_text
from llmtk.grammar.parser import Chars, Grammar, GrammarError, Ref, Token, parse

__all__ = ["Automaton", "Chars", "Grammar", "GrammarError", "MatchResult", "Matcher", "Ref", "Token",
           "TokenMasker", "TokenTrie", "json_schema_to_gbnf", "match_text", "parse", "shipped",
           "shipped_dir", "shipped_names"]


def json_schema_to_gbnf(schema, **kw) -> str:
    from llmtk.grammar.json_schema import json_schema_to_gbnf as convert

    return convert(schema, **kw)


def shipped_dir() -> Path:
    """The folder of llmtk's own grammars: package data `llmtk.grammars` when installed, else the
    `grammars/` folder beside `toolkit/` in a source checkout."""
    import importlib.util

    spec = importlib.util.find_spec("llmtk.grammars")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / "grammars"


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.gbnf"))


def shipped(name: str) -> Path:
    """Path of the shipped grammar `name` (`json`, `arithmetic`, ...)."""
    path = shipped_dir() / f"{name}.gbnf"
    if not path.is_file():
        raise InputError(f"no shipped grammar '{name}' (known: {', '.join(shipped_names())})")
    return path
