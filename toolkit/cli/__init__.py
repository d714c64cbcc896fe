"""The command line: `main` (the click group), `commands/<verb>.py`, and all terminal rendering.

Only this package imports click and rich; the library below it returns data.
"""
from __future__ import annotations

from llmtk.cli import interrupt as _interrupt

_interrupt.install_early()  # before the imports below: a Ctrl-C there exits 130, quietly

from llmtk.cli.main import COMMANDS, main  # noqa: E402

__all__ = ["COMMANDS", "main"]
