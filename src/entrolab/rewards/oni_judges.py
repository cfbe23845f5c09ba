"""Judges that annotate an agent's turns for ONI: a rule-based one and an HTTP client for an LLM judge.

A **judge** is a callable ``judge(turns) -> labels``: one label per ``Turn``, a number in [0, 1]
(1 = the turn made progress) or None (the judge abstains; the turn is not used for training). A
judge may also have ``compare(pairs) -> preferences``: for each ``(a, b)`` pair of turns,
``P(a ≻ b)`` in [0, 1] or None (ONI-Ranking asks the LLM this directly); without it the ranking
model derives preferences from two pointwise labels.

Judges are looked up in ``JUDGES`` by name (``useful``, ``http``), or given as a dotted import path
``pkg.module:factory``; the factory is called with the term's ``judge_args``.

HTTP protocol (``http`` judge; the server owns the LLM and its prompt). One ``POST`` to
``endpoint`` per chunk of at most ``batch_size`` items, ``Content-Type: application/json``::

    {"kind": "label",   "turns": [{"action": "...", "observation": "..."}, ...]}
      -> {"labels": [1, 0, 0.5, null, ...]}          (one per turn, in order)
    {"kind": "compare", "pairs": [[{"action": ..., "observation": ...}, {...}], ...]}
      -> {"preferences": [1, 0, 0.5, null, ...]}     (P(first ≻ second), one per pair)

A timeout, an HTTP error, a body that is not this JSON, or a list of the wrong length raises
``JudgeError`` naming the endpoint: an annotation is never silently dropped.
"""

from __future__ import annotations

import json
import math
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from entrolab.registry import Registry

JUDGES = Registry("ONI judge")


class JudgeError(RuntimeError):
    """A judge failed or answered something that is not a list of labels; the message says where."""


@dataclass(frozen=True)
class Turn:
    """One turn of an episode as the judge sees it: the model's action and the environment's answer."""

    action: str
    observation: str
    info: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, str]:
        return {"action": self.action, "observation": self.observation}


def check_labels(values: Any, n: int, what: str) -> list[float | None]:
    """``values`` as n labels in [0, 1] or None; raises ``JudgeError`` naming ``what`` and the index."""
    if not isinstance(values, (list, tuple)) or len(values) != n:
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
        raise JudgeError(f"{what} returned {got}, expected a list of {n} labels")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
            raise JudgeError(f"{what} returned label {v!r} at index {i}; labels are numbers in [0, 1] or null")
        out.append(float(v))
    return out


@JUDGES.register("useful", paper="baseline")
class UsefulJudge:
    """Rule-based testbed judge: label = ``info["useful"]`` that the environment set on the turn.

    Turns without the key (answers, malformed turns) get ``missing``; ``missing=None`` makes such a
    turn an error instead.
    """

    def __init__(self, *, missing: float | None = 0.0):
        if missing is not None and not 0 <= missing <= 1:
            raise ValueError(f"missing must be in [0, 1] or None, got {missing}")
        self.missing = missing

    def __call__(self, turns: Sequence[Turn]) -> list[float | None]:
        out: list[float | None] = []
        for i, turn in enumerate(turns):
            if "useful" not in turn.info:
                if self.missing is None:
                    raise JudgeError(f"judge 'useful': turn {i} (action {turn.action[:60]!r}) has no "
                                     "info['useful'] and missing=None")
                out.append(self.missing)
                continue
            v = turn.info["useful"]
            if not isinstance(v, (bool, int)) or v not in (0, 1):
                raise JudgeError(f"judge 'useful': turn {i} (action {turn.action[:60]!r}) has "
                                 f"info['useful']={v!r}; expected a bool")
            out.append(float(v))
        return out


@JUDGES.register("http", paper="Online Intrinsic Rewards for Decision Making Agents from Large Language "
                 "Model Feedback", arxiv="2410.23022")
class HttpJudge:
    """An LLM judge behind a local HTTP endpoint (JSON protocol in the module docstring)."""

    def __init__(self, *, endpoint: str, timeout: float = 30.0, batch_size: int = 64):
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {endpoint!r}")
        if not timeout > 0 or batch_size < 1:
            raise ValueError(f"timeout must be > 0 and batch_size >= 1, got {timeout}, {batch_size}")
        self.endpoint, self.timeout, self.batch_size = endpoint, float(timeout), int(batch_size)

    def _post(self, payload: dict[str, Any], key: str, n: int) -> list[float | None]:
        where = f"ONI judge endpoint {self.endpoint}"
        req = urllib.request.Request(self.endpoint, data=json.dumps(payload).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except (socket.timeout, TimeoutError) as err:
            raise JudgeError(f"{where} did not answer within {self.timeout} s ({err})") from err
        except urllib.error.URLError as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise JudgeError(f"{where} did not answer within {self.timeout} s ({reason})") from err
            raise JudgeError(f"{where} failed: {err}") from err
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise JudgeError(f"{where} answered with a body that is not JSON: {body[:80]!r}") from err
        if not isinstance(data, dict) or key not in data:
            raise JudgeError(f"{where} answered without a {key!r} list: {str(data)[:80]}")
        return check_labels(data[key], n, where)

    def __call__(self, turns: Sequence[Turn]) -> list[float | None]:
        out: list[float | None] = []
        for s in range(0, len(turns), self.batch_size):
            chunk = turns[s:s + self.batch_size]
            out += self._post({"kind": "label", "turns": [t.as_json() for t in chunk]}, "labels", len(chunk))
        return out

    def compare(self, pairs: Sequence[tuple[Turn, Turn]]) -> list[float | None]:
        out: list[float | None] = []
        for s in range(0, len(pairs), self.batch_size):
            chunk = pairs[s:s + self.batch_size]
            out += self._post({"kind": "compare", "pairs": [[a.as_json(), b.as_json()] for a, b in chunk]},
                              "preferences", len(chunk))
        return out
