"""`llmtk inspect FILE`: a GGUF file's metadata, tensors, totals and architecture summary."""
from __future__ import annotations

from pathlib import Path

import click

from llmtk.registry import Lazy, Registry

# format name -> renderer of the report: returns the text to print, or prints itself and returns None
FORMATS: Registry = Registry("inspect format")
FORMATS.add("table", Lazy("llmtk.cli.render.inspect:render_table"))
FORMATS.add("json", Lazy("llmtk.ggufio.inspect:render_json"))
FORMATS.add("markdown", Lazy("llmtk.ggufio.inspect:render_markdown"))


@click.command("inspect")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS.names()), default="table", show_default=True,
              help="Output format; json keys: kv, kv_types, tensors, n_params, file_size, bpw, types, architecture.")
@click.option("--tensors/--no-tensors", default=True, show_default=True, help="List every tensor.")
@click.option("--filter", "pattern", metavar="REGEX",
              help="Show only metadata keys and tensors whose name matches REGEX (re.search).")
@click.option("--array-items", type=click.IntRange(min=0), default=8, show_default=True,
              help="Metadata arrays longer than this are summarised (length, first items); 0 shows all.")
def command(file: Path, fmt: str, tensors: bool, pattern: str | None, array_items: int) -> None:
    """Show FILE's metadata, tensors (name, type, shape in GGUF order, bytes, bits per weight),
    totals (parameters, file size, overall bpw, per-type histogram) and architecture summary.

    \b
    Examples:
      llmtk inspect model.gguf
      llmtk inspect model.gguf --no-tensors
      llmtk inspect model.gguf --filter 'blk\\.0\\.' --format markdown
      llmtk inspect model.gguf --format json | jq .architecture
    """
    from llmtk.ggufio.inspect import inspect_gguf

    report = inspect_gguf(file, tensors=tensors, pattern=pattern, array_items=array_items)
    text = FORMATS[fmt](report)
    if text is not None:
        click.echo(text)
