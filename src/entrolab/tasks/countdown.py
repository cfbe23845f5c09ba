"""The Countdown task: reach a target with + - * / using each given number exactly once.

Setup after Stream of Search (SoS): Learning to Search in Language (arXiv 2404.03683), scaled
down for char-level models trained from scratch on CPU (DESIGN.md §6).

Formats (every character is a token, so they are compact):

* prompt: the numbers separated by spaces, ``>``, the target, ``:`` -- e.g. ``3 5 7>56:``.
* completion: a scratchpad of step equations separated by ``,``, the answer marker (default
  ``#``), then the answer expression -- e.g. ``3+5=8,7*8=56#7*(3+5)``. No EOS (the tokenizer
  adds it). The scratchpad is never checked; only the answer is.

The verifier reads the text after the FIRST marker, so the answer phase starts exactly where
thinking-phase/answer-phase statistics split it; a second marker inside the answer is a
``bad_char``. Reason codes, in the order they are checked: ``no_answer`` (no marker),
``too_long``, ``bad_char``, ``big_number``, ``parse_error``, ``too_deep`` (see ``expr.parse``), then
``unknown_number`` (a literal not among the given numbers), ``reused_number`` (a given number
used more often than given), ``missing_number`` (a given number left unused), ``div_by_zero``,
``wrong_value``, ``ok``. Reward is 1.0 for ``ok`` and 0.0 otherwise; every parsed answer, right
or wrong, carries its canonical text so answer-level entropy can be computed.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Any

from entrolab.registry import TASKS
from entrolab.tasks import enumeration
from entrolab.tasks.expr import ALIASES, ExprError, parse, steps
from entrolab.types import Prompt, Verdict

SPLITS = ("train", "validation", "test", "sft")
_PROMPT_RE = re.compile(r"(\d+(?: \d+)*)>(\d+):")
# Characters that prompts and completions use for their own structure; the marker may not
# contain any of them (or an operator alias), or splitting a completion would be ambiguous.
_RESERVED = frozenset("0123456789+-*/()=,>: ") | frozenset(ALIASES)


def format_prompt(numbers: list[int] | tuple[int, ...], target: int) -> str:
    """``[3, 5, 7], 56`` → ``"3 5 7>56:"``."""
    return " ".join(str(n) for n in numbers) + f">{target}:"


def parse_prompt(text: str) -> tuple[tuple[int, ...], int]:
    """Inverse of :func:`format_prompt`; raises ValueError naming the text if it is malformed."""
    m = _PROMPT_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a countdown prompt (expected like '3 5 7>56:'): {text[:80]!r}")
    return tuple(int(x) for x in m.group(1).split()), int(m.group(2))


def check_numbers(used: tuple[int, ...], given: tuple[int, ...]) -> str | None:
    """The reason code if ``used`` is not exactly the multiset ``given``, else None."""
    have, need = Counter(used), Counter(given)
    if any(n not in need for n in have):
        return "unknown_number"
    if any(have[n] > need[n] for n in have):
        return "reused_number"
    if have != need:
        return "missing_number"
    return None


def zipf_weights(n: int, *, skew: float = 1.0) -> list[float]:
    """Normalised Zipf weights ``p_i ∝ (i+1)^-skew`` for ranks ``i = 0..n-1`` (skew 0 = uniform)."""
    w = [(i + 1) ** -skew for i in range(n)]
    total = sum(w)
    return [x / total for x in w]


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"countdown: {name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"countdown: {name} must be {bound}, got {value}")
    return value


@TASKS.register("countdown", paper="Stream of Search (SoS): Learning to Search in Language", arxiv="2404.03683")
class Countdown:
    """Countdown arithmetic with exact verification, enumerable solutions and skewed demos.

    Problems are drawn from one seeded stream: a count of numbers uniform in
    [min_numbers, max_numbers], operands uniform in [min_operand, max_operand], a target
    uniform in [min_target, max_target]; a draw is kept when its (number multiset, target)
    was not drawn before and it has between min_solutions and max_solutions distinct
    canonical solutions. The first n_test kept problems form ``test``, the next n_validation
    ``validation``, then ``train``, then ``sft``, so splits are disjoint and ``test`` does not
    depend on the other sizes. Ids are ``<split>-<index:05d>``. The optional ``sft`` split holds
    the problems a testbed base model imitates, so RL on ``train`` sees problems the base model
    never saw demonstrated (as in real RLVR) instead of re-rewarding memorised ones.

    Args (keyword-only):
        seed: seed of the problem stream.
        min_numbers, max_numbers: how many numbers a problem gives (2..5).
        min_operand, max_operand: range of the given numbers.
        min_target, max_target: range of the targets.
        min_solutions, max_solutions: accepted range of the number of canonical solutions.
        n_train, n_validation, n_test, n_sft: split sizes (``n_sft`` = 0: no ``sft`` split).
        demo_skew: Zipf exponent for choosing which solution a demonstration shows, over the
            solutions sorted as strings (rank 0 = smallest string); 0 = uniform.
        answer_marker: separates scratchpad and answer.
        max_answer_chars: longest answer the verifier parses (longer is ``too_long``).
        max_depth: deepest parenthesis nesting the verifier accepts (deeper is ``too_deep``).
    """

    name = "countdown"

    def __init__(self, *, seed: int = 0, min_numbers: int = 3, max_numbers: int = 4,
                 min_operand: int = 1, max_operand: int = 9, min_target: int = 10,
                 max_target: int = 60, min_solutions: int = 1, max_solutions: int = 24,
                 n_train: int = 2000, n_validation: int = 200, n_test: int = 200, n_sft: int = 0,
                 demo_skew: float = 1.0, answer_marker: str = "#", max_answer_chars: int = 64,
                 max_depth: int = 8):
        self.seed = _int("seed", seed, 0)
        self.min_numbers = _int("min_numbers", min_numbers, 2, 5)
        self.max_numbers = _int("max_numbers", max_numbers, min_numbers, 5)
        self.min_operand = _int("min_operand", min_operand, 0)
        self.max_operand = _int("max_operand", max_operand, min_operand, 999)
        self.min_target = _int("min_target", min_target, 0)
        self.max_target = _int("max_target", max_target, min_target)
        self.min_solutions = _int("min_solutions", min_solutions, 1)
        self.max_solutions = _int("max_solutions", max_solutions, min_solutions)
        self.sizes = {"train": _int("n_train", n_train, 0), "validation": _int("n_validation", n_validation, 0),
                      "test": _int("n_test", n_test, 0), "sft": _int("n_sft", n_sft, 0)}
        if isinstance(demo_skew, bool) or not isinstance(demo_skew, (int, float)) \
                or not math.isfinite(demo_skew) or demo_skew < 0:
            raise ValueError(f"countdown: demo_skew must be a finite number >= 0, got {demo_skew!r}")
        self.demo_skew = float(demo_skew)
        if not isinstance(answer_marker, str) or not answer_marker:
            raise ValueError(f"countdown: answer_marker must be a non-empty string, got {answer_marker!r}")
        bad = sorted(set(answer_marker) & _RESERVED)
        if bad:
            raise ValueError(f"countdown: answer_marker {answer_marker!r} uses reserved characters {bad}")
        self.answer_marker = answer_marker
        self.max_answer_chars = _int("max_answer_chars", max_answer_chars, 1, 10_000)
        self.max_depth = _int("max_depth", max_depth, 0, 100)  # bounds the parser's recursion
        self._splits: dict[str, list[Prompt]] | None = None
        self._solutions: dict[tuple[tuple[int, ...], int], list[str]] = {}

    # ------------------------------------------------------------------ problems
    def _problem(self, prompt: Prompt) -> tuple[tuple[int, ...], int]:
        meta = prompt.meta or {}
        if "numbers" in meta and "target" in meta:
            return tuple(int(n) for n in meta["numbers"]), int(meta["target"])
        return parse_prompt(prompt.text)  # e.g. a prompt rebuilt from an eval file

    def _count(self, key: tuple[tuple[int, ...], int]) -> list[str]:
        if key not in self._solutions:
            self._solutions[key] = enumeration.solutions(key[0], key[1])
        return self._solutions[key]

    def _generate(self) -> dict[str, list[Prompt]]:
        rng = random.Random(self.seed)
        order = ("test", "validation", "train", "sft")
        total = sum(self.sizes.values())
        kept: list[tuple[tuple[int, ...], int]] = []
        seen: set[tuple[tuple[int, ...], int]] = set()
        max_draws = 200 * total + 10_000
        for _ in range(max_draws):
            if len(kept) == total:
                break
            k = rng.randint(self.min_numbers, self.max_numbers)
            numbers = tuple(rng.randint(self.min_operand, self.max_operand) for _ in range(k))
            target = rng.randint(self.min_target, self.max_target)
            key = (tuple(sorted(numbers)), target)
            if key in seen:
                continue
            seen.add(key)
            n_sol = len(self._count(key))
            if self.min_solutions <= n_sol <= self.max_solutions:
                kept.append((numbers, target))
            else:
                self._solutions.pop(key, None)  # keep the cache to problems we use
        if len(kept) < total:
            raise ValueError(
                f"countdown: found only {len(kept)} of {total} distinct problems with "
                f"{self.min_solutions}..{self.max_solutions} solutions in {max_draws} draws; "
                "widen the operand/target ranges or the solution range, or ask for fewer problems")
        out: dict[str, list[Prompt]] = {}
        start = 0
        for split in order:
            chunk = kept[start:start + self.sizes[split]]
            start += self.sizes[split]
            out[split] = [
                Prompt(id=f"{split}-{i:05d}", text=format_prompt(nums, tgt),
                       meta={"numbers": list(nums), "target": tgt,
                             "n_solutions": len(self._count((tuple(sorted(nums)), tgt)))})
                for i, (nums, tgt) in enumerate(chunk)]
        return out

    def prompts(self, split: str) -> list[Prompt]:
        """Prompts of ``split`` (generated on first use, then cached)."""
        if split not in SPLITS:
            raise ValueError(f"countdown: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if self._splits is None:
            self._splits = self._generate()
        return list(self._splits[split])

    # ------------------------------------------------------------------ verifier
    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """Judge the expression after the first answer marker (see the module docstring)."""
        numbers, target = self._problem(prompt)
        _, marker, answer = completion.partition(self.answer_marker)
        if not marker:
            return Verdict(0.0, False, None, "no_answer")
        try:
            e = parse(answer, max_chars=self.max_answer_chars, max_depth=self.max_depth)
        except ExprError as err:
            return Verdict(0.0, False, None, err.reason)
        reason = check_numbers(e.numbers, numbers)
        if reason is None:
            if e.value is None:
                reason = "div_by_zero"
            else:
                reason = "ok" if e.value == target else "wrong_value"
        ok = reason == "ok"
        return Verdict(1.0 if ok else 0.0, ok, e.text, reason)

    def solutions(self, prompt: Prompt) -> list[str]:
        """Every distinct canonical solution, sorted as strings (cached per problem)."""
        numbers, target = self._problem(prompt)
        return list(self._count((tuple(sorted(numbers)), target)))

    # ------------------------------------------------------------------ demonstrations
    def demo_distribution(self, prompt: Prompt) -> dict[str, float]:
        """The exact probability with which :meth:`demonstration` shows each solution."""
        sols = self.solutions(prompt)
        return dict(zip(sols, zipf_weights(len(sols), skew=self.demo_skew)))

    def demonstration(self, prompt: Prompt, rng: random.Random) -> str | None:
        """Scratchpad steps + marker + a solution drawn with Zipf(demo_skew) over sorted solutions."""
        sols = self.solutions(prompt)
        if not sols:
            return None
        pick = rng.choices(sols, weights=zipf_weights(len(sols), skew=self.demo_skew))[0]
        return ",".join(steps(parse(pick, max_chars=10_000, max_depth=100))) + self.answer_marker + pick

    def charset(self) -> str:
        """Digits, operators, parentheses, ``=,>:``, space and the marker's characters."""
        return "".join(sorted(set("0123456789+-*/()=,>: ") | set(self.answer_marker)))
