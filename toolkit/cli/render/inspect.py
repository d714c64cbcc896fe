"""`llmtk inspect --format table`: the report as rich tables (JSON and Markdown are the library's)."""
from __future__ import annotations

from typing import Any

from llmtk.ggufio import escape_control
from llmtk.ggufio.inspect import (
    TENSOR_HEADER,
    TYPE_HEADER,
    format_value,
    summary_rows,
    tensor_rows,
    type_rows,
)

def render_table(rep: dict[str, Any]) -> None:
    """Print the report as rich tables on stdout (cells are Text, so no markup is interpreted)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()

    numeric = {"tensors", "params", "bytes", "share", "bpw", "elements"}

    def table(title: str, header: list[str], rows: list[list[str]] | list[tuple[str, str]], **kw: Any) -> None:
        t = Table(title=title, title_justify="left", **kw)
        for i, h in enumerate(header):
            # names never wrap (they are what one greps for); long values fold
            t.add_column(h, justify="right" if h in numeric else "left",
                         no_wrap=i == 0, overflow="fold")
        for row in rows:
            t.add_row(*(Text(c) for c in row))
        console.print(t)

    table("Summary", ["", ""], summary_rows(rep), show_header=False)
    table("Tensor types", TYPE_HEADER, type_rows(rep))
    table("Metadata", ["key", "type", "value"],
          [[escape_control(k), rep["kv_types"][k], format_value(v, rep["kv_types"][k])]
        for k, v in rep["kv"].items()])
    if "tensors" in rep:
        table("Tensors", TENSOR_HEADER, tensor_rows(rep))
