"""The one error hierarchy of llmtk.

Every user-facing failure is an `LlmtkError`; the CLI prints its message on one line (naming the
file and the problem) and exits with status 2. Messages hold the bad value, the constraint and the
name, plus a hint where there is one.
"""
from __future__ import annotations


class LlmtkError(Exception):
    """Base of all errors llmtk reports to users (exit code 2, no traceback)."""

    exit_code = 2


class GGUFFormatError(LlmtkError):
    """A GGUF file is malformed, truncated, hostile or of an unsupported version."""


class UnsupportedError(LlmtkError):
    """A type, architecture, tokenizer or option llmtk does not (yet) handle."""


class ShapeError(LlmtkError):
    """Array or tensor shapes that do not fit a quant type, a model or each other."""


class InputError(LlmtkError):
    """Bad user input: missing files, bad option values, non-finite data."""
