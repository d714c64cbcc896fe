"""The one progress bar of the CLI: rich, on stderr, gone when done, silent when stderr is not a
terminal (CI logs stay clean). Library functions take plain callbacks; commands adapt them here."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

# update(completed, total=None, info=""): where the work stands; `total` may arrive late
Update = Callable[..., None]


@contextmanager
def bar(label: str, *, in_bytes: bool = False, enabled: bool = True) -> Iterator[Update]:
    """A bar named `label` counting items (or bytes, with `in_bytes`); yields `update`."""
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = Console(stderr=True)
    count = DownloadColumn() if in_bytes else MofNCompleteColumn()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), count, TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                  disable=not (enabled and console.is_terminal)) as progress:
        task = progress.add_task(label, total=None, info="")

        def update(completed: int, total: int | None = None, info: str = "") -> None:
            if total is not None:
                progress.update(task, total=total)
            progress.update(task, completed=completed, info=info)

        yield update


@contextmanager
def chunk_progress(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int, float], None]]]:
    """`bar` over evaluation chunks with the running perplexity; yields (on_start, on_chunk)."""
    with bar(label) as update:
        yield (lambda total: update(0, total)), (lambda done, ppl: update(done, info=f"PPL {ppl:.4f}"))
