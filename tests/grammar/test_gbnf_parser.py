"""GBNF syntax: every construct llama.cpp accepts, and errors that name line and column."""
from __future__ import annotations

import pytest

from llmtk.errors import InputError
from llmtk.grammar import GrammarError, Token, match_text, parse


def accepts(src: str, text: str) -> bool:
    return match_text(parse(src), text).accepted


@pytest.mark.parametrize("src, good, bad", [
    ('root ::= "a" | "b"', ["a", "b"], ["", "ab", "c"]),
    ('root ::= "ab"*', ["", "ab", "abab"], ["a", "aba"]),           # repetition of a whole literal
    ('root ::= [a-c]+ "x"?', ["a", "cbx"], ["", "x", "ad"]),
    ('root ::= [^a-c\\n]', ["d", "é"], ["a", "\n", ""]),
    ('root ::= "x"{3}', ["xxx"], ["xx", "xxxx"]),
    ('root ::= "x"{2,}', ["xx", "xxxxx"], ["x"]),
    ('root ::= "x"{1,3}', ["x", "xxx"], ["", "xxxx"]),
    ('root ::= "x"{0,2} "y"', ["y", "xxy"], ["xxxy"]),
    ('root ::= ( "a" | "b" "c" )* "."', [".", "abc."], ["b."]),
    ('root ::= .', ["q", "漢"], ["", "qq"]),
    ('root ::= "\\x41\\u00e9\\U0001F600\\t\\n\\r\\\\\\""', ["Aé😀\t\n\r\\\""], ["A"]),
    ('root ::= [\\[\\]\\-]+', ["[-]"], ["a"]),
    ('root ::= [ぁ-ゟ]+', ["ひらがな"], ["カ"]),
    ('# comment\nroot ::= a # trailing\n\na ::= "z" |\n  "y"\n', ["z", "y"], ["x"]),
    ('root ::= (\n  "a"\n  "b"\n)', ["ab"], ["a"]),
    ('root ::= under_score\nunder_score ::= "u"', ["u"], []),
])
def test_constructs(src, good, bad):
    for t in good:
        assert accepts(src, t), (src, t)
    for t in bad:
        assert not accepts(src, t), (src, t)


def test_token_references():
    g = parse('root ::= <[12]> !<[7]> "a"')
    assert g.rules[g.root][0][:2] == (Token(12), Token(7, negated=True))
    g = parse("root ::= <think>", tokenize=lambda s: [99] if s == "<think>" else [1, 2])
    assert g.rules[g.root][0] == (Token(99),)
    with pytest.raises(GrammarError, match="needs a vocabulary"):
        parse("root ::= <think>")
    with pytest.raises(GrammarError, match="2 tokens"):
        parse("root ::= <two>", tokenize=lambda s: [1, 2])


@pytest.mark.parametrize("src, line, col, what", [
    ('root ::= "a" foo', 1, 14, "undefined rule 'foo'"),
    ('root ::= a\na ::= ( "x" | "y"\n', 2, 7, "unbalanced '('"),
    ('root ::= "x")', 1, 13, "unbalanced ')'"),
    ('root ::= [a-z', 1, 10, "unclosed character class"),
    ('root ::= "abc', 1, 10, "unclosed string"),
    ('root ::= "x"{2', 1, 15, "expected ',' or '}'"),
    ('root ::= "\\q"', 1, 11, "bad escape"),
    ('root ::= "\\x4"', 1, 11, "bad escape"),
    ('root ::= "ok"\nexpr ::= expr "+" "1" | "1"', 2, 1, "left recursion in rule 'expr'"),
    ('root ::= x\nx ::= "y"? root', 1, 1, "left recursion"),
    ('root ::= *', 1, 10, "preceding item"),
    ('root = "a"', 1, 6, "'::='"),
    ('start ::= "a"', 1, 14, "no 'root' rule"),
    ('root ::= "a"\nroot ::= "b"', 2, 1, "defined twice"),
])
def test_errors_name_line_and_column(src, line, col, what):
    with pytest.raises(GrammarError) as info:
        parse(src, name="g.gbnf")
    assert isinstance(info.value, InputError)
    assert what in str(info.value)
    assert (info.value.line, info.value.col) == (line, col), str(info.value)
    assert str(info.value).startswith(f"g.gbnf:{line}:{col}: ")
