"""Progress of long phases (SFT, RL training, eval) as ``progress(done, total)`` callbacks.

On a terminal this is a live rich bar. When stdout is not a terminal (``make demo > log``, CI, a
job scheduler) rich draws nothing until the phase ends, so a long phase looked hung; there we
print a plain line instead, at the first update, then at most every ``interval_s`` seconds and at
the end: ``[train] step 12/100 (12%) elapsed 0:31 ETA 3:48 reward 0.125``.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

#: Seconds between plain progress lines when stdout is not a terminal.
PLAIN_INTERVAL_S = 10.0
_live_bars = 0  # rich bars currently shown


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class PlainProgress:
    """Prints ``[phase] unit done/total (pct) elapsed ETA info`` lines, rate-limited by ``interval_s``.

    The ETA is the mean time per step since the phase started (counting from ``initial``, the
    steps already done when it started, e.g. on ``--resume``) times the steps left.
    """

    def __init__(self, description: str, *, stream: TextIO, interval_s: float = PLAIN_INTERVAL_S,
                 initial: int = 0, unit: str = "step", clock: Callable[[], float] = time.monotonic):
        self.description, self.stream, self.interval_s, self.unit = description, stream, interval_s, unit
        self.initial, self.clock = initial, clock
        self.t0 = clock()
        self.last_print: float | None = None

    def line(self, done: int, total: int | None, info: str = "") -> str:
        elapsed = self.clock() - self.t0
        parts = [f"[{self.description}] {self.unit} {done}/{total if total else '?'}"]
        if total:
            parts.append(f"({100 * done / total:.0f}%)")
        parts.append(f"elapsed {_clock_text(elapsed)}")
        if total and done > self.initial:
            parts.append(f"ETA {_clock_text(elapsed / (done - self.initial) * max(0, total - done))}")
        if info:
            parts.append(info)
        return " ".join(parts)

    def __call__(self, done: int, total: int | None, info: str = "") -> None:
        now = self.clock()
        finished = bool(total) and done >= total
        if self.last_print is None or finished or now - self.last_print >= self.interval_s:
            print(self.line(done, total, info), file=self.stream, flush=True)
            self.last_print = now


def _rich_phase(description: str, initial: int):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    cols = [TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    bar = Progress(*cols)
    task_id = bar.add_task(description, total=None, completed=initial, info="")

    def update(done: int, total: int | None, info: str = "") -> None:
        bar.update(task_id, completed=done, total=total, info=info)

    return bar, update


@contextmanager
def phase(description: str, *, enabled: bool = True, stream: TextIO | None = None,
          interval_s: float = PLAIN_INTERVAL_S, initial: int = 0, unit: str = "step",
          clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[..., None]]:
    """Yield ``update(done, total, info="")`` for one phase: a rich bar on a terminal, else plain lines.

    ``stream`` defaults to ``sys.stdout`` (looked up at call time, so redirections apply);
    ``initial`` is the step the phase starts from (resumed runs); ``unit`` names what is counted in
    plain lines; ``clock`` is for tests.
    """
    if not enabled:
        yield lambda done, total, info="": None
        return
    global _live_bars
    out = sys.stdout if stream is None else stream
    # A phase inside another (an eval inside training) prints plain lines, which the outer bar shows
    # above itself: rich 13 (pyproject allows it) raises LiveError on a second live display.
    if stream is None and not _live_bars and callable(getattr(out, "isatty", None)) and out.isatty():
        bar, update = _rich_phase(description, initial)
        _live_bars += 1
        try:
            with bar:
                yield update
        finally:
            _live_bars -= 1
        return
    yield PlainProgress(description, stream=out, interval_s=interval_s, initial=initial, unit=unit,
                        clock=clock)
