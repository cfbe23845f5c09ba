"""Answer extraction and comparison for free-text tasks (used by the ``jsonl`` task).

Extractors pull a final answer out of untrusted text in linear time and return None when there
is none; comparisons judge an extracted answer against a reference. ``math_verify`` runs the
optional ``math-verify`` package in a worker process with a wall-clock limit, because its own
signal-based timeouts only work on the main thread and a stuck sympy call cannot be
interrupted from inside the process.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import re
from fractions import Fraction
from typing import Any, Callable

GSM8K_MARKER = "####"
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION_RE = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def extract_gsm8k(text: str) -> str | None:
    """The first line after the last ``####`` (GSM8K's answer format), or None."""
    _, marker, tail = text.rpartition(GSM8K_MARKER)
    if not marker:
        return None
    line = tail.strip().split("\n", 1)[0].strip()
    return line or None


def extract_boxed(text: str) -> str | None:
    """The content of the last balanced ``\\boxed{...}``, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip() or None
    return None  # unbalanced


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (``-3``, ``1,234``, ``0.5``, ``.5``), or None."""
    last = None
    for m in _NUMBER_RE.finditer(text):
        last = m.group(0)
    return last


def extract_raw(text: str) -> str | None:
    """The whole text, stripped (None if empty)."""
    return text.strip() or None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "gsm8k": extract_gsm8k,
    "boxed": extract_boxed,
    "last_number": extract_last_number,
    "raw": extract_raw,
}


def normalize_text(text: str) -> str:
    """Whitespace collapsed, ends stripped, and one trailing ``.`` dropped (``exact`` matching)."""
    text = " ".join(text.split())
    return text[:-1].rstrip() if text.endswith(".") else text


#: Longest number text (after dropping ``$`` and thousands separators) that ``parse_number`` reads:
#: a Fraction of a huge literal is slow to build (and Python refuses int() past 4300 digits).
MAX_NUMBER_CHARS = 100


def _number_text(text: str) -> str:
    text = normalize_text(text).replace("\\$", "").replace("$", "").strip()
    return _THOUSANDS_RE.sub("", text)


def parse_number(text: str) -> Fraction | None:
    """An exact number from ``72``, ``-3.50``, ``1,234``, ``$5``, ``3/4`` (else None).

    Dollar signs, surrounding spaces, a trailing ``.`` and thousands separators are ignored;
    anything else (units, ``%``, words, ``1e3``) means "not a number". A number longer than
    ``MAX_NUMBER_CHARS`` is None too; :func:`is_long_number` tells that case apart.
    """
    text = _number_text(text)
    if len(text) > MAX_NUMBER_CHARS:
        return None
    if _PLAIN_NUMBER_RE.fullmatch(text):
        return Fraction(text)
    m = _FRACTION_RE.fullmatch(text)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    return None


def is_long_number(text: str) -> bool:
    """Is ``text`` shaped like a number but longer than ``MAX_NUMBER_CHARS`` (so ``parse_number`` gave None)?

    Linear time: both patterns are anchored and free of nested repetition.
    """
    text = _number_text(text)
    return len(text) > MAX_NUMBER_CHARS and bool(_PLAIN_NUMBER_RE.fullmatch(text) or _FRACTION_RE.fullmatch(text))


def format_number(x: Fraction) -> str:
    """Canonical text of a number: ``72``, ``-3``, ``7/2`` (so ``3.5`` and ``7/2`` compare equal)."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def numbers_match(a: Fraction, b: Fraction, *, rel_tol: float = 1e-6) -> bool:
    """``|a-b| <= rel_tol * max(|a|, |b|)``, exactly (rel_tol 0 = exact equality)."""
    return abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))


# ---------------------------------------------------------------------- math-verify
def math_verify_available() -> bool:
    return importlib.util.find_spec("math_verify") is not None


def import_math_verify() -> None:
    """Worker warm-up: import math-verify (and sympy) before any comparison is timed."""
    import math_verify  # noqa: F401


def math_verify_equal(reference: str, answer: str, wrap_answer: bool) -> bool:
    """Does math-verify judge ``answer`` equal to ``reference``? Runs inside the worker process.

    The reference is wrapped in ``\\boxed{}`` so math-verify reads it as the final answer; the
    answer too when ``wrap_answer`` (an extractor already isolated it). Both of math-verify's
    own timeouts are off (``parsing_timeout=None``, ``timeout_seconds=None``): they rely on
    SIGALRM, and the caller bounds the time by killing this process instead.
    """
    import math_verify

    gold = math_verify.parse("\\boxed{" + reference + "}", parsing_timeout=None)
    pred = math_verify.parse("\\boxed{" + answer + "}" if wrap_answer else answer, parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(math_verify.verify(gold, pred, timeout_seconds=None))


class TimedWorker:
    """Run picklable calls in one worker process, killing and restarting it after a timeout.

    Start-up is lazy: the first call spawns a fresh interpreter and runs ``warmup`` there (for
    example an import) without a time limit, so that ``timeout_s`` bounds only the calls
    themselves. ``call`` returns ``(True, result)``, ``(False, "timeout")`` or
    ``(False, "error: ...")``.
    """

    def __init__(self, *, timeout_s: float = 5.0, warmup: Callable[[], Any] | None = None):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.warmup = warmup
        self._pool: Any = None

    def call(self, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        try:
            if self._pool is None:
                # spawn, not fork: forking a process that holds torch threads is unsafe.
                self._pool = multiprocessing.get_context("spawn").Pool(1)
                if self.warmup is not None:
                    self._pool.apply(self.warmup)
            return True, self._pool.apply_async(fn, args).get(timeout=self.timeout_s)
        except multiprocessing.TimeoutError:
            self.close()  # the only way to stop a stuck computation
            return False, "timeout"
        except Exception as err:  # the call (or the warm-up) raised in the worker: report it
            return False, f"error: {type(err).__name__}: {err}"

    def __getstate__(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s, "warmup": self.warmup, "_pool": None}  # a copy starts its own

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
