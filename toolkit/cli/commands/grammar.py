"""`llmtk grammar check FILE.gbnf [-p TEXT | -f FILE]` and `llmtk json-schema-to-grammar SCHEMA.json`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from llmtk.errors import InputError


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text: {e.reason} at byte {e.start}") from None


@click.group("grammar")
def command() -> None:
    """Check GBNF grammars (llama.cpp's grammar language) and texts against them."""


@command.command("check")
@click.argument("grammar_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-p", "--prompt", "text", metavar="TEXT", help="Text that must match the grammar.")
@click.option("-f", "--file", "file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the text to match from FILE.")
@click.option("--root", default="root", show_default=True, help="The start rule.")
def check(grammar_file: Path, text: str | None, file: Path | None, root: str) -> None:
    """Parse GRAMMAR_FILE; with -p or -f, match a text against it.

    Exit 0 when the grammar parses (and the text is accepted), 1 when the text is rejected (the
    line:col where it stops matching is printed), 2 on a grammar error (with its line:col).

    \b
    Examples:
      llmtk grammar check grammars/json.gbnf
      llmtk grammar check grammars/json.gbnf -p '{"a": [1, 2]}'
      llmtk grammar check my.gbnf -f answer.txt
    """
    from llmtk.grammar import match_text, parse

    if text is not None and file is not None:
        raise InputError("give at most one of -p TEXT or -f FILE")
    grammar = parse(_read(grammar_file), root=root, name=str(grammar_file))
    if file is not None:
        text = _read(file)
    if text is None:
        click.echo(f"{grammar_file}: ok ({len(grammar.rules)} rules)")
        return
    result = match_text(grammar, text)
    if result.accepted:
        click.echo("accepted")
        return
    line = text.count("\n", 0, result.stop) + 1
    col = result.stop - (text.rfind("\n", 0, result.stop) + 1) + 1
    if result.stop == len(text):
        click.echo(f"rejected: the text ends at {line}:{col} before the grammar is complete")
    else:
        click.echo(f"rejected: {line}:{col}: {text[result.stop]!r} cannot follow "
                   f"{text[max(0, result.stop - 20):result.stop]!r}")
    sys.exit(1)


@click.command("json-schema-to-grammar")
@click.argument("schema_file", type=click.Path(path_type=Path, dir_okay=False))
def json_schema_command(schema_file: Path) -> None:
    """Print the GBNF grammar of a JSON Schema, as llama.cpp's json_schema_to_grammar makes it.

    \b
    Example:
      llmtk json-schema-to-grammar person.schema.json > person.gbnf
    """
    from llmtk.grammar import json_schema_to_gbnf

    try:
        schema = json.loads(_read(schema_file))
    except json.JSONDecodeError as e:
        raise InputError(f"{schema_file}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
    click.echo(json_schema_to_gbnf(schema), nl=False)
