"""Ctrl-C that always stops a command: exit 130, nothing partial.

A KeyboardInterrupt raised while numba or llvmlite is inside a callback is printed as "Exception
ignored ..." and swallowed, and the command would run on and exit 0. The SIGINT handler below
records the interrupt before raising it, so the CLI raises it again at its next Python-level check
(`check()`: every progress update and every output write) and exits 130 after the command even if
nothing checked. Before that handler is in place (while the CLI's modules are imported),
`install_early` makes a Ctrl-C exit 130 quietly instead of printing an import traceback.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

_interrupted = False
_previous: Any = None
_installed = False
_program = False  # this process is the `llmtk` command (see `install_early`)


def _handler(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _exit_130(signum: int, frame: Any) -> None:
    raise SystemExit(130)


def install_early() -> None:
    """When this process is the `llmtk` command (`llmtk ...` or `python -m llmtk.cli ...`), make
    Ctrl-C during the imports before `install` exit 130 without a traceback. A no-op when
    `llmtk.cli` is imported by other programs (tests, notebooks): their Ctrl-C stays theirs."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 != "-m" and os.path.basename(argv0) not in ("llmtk", "llmtk.exe"):
        return
    global _program
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _exit_130)
            _program = True
    except (ValueError, OSError):
        pass


def install() -> None:
    """Install the recording SIGINT handler (main thread only; a no-op elsewhere)."""
    global _previous, _installed, _interrupted
    _interrupted = False
    if threading.current_thread() is not threading.main_thread() or _installed:
        return
    try:
        _previous = signal.signal(signal.SIGINT, _handler)
        _installed = True
    except (ValueError, OSError):
        pass


def restore() -> None:
    """Put back the SIGINT handler that was there before `install`; when this process is the
    `llmtk` command, ignore SIGINT instead: the command is over (its outputs whole, or removed),
    and a Ctrl-C during the interpreter's teardown would otherwise kill it by SIGINT and turn a
    finished run's exit 0 (or 130) into a death by signal."""
    global _installed
    if _installed:
        try:
            if _program:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            else:
                signal.signal(signal.SIGINT, _previous if _previous is not None else signal.default_int_handler)
        except (ValueError, OSError):
            pass
        _installed = False


def interrupted() -> bool:
    """Whether Ctrl-C was pressed since `install` (even if its KeyboardInterrupt was swallowed)."""
    return _interrupted


def mark() -> None:
    """Record an interrupt that arrived as a KeyboardInterrupt without our handler."""
    global _interrupted
    _interrupted = True


def check() -> None:
    """Raise KeyboardInterrupt again if Ctrl-C was pressed and swallowed somewhere below us."""
    if _interrupted:
        raise KeyboardInterrupt
