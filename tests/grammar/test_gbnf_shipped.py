"""Every grammar in grammars/ parses and accepts / rejects its small corpus."""
from __future__ import annotations

import pytest

from llmtk.grammar import match_text, parse, shipped, shipped_names

CORPUS = {
    "json": (['{"a": [1, -2.5e3, "x\\n\\u00e9"], "b": {"c": null}}', "[]", " true ", '"é"', "0"],
             ['{"a" 1}', "[1,]", "01", '{"a": tru}', "'single'", ""]),
    "json_arr": (['["a", 1, {"b": false}]', "[]", "[ [ ] ]"], ['{"a": 1}', "[1 2]", '["a"']),
    "list": (["- eggs\n- milk\n", "- one item\n"], ["eggs\n", "- \n", "- no newline", ""]),
    "arithmetic": (["1+2", "(12.5 + 3) * -4 / (7 - 2.25)", "-(1)", "42"],
                   ["1 +", "()", "1 ++ 2", "(1", "a+b", ""]),
    "c": (["int main() { return 0; }", "void f(int x, char* s) { x = x + 1; if (x > 2) { f(x, s); } else { return; } }",
           "float g() { for (i = 0; i < 10; i = i + 1) { h(i); } return 1.5; }"],
          ["int main() { return 0 }", "main() {}", "int f( { }"]),
    "chess": (["1. e4 e5\n2. Nf3 Nc6\n3. Bb5 a6\n", "1. d4 d5\n2. c4 dxc4\n3. O-O Qxd1+\n"],
              ["1. e9 e5\n", "e4 e5\n", "1. e4\n", "1. Zf3 e5\n"]),
    "english": (["The cat sat on the mat.", "Hello, world! Is it raining? Yes."],
                ["the cat.", "Hello world", "Numbers 42.", "Hi  there."]),
    "japanese": (["こんにちは、世界。", "猫が好きです！\n本当？"], ["hello。", "こんにちは", "。"]),
}


def test_every_shipped_grammar_has_a_corpus():
    assert set(shipped_names()) == set(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_shipped_grammar_accepts_and_rejects(name):
    grammar = parse(shipped(name).read_text(encoding="utf-8"), name=f"{name}.gbnf")
    good, bad = CORPUS[name]
    for text in good:
        assert match_text(grammar, text).accepted, (name, text)
    for text in bad:
        assert not match_text(grammar, text).accepted, (name, text)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_shipped_grammar_opens_with_a_comment(name):
    assert shipped(name).read_text(encoding="utf-8").startswith("# ")
