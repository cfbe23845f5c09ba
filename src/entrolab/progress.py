"""Progress bars for long phases (rich), as ``progress(done, total)`` callbacks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def phase(description: str, *, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """Yield a callback that advances one bar; the bar closes when the phase ends."""
    cols = [TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn()]
    with Progress(*cols, disable=not enabled) as bar:
        task_id = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        yield update
