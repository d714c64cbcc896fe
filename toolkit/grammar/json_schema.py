"""JSON Schema to GBNF, with llama.cpp's `json_schema_to_grammar` semantics (own code).

Supported: `type` (one or a list), `properties` / `required` (required keys first in schema order,
then any ordered subset of the optional ones), `additionalProperties` (false by default, as in
llama.cpp; true or a schema allows extra `"key": value` pairs after the known ones; an object
schema with neither `properties` nor a non-true `additionalProperties` is any object), `enum`,
`const`, `items` / `prefixItems` with `minItems` / `maxItems`, nested objects, local `$ref`
(`#/$defs/X`, `#/definitions/X`, recursion allowed), `anyOf` / `oneOf` (alternatives), `allOf`
(objects merged), string `minLength` / `maxLength`, `format` date, time, date-time, uuid,
integer `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum`, and `pattern`s made of
literals, `.`, classes, groups, `|`, `* + ? {m,n}` and `\\d \\w \\s`. Whitespace between tokens is
llama.cpp's `space` rule. Unsupported keywords are ignored, as llama.cpp does.
"""
from __future__ import annotations

import json
import re
from typing import Any

from llmtk.errors import InputError

SPACE = '| " " | "\\n" [ \\t]{0,20}'
PRIMITIVES = {
    "boolean": '("true" | "false") space',
    "decimal-part": "[0-9]{1,16}",
    "integral-part": "[0] | [1-9] [0-9]{0,15}",
    # the exponent takes any digits (llama.cpp reuses integral-part, which refuses Python's 1e-05)
    "number": '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? [0-9]{1,4})? space',
    "integer": '("-"? integral-part) space',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
    "array": '"[" space ( value ("," space value)* )? "]" space',
    "char": '[^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": '"\\"" char* "\\"" space',
    "null": '"null" space',
    "date": '[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( [0-2] [0-9] | "3" [0-1] )',
    "time": '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
            '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "date-time": 'date "T" time',
    "uuid": '"\\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" '
            '[0-9a-fA-F]{12} "\\"" space',
}
DEPS = {"number": ["integral-part", "decimal-part"], "integer": ["integral-part"],
        "value": ["object", "array", "string", "number", "boolean", "null"],
        "object": ["string", "value"], "array": ["value"], "string": ["char"],
        "date-time": ["date", "time"]}
_FORMATS = {"date", "time", "date-time"}


def gbnf_literal(s: str) -> str:
    """`s` as a GBNF string literal."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _class_char(ch: str) -> str:
    if ch in "\\]-^[\"":
        return "\\" + ch
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\x{ord(ch):02X}"
    return ch


class _Converter:
    def __init__(self, root_schema: dict) -> None:
        self.root_schema = root_schema
        self.rules: dict[str, str] = {"space": SPACE}
        self.refs: dict[str, str] = {}

    def name(self, base: str) -> str:
        return re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "r"

    def add(self, name: str, body: str) -> str:
        name = self.name(name)
        if self.rules.get(name, body) in (body, ""):
            self.rules[name] = body
            return name
        i = 1
        while self.rules.get(f"{name}{i}", body) != body:
            i += 1
        self.rules[f"{name}{i}"] = body
        return f"{name}{i}"

    def primitive(self, name: str) -> str:
        # as llama.cpp's _add_primitive: register the rule first, then add only the deps not there
        # yet (value -> object -> value is a cycle: visiting deps first never ends)
        self.rules[name] = PRIMITIVES[name]
        for dep in DEPS.get(name, []):
            if dep not in self.rules:
                self.primitive(dep)
        return name

    def resolve(self, ref: str) -> dict:
        if not ref.startswith("#"):
            raise InputError(f"$ref {ref!r}: only local references (#/...) are supported")
        node: Any = self.root_schema
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise InputError(f"$ref {ref!r} does not resolve in the schema")
            node = node[part]
        return node

    def visit(self, schema: Any, name: str) -> str:
        """An expression (a rule name or inline GBNF) that matches `schema`; `name` is the rule name."""
        if schema is True or schema == {}:
            return self.primitive("value")
        if schema is False:
            raise InputError(f"schema at '{name}' is false: nothing can match it")
        if not isinstance(schema, dict):
            raise InputError(f"schema at '{name}' must be an object, not {type(schema).__name__}")
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref not in self.refs:
                rname = self.name(ref.rsplit("/", 1)[-1] if ref != "#" else "root")
                self.refs[ref] = rname
                self.rules.setdefault(rname, "")  # reserve: recursive references
                target = self.resolve(ref)
                expr = self.visit(target, rname)
                if expr != rname:
                    self.rules[rname] = expr
            return self.refs[ref]
        t = schema.get("type")
        if "oneOf" in schema or "anyOf" in schema:
            alts = schema.get("oneOf", schema.get("anyOf"))
            return self.add(name, " | ".join(self.visit(s, f"{name}-{i}") for i, s in enumerate(alts)))
        if "allOf" in schema:
            return self.visit(self.merge_all(schema), name)
        if "const" in schema:
            return self.add(name, gbnf_literal(json.dumps(schema["const"])) + " space")
        if "enum" in schema:
            return self.add(name, "(" + " | ".join(gbnf_literal(json.dumps(v)) for v in schema["enum"]) + ") space")
        if isinstance(t, list):
            return self.add(name, " | ".join(self.visit({**schema, "type": x}, f"{name}-{x}") for x in t))
        if t == "object" and "properties" not in schema and schema.get("additionalProperties", True) is True:
            return self.add(name, self.primitive("object"))  # llama.cpp: any object
        if t == "object" or (t is None and ("properties" in schema or "additionalProperties" in schema)):
            return self.object(schema, name)
        if t == "array" and not any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return self.primitive("array")  # llama.cpp: any array
        if t == "array" or (t is None and ("items" in schema or "prefixItems" in schema)):
            return self.array(schema, name)
        if t == "string" or (t is None and ("pattern" in schema or "format" in schema)):
            return self.string(schema, name)
        if t == "integer":
            bounds = [schema.get(k) for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")]
            if any(b is not None for b in bounds):
                return self.add(name, self.int_range(schema) + " space")
            return self.primitive("integer")
        if t in ("number", "boolean", "null"):
            return self.primitive(t)
        if t is None:
            return self.primitive("value")
        raise InputError(f"schema at '{name}': unknown type {t!r}")

    def merge_all(self, schema: dict) -> dict:
        out: dict = {"type": "object", "properties": {}, "required": []}
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        for part in [rest, *schema["allOf"]]:
            while isinstance(part, dict) and "$ref" in part:
                part = self.resolve(part["$ref"])
            if not isinstance(part, dict):
                continue
            if "anyOf" in part or "oneOf" in part:
                raise InputError("allOf with anyOf/oneOf inside is not supported")
            out["properties"].update(part.get("properties", {}))
            out["required"] += [r for r in part.get("required", []) if r not in out["required"]]
            if "additionalProperties" in part:
                out["additionalProperties"] = part["additionalProperties"]
        return out

    def object(self, schema: dict, name: str) -> str:
        props = schema.get("properties", {})
        required = [k for k in props if k in set(schema.get("required", []))]
        optional = [k for k in props if k not in required]
        kv = {}
        for k in props:
            value = self.visit(props[k], f"{name}-{k}")
            kv[k] = self.add(f"{name}-{k}-kv", gbnf_literal(json.dumps(k)) + ' space ":" space ' + value)
        extra = schema.get("additionalProperties", False)
        if extra is not False:
            value = self.visit({} if extra is True else extra, f"{name}-additional")
            one = self.add(f"{name}-additional-kv", 'string ":" space ' + value)
            self.primitive("string")
            optional.append("*")
            kv["*"] = self.add(f"{name}-additional-kvs", f'{one} ( "," space {one} )*')
        body = " \",\" space ".join(kv[k] for k in required)
        if optional:
            opt = self.optional_chain([kv[k] for k in optional], name)
            body = f'{body} ( "," space {opt} )?' if required else f"( {opt} )?"
        return self.add(name, f'"{{" space {body} "}}" space')

    def optional_chain(self, kvs: list[str], name: str) -> str:
        """Any non-empty ordered subset of `kvs`, comma-separated."""
        rest = ""
        for i in range(len(kvs) - 1, -1, -1):
            here = kvs[i] if not rest else f'{kvs[i]} ( "," space {rest} )?'
            rest = self.add(f"{name}-opt{i}", here if not rest or i == len(kvs) - 1 else f"{here} | {rest}")
        return rest

    def array(self, schema: dict, name: str) -> str:
        if "prefixItems" in schema or isinstance(schema.get("items"), list):
            items = schema.get("prefixItems", schema.get("items"))
            parts = [self.visit(s, f"{name}-{i}") for i, s in enumerate(items)]
            return self.add(name, '"[" space ' + ' "," space '.join(parts) + ' "]" space')
        item = self.visit(schema.get("items", {}), f"{name}-item")
        lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            raise InputError(f"schema at '{name}': maxItems {hi} < minItems {lo}")
        if hi == 0:
            return self.add(name, '"[" space "]" space')
        rep = _repeat(lo - 1 if lo else 0, None if hi is None else hi - 1)
        seq = f'{item} ( "," space {item} ){rep}'
        return self.add(name, f'"[" space {seq if lo else f"( {seq} )?"} "]" space')

    def string(self, schema: dict, name: str) -> str:
        fmt = schema.get("format")
        if "pattern" in schema:
            return self.add(name, '"\\"" ' + _pattern_to_gbnf(schema["pattern"]) + ' "\\"" space')
        if fmt == "uuid":
            return self.primitive("uuid")
        if fmt in _FORMATS:
            self.primitive(fmt)
            return self.add(f"{fmt}-string", f'"\\"" {fmt} "\\"" space')
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        if lo == 0 and hi is None:
            return self.primitive("string")
        self.primitive("char")
        return self.add(name, f'"\\"" char{_repeat(lo, None if hi is None else int(hi))} "\\"" space')

    def int_range(self, schema: dict) -> str:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if schema.get("exclusiveMinimum") is not None:
            e = schema["exclusiveMinimum"]
            lo = e + 1 if lo is None else max(lo, e + 1)
        if schema.get("exclusiveMaximum") is not None:
            e = schema["exclusiveMaximum"]
            hi = e - 1 if hi is None else min(hi, e - 1)
        import math
        lo = None if lo is None else math.ceil(lo)
        hi = None if hi is None else math.floor(hi)
        if lo is not None and hi is not None and lo > hi:
            raise InputError(f"integer range [{lo}, {hi}] is empty")
        return "(" + " | ".join(_int_alternatives(lo, hi)) + ")"

    def grammar(self, schema: Any) -> str:
        self.rules["root"] = ""
        expr = self.visit(schema, "root")
        if expr != "root":
            self.rules["root"] = expr
        lines = [f"{k} ::= {v}" for k, v in sorted(self.rules.items())]
        return "\n".join(lines) + "\n"


def _repeat(lo: int, hi: int | None) -> str:
    if hi is None:
        return "*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}"
    if lo == hi:
        return f"{{{lo}}}"
    return "?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}"


_DIGITS_MAX = 16  # as llama.cpp's integral-part: at most 16 digits


def _same_len(a: str, b: str) -> list[str]:
    """Sequences matching the decimal strings in [a, b] of one length."""
    if not a:
        return [""]
    if a == b:
        return [gbnf_literal(a)]
    if a[0] == b[0]:
        return [f'"{a[0]}" ( {" | ".join(_same_len(a[1:], b[1:]))} )']
    n = len(a) - 1
    out = []
    lo_all0, hi_all9 = a[1:] == "0" * n, b[1:] == "9" * n
    first_lo = int(a[0]) + (0 if lo_all0 else 1)
    last_hi = int(b[0]) - (0 if hi_all9 else 1)
    if not lo_all0:
        out.append(f'"{a[0]}" ( {" | ".join(_same_len(a[1:], "9" * n))} )')
    if first_lo <= last_hi:
        out.append(f"[{first_lo}-{last_hi}]" + (f" [0-9]{{{n}}}" if n else ""))
    if not hi_all9:
        out.append(f'"{b[0]}" ( {" | ".join(_same_len("0" * n, b[1:]))} )')
    return out


def _nonneg(lo: int, hi: int | None) -> list[str]:
    """Alternatives for the integers in [lo, hi] (hi None: unbounded), lo >= 0, no sign."""
    out = []
    for n in range(len(str(lo)), _DIGITS_MAX + 1):
        a = max(lo, 10 ** (n - 1) if n > 1 else 0)
        b = 10 ** n - 1 if hi is None else min(hi, 10 ** n - 1)
        if a > b:
            break
        out += _same_len(str(a), str(b))
    return out or ['"0"']


def _int_alternatives(lo: int | None, hi: int | None) -> list[str]:
    out = []
    if lo is None or lo < 0:   # the negative part: -x for x in [max(1, -hi), -lo]
        nlo = 1 if hi is None or hi >= 0 else -hi
        alts = _nonneg(nlo, None if lo is None else -lo)
        out.append(f'"-" ( {" | ".join(alts)} )')
    if hi is None or hi >= 0:
        out += _nonneg(max(lo or 0, 0), hi)
    return out


def _pattern_to_gbnf(pattern: str) -> str:
    """A simple regex (anchored with ^...$ as llama.cpp asks) as one GBNF expression."""
    p = pattern
    if p.startswith("^"):
        p = p[1:]
    if p.endswith("$") and not p.endswith("\\$"):
        p = p[:-1]
    pos = 0

    def err(msg: str) -> InputError:
        return InputError(f"pattern {pattern!r}: {msg} at offset {pos}")

    def alternation() -> str:
        nonlocal pos
        alts = [sequence()]
        while pos < len(p) and p[pos] == "|":
            pos += 1
            alts.append(sequence())
        return " | ".join(a or '""' for a in alts)

    def sequence() -> str:
        nonlocal pos
        items: list[str] = []
        while pos < len(p) and p[pos] not in "|)":
            c = p[pos]
            if c == "(":
                pos += 1
                if p.startswith("?:", pos):
                    pos += 2
                inner = alternation()
                if pos >= len(p) or p[pos] != ")":
                    raise err("unbalanced '('")
                pos += 1
                items.append(f"( {inner} )")
            elif c == "[":
                end = pos + 1
                if end < len(p) and p[end] == "^":
                    end += 1
                if end < len(p) and p[end] == "]":
                    end += 1
                while end < len(p) and p[end] != "]":
                    end += 2 if p[end] == "\\" else 1
                if end >= len(p):
                    raise err("unbalanced '['")
                items.append(_regex_class(p[pos + 1:end]))
                pos = end + 1
            elif c == ".":
                items.append('[^"\\\\\\x7F\\x00-\\x1F]')
                pos += 1
            elif c == "\\":
                items.append(_regex_escape(p[pos + 1:pos + 2]))
                pos += 2
            elif c in "*+?":
                if not items:
                    raise err(f"nothing to repeat with {c!r}")
                items[-1] = f"( {items[-1]} ){c}"
                pos += 1
            elif c == "{":
                m = re.match(r"\{(\d+)(,(\d*))?\}", p[pos:])
                if not m or not items:
                    raise err("bad repetition")
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                items[-1] = f"( {items[-1]} ){_repeat(lo, hi) or ''}"
                pos += m.end()
            else:
                items.append(gbnf_literal(json.dumps(c)[1:-1]) if c in '"\\' else gbnf_literal(c))
                pos += 1
        return " ".join(items)

    out = alternation()
    if pos != len(p):
        raise err("unbalanced ')'")
    return f"( {out} )"


_CLASS_ESCAPES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r"}


def _regex_escape(e: str) -> str:
    if e in _CLASS_ESCAPES:
        return f"[{_CLASS_ESCAPES[e]}]"
    if e.upper() in _CLASS_ESCAPES and e.isupper():
        return f"[^{_CLASS_ESCAPES[e.lower()]}\"\\\\\\x00-\\x1F]"
    ch = {"n": "\n", "t": "\t", "r": "\r"}.get(e, e)
    return gbnf_literal(json.dumps(ch)[1:-1]) if ch in '"\\' else gbnf_literal(ch)


def _regex_class(body: str) -> str:
    neg = body.startswith("^")
    body = body[1:] if neg else body
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            e = body[i + 1]
            out.append(_CLASS_ESCAPES.get(e) or _class_char({"n": "\n", "t": "\t", "r": "\r"}.get(e, e)))
            i += 2
        elif body[i] == "-" and out and i + 1 < len(body):
            out.append("-")
            i += 1
        else:
            out.append(_class_char(body[i]))
            i += 1
    if neg:  # a negated class must also keep out what a JSON string cannot hold raw
        return f'[^{"".join(out)}"\\\\\\x7F\\x00-\\x1F]'
    return f'[{"".join(out)}]'


def json_schema_to_gbnf(schema: Any) -> str:
    """GBNF text (rules sorted by name, `root` first to match) that accepts the JSON instances of
    `schema` as llama.cpp's converter would, with its `space` between tokens."""
    return _Converter(schema if isinstance(schema, dict) else {}).grammar(schema)
