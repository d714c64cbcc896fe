"""JSON Schema to GBNF: grammars accept the schema's instances (hypothesis-jsonschema draws them)
and reject some that break it."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from llmtk.grammar import json_schema_to_gbnf, match_text, parse

hjs = pytest.importorskip("hypothesis_jsonschema", reason="hypothesis-jsonschema is not installed")

SCHEMAS = {
    "person": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["a", "b", 3]}, "minItems": 1, "maxItems": 3},
        "nick": {"type": ["string", "null"], "maxLength": 4},
        "kind": {"const": "human"}},
        "required": ["name", "age"], "additionalProperties": False},
    "bounds": {"type": "array", "items": {"type": "integer", "minimum": -1234, "exclusiveMaximum": 987},
               "maxItems": 4},
    "lower": {"type": "integer", "minimum": 37},
    "upper": {"type": "integer", "maximum": -12},
    "formats": {"type": "object", "properties": {
        "d": {"type": "string", "format": "date"}, "u": {"type": "string", "format": "uuid"},
        "p": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{1,3}(x|yz)?$"}},
        "required": ["d", "u", "p"], "additionalProperties": False},
    "refs": {"$defs": {"leaf": {"type": "object", "properties": {"v": {"type": "boolean"}},
                                "required": ["v"], "additionalProperties": False}},
             "type": "object", "properties": {"one": {"$ref": "#/$defs/leaf"},
                                              "any": {"anyOf": [{"$ref": "#/$defs/leaf"}, {"type": "number"}]}},
             "required": ["one"], "additionalProperties": False},
    "all_of": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}, "required": ["a"]},
                         {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}],
               "properties": {"a": {}, "b": {}}, "additionalProperties": False},
    "extra": {"type": "object", "properties": {"k": {"type": "null"}}, "additionalProperties": {"type": "integer"}},
}
INVALID = {
    "person": [{"name": "x"}, {"name": "", "age": 1}, {"name": "x", "age": 151}, {"name": "x", "age": 1, "z": 1},
               {"name": "x", "age": 1, "tags": []}, {"name": "x", "age": 1, "kind": "cat"}],
    "bounds": [[987], [-1235], [1, 2, 3, 4, 5]],
    "lower": [36, -40],
    "upper": [-11, 0, 5],
    "formats": [{"d": "2024-13-01", "u": "x", "p": "AB-1"}, {"d": "2024-01-01", "u": "0" * 36, "p": "AB-1"}],
    "refs": [{"one": {"v": 1}}, {"any": 1}],
    "all_of": [{"a": 1}, {"a": -1, "b": True}],
    # {"k": 1} is accepted: extra keys are not kept apart from the known ones (see docs/grammar.md)
    "extra": [{"x": "s"}, {"k": None, "x": 1.5}],
}
_GRAMMARS = {k: parse(json_schema_to_gbnf(s), name=k) for k, s in SCHEMAS.items()}


def _small_numbers(v) -> bool:
    """llama.cpp's number rules cap digits at 16; keep hypothesis's huge ints and floats out."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return True
    if isinstance(v, (int, float)):
        return len(str(abs(int(v)))) <= 15 and (isinstance(v, int) or len(repr(v)) <= 20)
    if isinstance(v, list):
        return all(map(_small_numbers, v))
    return all(map(_small_numbers, v.values()))


def _names(schema, out: list[str]) -> list[str]:
    if isinstance(schema, dict):
        out += [k for k in schema.get("properties", {}) if k not in out]
        for v in schema.values():
            _names(v, out)
    elif isinstance(schema, list):
        for v in schema:
            _names(v, out)
    return out


def _schema_order(v, names: list[str]):
    """llama.cpp's grammars take properties in schema order (then extra keys): reorder the draw."""
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (names.index(k) if k in names else len(names), k))
        return {k: _schema_order(v[k], names) for k in keys}
    if isinstance(v, list):
        return [_schema_order(x, names) for x in v]
    return v


def _formats_hold(v) -> bool:
    """hypothesis-jsonschema does not draw format "uuid" values: keep drawn ones that are."""
    import re

    return not isinstance(v, dict) or "u" not in v or bool(
        re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", v["u"]))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_generated_grammar_accepts_valid_instances(name, data):
    schema = SCHEMAS[name]
    if name == "formats":  # draw uuids hypothesis-jsonschema can make
        schema = {**schema, "properties": {**schema["properties"], "u": {
            "type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}}}
    instance = data.draw(hjs.from_schema(schema).filter(_small_numbers).filter(_formats_hold))
    instance = _schema_order(instance, _names(SCHEMAS[name], []))
    # raw (not \\u-escaped) text: llama.cpp counts minLength/maxLength per escape, not per character
    text = json.dumps(instance, ensure_ascii=False)
    assume("\x7f" not in text and not any(0xD800 <= ord(c) < 0xE000 for c in text))
    for text in (text, json.dumps(instance, ensure_ascii=False, separators=(",", ":"))):
        assert match_text(_GRAMMARS[name], text).accepted, (name, text)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_generated_grammar_rejects_invalid_instances(name):
    import jsonschema

    for bad in INVALID[name]:
        assert not jsonschema.Draft202012Validator(SCHEMAS[name]).is_valid(bad) or name in ("person", "all_of", "formats")
        assert not match_text(_GRAMMARS[name], json.dumps(bad)).accepted, (name, bad)


def test_output_is_parseable_and_names_rules_like_llama_cpp():
    text = json_schema_to_gbnf(SCHEMAS["person"])
    assert text.startswith("char ::=") and "\nroot ::= " in text and 'space ::= | " " | "\\n" [ \\t]{0,20}' in text
    assert 'root-name-kv ::= "\\"name\\"" space ":" space root-name' in text


# Regression: json_schema_to_gbnf raised RecursionError on schemas that need llama.cpp's `value`
# primitive (value -> object -> value): `primitive` visited a rule's deps before registering it.
_ANY_VALUES = [
    {"a": {"b": [1, {"c": None}], "d": "x"}, "e": [[], {}]},
    {},
    [],
    [1, -2.5, 3e10, 0, "s", True, False, None, {"k": [{"z": []}]}],
    "tab\tquote\"backslash\\slash/ unicode é \u263a",
    '"escaped"\n\\u00e9',
    -0.125,
    1.5e-7,
    42,
    True,
    None,
]
_NOT_JSON = ['{"a": 1,}', "[1 2]", "{a: 1}", "'single'", '"unterminated', "01", "1.", "+1", "tru", "nul",
             '{"a" 1}', "[", "", '"\\x41"', '"raw\ncontrol"', "NaN", '{"a": 1}}']


def _texts(v) -> list[str]:
    return [json.dumps(v), json.dumps(v, ensure_ascii=False), json.dumps(v, separators=(",", ":")),
            json.dumps(v, indent=2)]


@pytest.mark.parametrize("schema,kinds", [
    ({}, (dict, list, str, int, float, bool, type(None))),
    (True, (dict, list, str, int, float, bool, type(None))),
    ({"type": "array"}, (list,)),
    ({"items": {}}, (list,)),
    ({"type": "object"}, (dict,)),
    ({"type": "object", "additionalProperties": True}, (dict,)),
], ids=["empty", "true", "array", "items-empty", "object", "object-additional-true"])
def test_value_primitive_recursion_error(schema, kinds):
    text = json_schema_to_gbnf(schema)  # was RecursionError
    g = parse(text, name=repr(schema))
    rules = dict(line.split(" ::= ", 1) for line in text.splitlines())
    # llama.cpp's PRIMITIVE_RULES: value and its dependencies, one rule each
    assert rules["value"] == "object | array | string | number | boolean | null"
    assert rules["object"] == '"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space'
    assert rules["array"] == '"[" space ( value ("," space value)* )? "]" space'
    assert {"string", "char", "number", "integral-part", "decimal-part", "boolean", "null", "space"} <= set(rules)
    for v in _ANY_VALUES + [[v] for v in _ANY_VALUES] + [{"k": v} for v in _ANY_VALUES]:
        for t in _texts(v):
            assert match_text(g, t).accepted is isinstance(v, kinds), (schema, t)
    for bad in _NOT_JSON + [f"[{b}]" for b in _NOT_JSON if b] + [f'{{"k": {b}}}' for b in _NOT_JSON if b]:
        assert not match_text(g, bad).accepted, (schema, bad)


def test_value_primitive_recursion_error_rule_names_like_llama_cpp():
    """llama.cpp: `{"type": "object"}` -> `root ::= object`, a plain array -> the `array` primitive."""
    rules = lambda s: dict(line.split(" ::= ", 1) for line in json_schema_to_gbnf(s).splitlines())  # noqa: E731
    assert rules({"type": "object"})["root"] == "object"
    assert rules({"type": "array"})["root"] == "array"
    assert rules({})["root"] == rules(True)["root"] == "value"
    nested = rules({"type": "object", "properties": {"a": {"type": "array"}, "b": {"type": "object"}, "c": {}},
                    "required": ["a", "b", "c"]})
    assert nested["root-a-kv"].endswith(" array") and nested["root-b"] == "object"
    assert nested["root-c-kv"].endswith(" value")
    # an object schema with properties still takes only those (additionalProperties false by default)
    g = parse(json_schema_to_gbnf({"type": "object", "properties": {"a": {}}}))
    assert match_text(g, '{"a": {"x": [1, "y"]}}').accepted and match_text(g, "{}").accepted
    assert not match_text(g, '{"b": 1}').accepted
