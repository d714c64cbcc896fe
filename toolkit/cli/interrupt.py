"""Ctrl-C that always stops a command: exit 130, nothing partial.

A KeyboardInterrupt raised while numba or llvmlite is inside a callback is printed as "Exception
ignored ..." and swallowed, and the command would run on and exit 0. The SIGINT handler below
records the interrupt before raising it, so the CLI raises it again at its next Python-level check
(`check()`: every progress update and every output write) and exits 130 after the command even if
nothing checked.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

_interrupted = False
_previous: Any = None
_installed = False


def _handler(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


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
    """Put back the SIGINT handler that was there before `install`."""
    global _installed
    if _installed:
        try:
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
