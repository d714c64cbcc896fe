"""Bench tables as text: markdown, CSV, JSON (the terminal's rich table is drawn by the CLI)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from llmtk.errors import InputError

if TYPE_CHECKING:
    import pandas

def is_ratio_column(column: str) -> bool:
    """Ratio columns are named `a/b` (`q 1t/ggml`, `pp/llama`); `t/s`, `GFLOP/s` are units."""
    return "/" in column and not column.endswith("/s")


def format_cell(value: Any, column: str = "") -> str:
    """A number as the tables show it: ratios with 2 decimals, others to about 3 significant
    digits, NaN as n/a."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if is_ratio_column(column):
            return f"{v:.2f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(value)


def to_markdown(df: "pandas.DataFrame") -> str:
    cols = list(df.columns)
    lines = []
    if df.attrs.get("title"):
        lines += [df.attrs["title"], ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(format_cell(v, c) for v, c in zip(rec, cols)) + " |")
    return "\n".join(lines)


def render(df: "pandas.DataFrame", fmt: str) -> str:
    """`markdown`, `csv` or `json` text of a bench table (csv/json keep full precision, NaN as empty/null)."""
    if fmt == "markdown":
        return to_markdown(df)
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        import json

        def plain(v: Any) -> Any:
            v = v.item() if isinstance(v, np.generic) else v
            return None if isinstance(v, float) and math.isnan(v) else v

        return json.dumps([{k: plain(v) for k, v in r.items()} for r in df.to_dict(orient="records")], indent=2)
    raise InputError(f"unknown format {fmt!r}; valid: markdown, csv, json")
