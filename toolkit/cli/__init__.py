"""The command line: `main` (the click group), `commands/<verb>.py`, and all terminal rendering.

Only this package imports click and rich; the library below it returns data.
"""
from __future__ import annotations

from llmtk.cli.main import COMMANDS, main

__all__ = ["COMMANDS", "main"]
