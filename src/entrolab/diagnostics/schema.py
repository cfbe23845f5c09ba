"""The framework-agnostic rollout schema: one JSON object per line, one sample per line.

Anyone's rollout dump (verl validation dumps, TRL completion logs, our own trainer) is mapped to
this schema, and every diagnostic reads the same internal form. The schema is documented field by
field in ``docs/diagnostics.md``; :data:`REQUIRED` and :data:`OPTIONAL` below are the source of truth.

A malformed line fails with ``<file>:<line>: <what is wrong>``; an unknown key is an error (with the
closest valid key), so a typo such as ``entropy`` for ``entropies`` cannot silently disable a
section. Free-form extras go under ``meta``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from entrolab.registry import did_you_mean

#: Required keys and what they hold.
REQUIRED: dict[str, str] = {
    "prompt_id": "stable prompt identifier (string or integer), equal across models for the same prompt",
    "run": "model / run label (e.g. 'base', 'grpo')",
    "step": "training step of the policy that sampled this completion (integer >= 0)",
    "completion": "the completion text",
    "reward": "scalar reward the run trained on (finite number)",
    "correct": "verifier verdict (true/false)",
    "answer": "canonical form of the extracted final answer, or null when nothing parsed",
}

#: Optional keys; a missing optional key only disables the report sections that need it.
OPTIONAL: dict[str, str] = {
    "logprobs": "per-token log-probs of the completion under the sampling policy (list of numbers)",
    "entropies": "per-token full-vocabulary entropies at sampling time (list of numbers)",
    "phase_split": "index of the first answer-phase token; tokens before it are the scratchpad",
    "advantage": "advantage of this sample (number, or a per-token list)",
    "policy_logprobs": "per-token log-probs under the policy being optimised (for clipping stats)",
    "ref_logprobs": "per-token log-probs under the reference / base model (for KL)",
    "difficulty": "difficulty bucket of the prompt (string or integer)",
    "solutions": "every correct canonical answer of the prompt, when enumerable (list of strings)",
    "rewards": "scores of further reward functions, {name: number} (STARC, preference cycles)",
    "reward_delta": "reward perturbation the run was trained with (policy cliff)",
    "er": "hidden-state effective rank of this response (see diagnostics.rank)",
    "erv": "effective-rank velocity of this response",
    "era": "effective-rank acceleration of this response",
    "meta": "free-form object, ignored by the diagnostics",
}

_TOKEN_LISTS = ("logprobs", "entropies", "policy_logprobs", "ref_logprobs")


class RolloutFormatError(ValueError):
    """A rollout file does not follow the schema; the message names the file and line."""


@dataclass(frozen=True)
class Sample:
    """One completion, validated. Token lists share one length T when several are given."""

    prompt_id: str
    run: str
    step: int
    completion: str
    reward: float
    correct: bool
    answer: str | None
    logprobs: tuple[float, ...] | None = None
    entropies: tuple[float, ...] | None = None
    phase_split: int | None = None
    advantage: float | tuple[float, ...] | None = None
    policy_logprobs: tuple[float, ...] | None = None
    ref_logprobs: tuple[float, ...] | None = None
    difficulty: str | None = None
    solutions: tuple[str, ...] | None = None
    rewards: dict[str, float] = field(default_factory=dict)
    reward_delta: float | None = None
    er: float | None = None
    erv: float | None = None
    era: float | None = None

    @property
    def num_tokens(self) -> int | None:
        """Completion length in tokens, when any per-token list is present."""
        for name in _TOKEN_LISTS:
            seq = getattr(self, name)
            if seq is not None:
                return len(seq)
        if isinstance(self.advantage, tuple):
            return len(self.advantage)
        return None


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'{key}' must be a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value):
        raise ValueError(f"'{key}' must be finite, got {value}")
    return float(value)


def _number_list(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise ValueError(f"'{key}' must be a list of numbers, got {type(value).__name__}")
    return tuple(_number(v, f"{key}[{i}]") for i, v in enumerate(value))


def _label(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"'{key}' must be a string or integer, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise ValueError(f"'{key}' must not be empty")
    return text


def parse_sample(obj: Any) -> Sample:
    """Validate one decoded JSON object against the schema and return a :class:`Sample`.

    Raises ``ValueError`` naming the offending key; :func:`read_rollouts` adds file and line.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in REQUIRED and key not in OPTIONAL:
            valid = [*REQUIRED, *OPTIONAL]
            raise ValueError(f"unknown key '{key}'.{did_you_mean(key, valid)} (put extra data under 'meta')")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"missing required key(s): {', '.join(missing)}")
    step = obj["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"'step' must be an integer >= 0, got {step!r}")
    if not isinstance(obj["completion"], str):
        raise ValueError("'completion' must be a string")
    correct = obj["correct"]
    if correct in (0, 1) and not isinstance(correct, float):
        correct = bool(correct)
    if not isinstance(correct, bool):
        raise ValueError(f"'correct' must be true/false (or 0/1), got {correct!r}")
    answer = obj["answer"]
    if answer is not None and not isinstance(answer, str):
        raise ValueError(f"'answer' must be a string or null, got {type(answer).__name__}")

    lists = {k: _number_list(obj[k], k) for k in _TOKEN_LISTS if obj.get(k) is not None}
    advantage: float | tuple[float, ...] | None = None
    if obj.get("advantage") is not None:
        adv = obj["advantage"]
        advantage = _number_list(adv, "advantage") if isinstance(adv, list) else _number(adv, "advantage")
        if isinstance(advantage, tuple):
            lists["advantage"] = advantage
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-token lists have different lengths: {lengths}")
    split = obj.get("phase_split")
    if split is not None:
        if isinstance(split, bool) or not isinstance(split, int) or split < 0:
            raise ValueError(f"'phase_split' must be an integer >= 0, got {split!r}")
        if lengths and split > next(iter(lengths.values())):
            raise ValueError(f"'phase_split' = {split} is past the completion's {next(iter(lengths.values()))} tokens")
    solutions = obj.get("solutions")
    if solutions is not None:
        if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
            raise ValueError("'solutions' must be a list of strings")
        solutions = tuple(solutions)
    rewards = obj.get("rewards") or {}
    if not isinstance(rewards, dict):
        raise ValueError("'rewards' must be an object {name: number}")
    rewards = {str(k): _number(v, f"rewards.{k}") for k, v in rewards.items()}
    opt_num = {k: (_number(obj[k], k) if obj.get(k) is not None else None) for k in ("reward_delta", "er", "erv", "era")}
    if obj.get("meta") is not None and not isinstance(obj["meta"], dict):
        raise ValueError("'meta' must be an object")
    return Sample(
        prompt_id=_label(obj["prompt_id"], "prompt_id"),
        run=_label(obj["run"], "run"),
        step=step,
        completion=obj["completion"],
        reward=_number(obj["reward"], "reward"),
        correct=correct,
        answer=answer,
        logprobs=lists.get("logprobs"),
        entropies=lists.get("entropies"),
        phase_split=split,
        advantage=advantage,
        policy_logprobs=lists.get("policy_logprobs"),
        ref_logprobs=lists.get("ref_logprobs"),
        difficulty=None if obj.get("difficulty") is None else _label(obj["difficulty"], "difficulty"),
        solutions=solutions,
        rewards=rewards,
        **opt_num,
    )


def iter_rollouts(path: Path | str) -> Iterator[Sample]:
    """Yield the samples of a JSONL rollout file; blank lines are skipped.

    Raises :class:`RolloutFormatError` as ``<path>:<line>: <reason>`` on the first bad line.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise RolloutFormatError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
            try:
                yield parse_sample(obj)
            except ValueError as err:
                raise RolloutFormatError(f"{path}:{lineno}: {err}") from None


def read_rollouts(path: Path | str) -> list[Sample]:
    """Read and validate a whole JSONL rollout file (see :func:`iter_rollouts`)."""
    samples = list(iter_rollouts(path))
    if not samples:
        raise RolloutFormatError(f"{path}: no samples (the file is empty)")
    return samples


def sample_to_json(sample: Sample) -> dict[str, Any]:
    """The JSON object for ``sample`` (inverse of :func:`parse_sample`; None fields left out)."""
    out: dict[str, Any] = {}
    for key in (*REQUIRED, *OPTIONAL):
        if key == "meta":
            continue
        value = getattr(sample, key)
        if value is None or (key == "rewards" and not value):
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
