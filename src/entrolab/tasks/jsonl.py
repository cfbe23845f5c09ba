"""Question/answer tasks read from a local JSONL or Parquet file (GSM8K-style by default).

Each row gives a prompt (``prompt_key``) and a reference answer (``answer_key``). A GSM8K row
``{"question": "...", "answer": "... #### 72"}`` works with the defaults. A malformed row (bad
JSON, ``NaN``/``Infinity``, not an object, missing key, wrong type, no extractable reference, a
prompt or reference past its size limit) is an error naming the file and line (JSONL) or row
(Parquet), raised when the task is built; so is a file with no rows.

Verification: the answer section (the text after the first ``answer_marker`` if one is set,
else the whole completion) goes through ``answer_extractor``; the result is compared with the
reference by ``match``. Reason codes: ``ok``, ``wrong_value``, ``no_answer`` (marker missing or
nothing extracted), ``too_long`` (longer than ``max_answer_chars``, or under ``numeric`` a number
longer than ``answers.MAX_NUMBER_CHARS``), ``parse_error`` (``numeric``: not a number;
``math_verify``: it failed), ``timeout`` (``math_verify`` ran past its time limit).
"""

from __future__ import annotations

import json
import math
import string
import sys
from pathlib import Path
from typing import Any

from entrolab.registry import TASKS
from entrolab.tasks.answers import (EXTRACTORS, MAX_NUMBER_CHARS, TimedWorker, format_number,
                                    import_math_verify, is_long_number, math_verify_available,
                                    math_verify_equal, normalize_text, numbers_match, parse_number)
from entrolab.types import Prompt, Verdict

MATCHES = ("exact", "numeric", "math_verify")


def read_rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(location, row)`` pairs of a ``.jsonl``/``.ndjson`` or ``.parquet`` file.

    Locations read ``file:line`` (JSONL, blank lines skipped) or ``file: row N`` (Parquet),
    1-based. Raises ValueError naming the location for bad JSON (including ``NaN``/``Infinity``,
    which Python's json would otherwise accept, and integers too long for Python to read), bad UTF-8
    or a non-object row, and naming the file when it has no rows at all.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"jsonl: file not found: {path}")
    suffix = path.suffix.lower()
    rows: list[tuple[str, dict[str, Any]]] = []
    if suffix in (".jsonl", ".ndjson"):
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{where}: not valid UTF-8 ({err.reason})") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, parse_constant=_reject_constant, parse_int=_read_int)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
                except ValueError as err:  # NaN/Infinity (below), or an integer past Python's digit limit
                    raise ValueError(f"{where}: invalid JSON: {err}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
                rows.append((where, row))
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow: pip install 'entrolab[data]'") from None
        rows = [(f"{path}: row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist(), 1)]
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .ndjson or .parquet")
    if not rows:
        raise ValueError(f"{path}: the file has no rows (it is empty or holds only blank lines)")
    return rows


def _read_int(digits: str) -> int:
    limit = sys.get_int_max_str_digits() or None  # 0 = no limit
    if limit is not None and len(digits.lstrip("-")) > limit:
        raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits, more than Python reads "
                         f"({limit}); write it as a string")
    return int(digits)


def _reject_constant(name: str) -> Any:
    # json.loads accepts these non-standard constants by default; a NaN answer would then become the
    # reference text 'nan' (exact matching) and poison numeric metrics downstream.
    raise ValueError(f"{name} is not a finite JSON number (write the value as a string if it is text)")


def _template_fields(template: str) -> list[str]:
    fields = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"jsonl: template field {{{name}}} must be a plain name such as {{prompt}}")
        fields.append(name)
    return fields


@TASKS.register("jsonl", paper="baseline")
class JsonlTask:
    """Prompts and reference answers from a local JSONL/Parquet file, verified by extraction + match.

    Args (keyword-only):
        path: one file; with ``split_key`` its rows are split by that column, without it the
            same rows serve every split (no held-out data).
        paths: ``{split: file}`` instead of ``path``.
        split_key: column naming each row's split (with ``path``).
        prompt_key, answer_key: columns of the question and the reference answer.
        id_key: column of stable ids (default ids: ``<split>-<index:05d>``, or ``row-<index>``).
        demo_key: column holding a completion to imitate in SFT (None = no demonstrations).
        template: prompt text; ``{prompt}`` is the question, ``{name}`` any other column.
        answer_extractor: ``gsm8k`` (after the last ``####``), ``boxed`` (last ``\\boxed{}``),
            ``last_number`` or ``raw`` (the whole answer section).
        reference_extractor: how to read the reference; ``auto`` = the answer extractor when it
            finds something, else the whole value; an extractor name = that one, strictly.
        match: ``exact`` (whitespace-normalised text), ``numeric`` (exact rationals within
            ``rel_tol``), or ``math_verify`` (needs the ``math-verify`` package).
        answer_marker: text after which the answer section starts (first occurrence), or None.
        rel_tol: relative tolerance of ``numeric`` matching (0 = exact).
        max_answer_chars: longest extracted answer that is compared (longer is ``too_long``).
        math_verify_timeout_s: wall-clock limit of one ``math_verify`` comparison.
        max_prompt_chars: longest prompt (after ``template``); a longer row is an error naming its
            line, because a runaway row (a 50 MB prompt) would otherwise reach the tokenizer and
            the rollout and exhaust memory without a word.
        max_reference_chars: longest ``answer_key`` (and ``demo_key``) value, checked the same way.
    """

    name = "jsonl"

    def __init__(self, *, path: str | None = None, paths: dict[str, str] | None = None,
                 split_key: str | None = None, prompt_key: str = "question", answer_key: str = "answer",
                 id_key: str | None = None, demo_key: str | None = None, template: str = "{prompt}",
                 answer_extractor: str = "gsm8k", reference_extractor: str = "auto", match: str = "exact",
                 answer_marker: str | None = None, rel_tol: float = 1e-6, max_answer_chars: int = 1000,
                 math_verify_timeout_s: float = 5.0, max_prompt_chars: int = 20_000,
                 max_reference_chars: int = 20_000):
        if (path is None) == (paths is None):
            raise ValueError("jsonl: give exactly one of 'path' (one file) or 'paths' ({split: file})")
        if paths is not None and (not isinstance(paths, dict) or not paths):
            raise ValueError(f"jsonl: 'paths' must be a non-empty mapping split -> file, got {paths!r}")
        if split_key is not None and paths is not None:
            raise ValueError("jsonl: 'split_key' only applies to a single 'path'")
        for key, val in (("answer_extractor", answer_extractor), ("reference_extractor", reference_extractor)):
            valid = list(EXTRACTORS) + (["auto"] if key == "reference_extractor" else [])
            if val not in valid:
                raise ValueError(f"jsonl: {key} must be one of {', '.join(valid)}, got {val!r}")
        if match not in MATCHES:
            raise ValueError(f"jsonl: match must be one of {', '.join(MATCHES)}, got {match!r}")
        if match == "math_verify" and not math_verify_available():
            raise ValueError("jsonl: match='math_verify' needs the math-verify package: "
                             "pip install 'entrolab[math]' (or pip install math-verify)")
        if answer_marker is not None and (not isinstance(answer_marker, str) or not answer_marker):
            raise ValueError(f"jsonl: answer_marker must be a non-empty string or None, got {answer_marker!r}")
        if not rel_tol >= 0:
            raise ValueError(f"jsonl: rel_tol must be >= 0, got {rel_tol!r}")
        for key, val in (("max_answer_chars", max_answer_chars), ("max_prompt_chars", max_prompt_chars),
                         ("max_reference_chars", max_reference_chars)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"jsonl: {key} must be an integer >= 1, got {val!r}")
        self.max_prompt_chars, self.max_reference_chars = max_prompt_chars, max_reference_chars
        self.prompt_key, self.answer_key, self.id_key, self.demo_key = prompt_key, answer_key, id_key, demo_key
        self.template, self._fields = template, _template_fields(template)
        self.answer_extractor, self.reference_extractor = answer_extractor, reference_extractor
        self.match, self.answer_marker, self.rel_tol = match, answer_marker, float(rel_tol)
        self.max_answer_chars = max_answer_chars
        self._worker = (TimedWorker(timeout_s=math_verify_timeout_s, warmup=import_math_verify)
                        if match == "math_verify" else None)
        self.split_key, self._source = split_key, path if paths is None else paths
        self._demos: dict[str, str] = {}
        self._splits: dict[str, list[Prompt]] = {}
        if paths is not None:
            for split, file in paths.items():
                self._splits[str(split)] = self._load(read_rows(file), str(split))
        elif split_key is None:
            rows = self._load(read_rows(path), "row")
            self._splits = {s: rows for s in ("train", "validation", "test")}
        else:
            grouped: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for where, row in read_rows(path):
                split = row.get(split_key)
                if not isinstance(split, str):
                    raise ValueError(f"{where}: split column '{split_key}' must be a string, got {split!r}")
                grouped.setdefault(split, []).append((where, row))
            self._splits = {s: self._load(rows, s) for s, rows in grouped.items()}

    # ------------------------------------------------------------------ loading
    def _field(self, where: str, row: dict[str, Any], key: str, *, numbers_ok: bool = False) -> str:
        if key not in row:
            raise ValueError(f"{where}: missing key '{key}' (row has: {', '.join(sorted(row)) or 'nothing'})")
        val = row[key]
        if isinstance(val, str):
            return val
        if numbers_ok and isinstance(val, (int, float)) and not isinstance(val, bool):
            if isinstance(val, float) and not math.isfinite(val):  # Parquet can hold NaN/inf floats
                raise ValueError(f"{where}: '{key}' is {val} (not a finite number)")
            return str(val)
        kind = "a string or a number" if numbers_ok else "a string"
        raise ValueError(f"{where}: '{key}' must be {kind}, got {type(val).__name__}")

    def _reference(self, where: str, raw: str) -> str:
        name = self.answer_extractor if self.reference_extractor == "auto" else self.reference_extractor
        ref = EXTRACTORS[name](raw)
        if ref is None:
            if self.reference_extractor != "auto":
                raise ValueError(f"{where}: reference_extractor '{name}' found no answer in {raw[:80]!r}")
            ref = raw.strip()
        if self.match == "numeric":
            num = parse_number(ref)
            if num is None and is_long_number(ref):
                raise ValueError(f"{where}: match='numeric' but the reference is a number of {len(ref)} characters; "
                                 f"numeric matching reads numbers of at most {MAX_NUMBER_CHARS} (use match='exact')")
            if num is None:
                raise ValueError(f"{where}: match='numeric' but the reference {ref[:80]!r} is not a number")
            return format_number(num)
        return normalize_text(ref)

    def _load(self, rows: list[tuple[str, dict[str, Any]]], split: str) -> list[Prompt]:
        out, seen = [], {}
        for i, (where, row) in enumerate(rows):
            question = self._field(where, row, self.prompt_key)
            raw_ref = self._field(where, row, self.answer_key, numbers_ok=True)
            self._check_size(where, f"'{self.answer_key}'", raw_ref, "max_reference_chars", self.max_reference_chars)
            ref = self._reference(where, raw_ref)
            values = {f: self._field(where, row, f, numbers_ok=True) for f in self._fields if f != "prompt"}
            text = self.template.format_map({**values, "prompt": question})
            self._check_size(where, "the prompt", text, "max_prompt_chars", self.max_prompt_chars)
            pid = self._field(where, row, self.id_key, numbers_ok=True) if self.id_key else f"{split}-{i:05d}"
            if pid in seen:
                raise ValueError(f"{where}: duplicate id {pid!r} (first at {seen[pid]})")
            seen[pid] = where
            if self.demo_key is not None:
                demo = self._field(where, row, self.demo_key)
                self._check_size(where, f"'{self.demo_key}'", demo, "max_reference_chars", self.max_reference_chars)
                self._demos[pid] = demo
            out.append(Prompt(id=pid, text=text, meta={"answer": ref, "source": where}))
        return out

    @staticmethod
    def _check_size(where: str, what: str, text: str, key: str, limit: int) -> None:
        if len(text) > limit:
            raise ValueError(f"{where}: {what} has {len(text)} characters, more than {key}={limit} "
                             f"(raise task.{key} if rows this long are intended)")

    # ------------------------------------------------------------------ Task protocol
    def prompts(self, split: str) -> list[Prompt]:
        if split not in self._splits:
            source = f"{self._source} (split column '{self.split_key}')" if self.split_key else self._source
            raise ValueError(f"jsonl: no split {split!r} in {source}; this task has: "
                             f"{', '.join(sorted(self._splits))}")
        return list(self._splits[split])

    def _ref(self, prompt: Prompt) -> str:
        if "answer" in (prompt.meta or {}):
            return prompt.meta["answer"]
        for rows in self._splits.values():
            for p in rows:
                if p.id == prompt.id:
                    return p.meta["answer"]
        raise ValueError(f"jsonl: prompt {prompt.id!r} has no reference answer")

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """Extract the answer from ``completion`` and compare it with the reference."""
        ref = self._ref(prompt)
        section = completion
        if self.answer_marker is not None:
            _, marker, section = completion.partition(self.answer_marker)
            if not marker:
                return Verdict(0.0, False, None, "no_answer")
        ans = EXTRACTORS[self.answer_extractor](section)
        if ans is None:
            return Verdict(0.0, False, None, "no_answer")
        if len(ans) > self.max_answer_chars:
            return Verdict(0.0, False, None, "too_long")
        if self.match == "numeric":
            num = parse_number(ans)
            if num is None:
                return Verdict(0.0, False, None, "too_long" if is_long_number(ans) else "parse_error")
            ref_num = parse_number(ref)
            if ref_num is None:  # a prompt made by a differently configured task
                raise ValueError(f"jsonl: prompt {prompt.id!r} has a non-numeric reference {ref!r}")
            ok = numbers_match(num, ref_num, rel_tol=self.rel_tol)
            return Verdict(float(ok), ok, format_number(num), "ok" if ok else "wrong_value")
        answer = normalize_text(ans)
        if self.match == "exact":
            ok = answer == ref
        else:
            done, res = self._worker.call(math_verify_equal, ref, ans, self.answer_extractor != "raw")
            if not done:
                return Verdict(0.0, False, answer, "timeout" if res == "timeout" else "parse_error")
            ok = bool(res)
        return Verdict(float(ok), ok, answer, "ok" if ok else "wrong_value")

    def solutions(self, prompt: Prompt) -> list[str]:
        """The normalised reference answer, as a one-element list."""
        return [self._ref(prompt)]

    def demonstration(self, prompt: Prompt, rng: Any) -> str | None:
        """The row's ``demo_key`` text (None without ``demo_key``); ``rng`` is unused."""
        return self._demos.get(prompt.id) if self.demo_key is not None else None

    def charset(self) -> None:
        """None: free text has no fixed character set."""
        return None

    def close(self) -> None:
        """Stop the math-verify worker process, if one was started."""
        if self._worker is not None:
            self._worker.close()
