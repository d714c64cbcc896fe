"""The one progress bar of the CLI: rich, on stderr, gone when done. Without a terminal it is
silent, or, with `plain=True` (long evaluations: perplexity, imatrix, gate), prints plain periodic
lines instead (`perplexity: chunk 3/16 (19%), 12 s elapsed, ETA 52 s, PPL 12.3456`) so CI and
nohup logs show where a run stands. Every update also re-raises a Ctrl-C that a numba callback
swallowed (`llmtk.cli.interrupt`). Library functions take plain callbacks; commands adapt them here."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from llmtk.cli import interrupt

# update(completed, total=None, info=""): where the work stands; `total` may arrive late
Update = Callable[..., None]

# seconds between plain progress lines (the first and the last are always printed)
PLAIN_INTERVAL_ENV = "LLMTK_PROGRESS_INTERVAL"
DEFAULT_PLAIN_INTERVAL = 10.0


def _seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 chunk`, `2 chunks` (`many` for irregular plurals: `1 entry`, `2 entries`)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


class _PlainLog:
    """Periodic progress lines on stderr for runs without a terminal."""

    def __init__(self, label: str, unit: str, interval: float):
        self.label, self.unit, self.interval = label, unit, interval
        self.t0 = time.monotonic()
        self.last = -float("inf")
        self.total: int | None = None

    def __call__(self, completed: int, total: int | None, info: str) -> None:
        if total is not None:
            self.total = total
        now = time.monotonic()
        done = self.total is not None and completed >= self.total
        if completed <= 0 and self.total is not None:
            line = f"{self.label}: {plural(self.total, self.unit)} to do"
        elif done or now - self.last >= self.interval:
            elapsed = now - self.t0
            line = f"{self.label}: {self.unit} {completed}"
            if self.total:
                line += f"/{self.total} ({100 * completed / self.total:.0f}%)"
            line += f", {_seconds(elapsed)} elapsed"
            if self.total and 0 < completed < self.total:
                line += f", ETA {_seconds(elapsed / completed * (self.total - completed))}"
            if info:
                line += f", {info}"
        else:
            return
        self.last = now
        print(line, file=sys.stderr, flush=True)


@contextmanager
def bar(label: str, *, in_bytes: bool = False, enabled: bool = True, plain: bool = False,
        unit: str = "item") -> Iterator[Update]:
    """A bar named `label` counting items (or bytes, with `in_bytes`); yields `update`.

    With `plain`, a run without a terminal prints periodic `label: unit i/n ...` lines instead
    (every LLMTK_PROGRESS_INTERVAL seconds, default 10)."""
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = Console(stderr=True)
    log = None
    if enabled and plain and not console.is_terminal:
        try:
            interval = float(os.environ.get(PLAIN_INTERVAL_ENV, DEFAULT_PLAIN_INTERVAL))
        except ValueError:
            interval = DEFAULT_PLAIN_INTERVAL
        log = _PlainLog(label, unit, interval)
    count = DownloadColumn() if in_bytes else MofNCompleteColumn()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), count, TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                  disable=not (enabled and console.is_terminal)) as progress:
        task = progress.add_task(label, total=None, info="")

        def update(completed: int, total: int | None = None, info: str = "") -> None:
            interrupt.check()
            if total is not None:
                progress.update(task, total=total)
            progress.update(task, completed=completed, info=info)
            if log is not None:
                log(completed, total, info)

        yield update
    interrupt.check()


@contextmanager
def chunk_progress(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int, float], None]]]:
    """`bar` over evaluation chunks with the running perplexity; yields (on_start, on_chunk)."""
    with bar(label, plain=True, unit="chunk") as update:
        yield (lambda total: update(0, total)), (lambda done, ppl: update(done, info=f"PPL {ppl:.4f}"))
