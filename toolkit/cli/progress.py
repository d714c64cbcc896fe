"""Progress bars shared by the commands (rich, on stderr; silent when stderr is not a terminal)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def chunk_progress(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int, float], None]]]:
    """A bar over evaluation chunks showing the running perplexity; yields (on_start, on_chunk)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None, info="")

        def on_start(total: int) -> None:
            progress.update(task, total=total)

        def on_chunk(done: int, running_ppl: float) -> None:
            progress.update(task, completed=done, info=f"PPL {running_ppl:.4f}")

        yield on_start, on_chunk
