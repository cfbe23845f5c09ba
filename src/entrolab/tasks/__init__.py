"""Verifiable tasks (the ``Task`` protocol in ``entrolab.types``).

Importing this package registers every built-in task in ``entrolab.registry.TASKS``:
``countdown`` (arithmetic puzzles with exact verification and enumerable solutions) and
``jsonl`` (question/answer rows from a local JSONL or Parquet file). See docs/tasks.md.
"""

from entrolab.tasks import answers, countdown, enumeration, expr, jsonl  # noqa: F401  (registers tasks)
from entrolab.tasks.countdown import Countdown, format_prompt, parse_prompt
from entrolab.tasks.expr import ExprError, canonicalize, parse
from entrolab.tasks.jsonl import JsonlTask

__all__ = ["Countdown", "ExprError", "JsonlTask", "canonicalize", "format_prompt", "parse", "parse_prompt"]
