"""The run's append-only JSONL logs (``metrics.jsonl``, ``rollouts.jsonl``), read back on ``--resume``.

A process killed (or a disk filled) in the middle of an append leaves a *torn* last line: the
start of a JSON object without its end. That line is dropped with a note, because the step it
belonged to is redone after the resume anyway. Any other line that is not a JSON object is
damage nobody can explain away, so it is an error naming ``file:line``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class LogFormatError(ValueError):
    """A line of a run log that is not a JSON object (not the torn last line)."""


@dataclass
class LogLines:
    """Parsed lines of one log: ``(line number, original text, object)`` and notes on dropped lines."""

    lines: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_log(path: Path) -> LogLines:
    """Parse ``path`` line by line; drop a torn final line (noted), raise ``LogFormatError`` on any other bad line."""
    out = LogLines()
    raw = path.read_text(encoding="utf-8", errors="replace").split("\n")
    numbered = [(i, text) for i, text in enumerate(raw, start=1) if text.strip()]
    for k, (i, text) in enumerate(numbered):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            obj, reason = None, f"not valid JSON: {err.msg} (column {err.colno})"
        else:
            reason = None if isinstance(obj, dict) else f"a {type(obj).__name__}, not a JSON object"
        if reason is None:
            out.lines.append((i, text, obj))
        elif k == len(numbered) - 1:
            out.notes.append(f"{path}:{i}: dropped a torn last line ({reason}; {len(text)} characters), "
                             f"left by an interrupted write")
        else:
            raise LogFormatError(f"{path}:{i}: {reason}; only the last line of a log may be torn. "
                                 f"Fix or delete that line to resume.")
    return out


def rewrite_log(path: Path, keep: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Keep the lines of ``path`` whose object passes ``keep``, atomically; returns notes on dropped torn lines."""
    if not path.exists():
        return []
    log = read_log(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")  # see checkpoint.clean_stale
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(text + "\n" for _, text, obj in log.lines if keep(obj))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a kill during the rewrite leaves the old log, never a half one
    return log.notes
