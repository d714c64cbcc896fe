"""`llmtk grammar check` and `llmtk json-schema-to-grammar`: exit codes and output."""
from __future__ import annotations

import json

from click.testing import CliRunner

from llmtk.cli.commands.grammar import command, json_schema_command
from llmtk.errors import InputError
from llmtk.grammar import shipped


def run(cmd, args):
    return CliRunner().invoke(cmd, args)


def test_check_accepts_and_rejects():
    g = str(shipped("json"))
    assert run(command, ["check", g]).exit_code == 0
    r = run(command, ["check", g, "-p", '{"a": [1, 2]}'])
    assert r.exit_code == 0 and "accepted" in r.output
    r = run(command, ["check", g, "-p", '{"a":\n [1,, 2]}'])
    assert r.exit_code == 1 and "2:5" in r.output


def test_check_reads_a_file_and_reports_incomplete_text(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text('{"a": ')
    r = run(command, ["check", str(shipped("json")), "-f", str(f)])
    assert r.exit_code == 1 and "before the grammar is complete" in r.output


def test_grammar_errors_are_input_errors_with_line_and_column(tmp_path):
    g = tmp_path / "bad.gbnf"
    g.write_text('root ::= item\nitem ::= ( "x"\n')
    r = run(command, ["check", str(g)])
    assert isinstance(r.exception, InputError) and "bad.gbnf:2:10" in str(r.exception)


def test_json_schema_to_grammar(tmp_path):
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}))
    r = run(json_schema_command, [str(s)])
    assert r.exit_code == 0 and "root ::= " in r.output
    s.write_text("{nope")
    r = run(json_schema_command, [str(s)])
    assert isinstance(r.exception, InputError) and "s.json:1:2" in str(r.exception)
