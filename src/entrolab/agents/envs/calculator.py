"""Calculator-tool arithmetic: an episodic task where a calculator makes hard sums easy.

A prompt is a small arithmetic problem that a tiny char-level model cannot work out "in its head"
(2-3 operations on numbers up to 99, e.g. ``37*48+19=?``). The agent may call the ``calc`` tool,
which evaluates its body with the project's own bounded parser (``tasks.expr.parse``, exact
rational arithmetic, never ``eval``), and then answers. One expert episode::

    prompt   37*48+19=?
    turn 0   <calc>37*48+19</calc>        observation  = 1795
    turn 1   <answer>1795</answer>        observation  (none: the episode is over)

Observations of ``calc``: ``= VALUE`` (an integer such as ``-12``, or an exact fraction such as
``7/2``), or ``= error: MESSAGE`` when the body does not evaluate (``cannot parse``,
``bad character``, ``too long (max N)``, ``too deep``, ``number too big``, ``division by zero``).
Messages are built here from the parser's reason code, never from the model's text, so every
character an observation can hold is in :meth:`Calculator.charset`.

Rewards (per turn; the episode return is their sum):

* the answer turn: 1 when the answer is the problem's integer value, 0 otherwise (``answer``
  ends the episode: one answer per episode);
* ``tool_reward`` (default 0) on a turn with a well-formed tool call (a ``<calc>..</calc>``
  action, whether or not its body evaluates), for at most ``tool_reward_cap`` calls per episode
  (default 1). This is SPEAR's auxiliary tool-call reward (arXiv 2509.22601), which pays
  ``min(1, 0.1 * #tool calls)``: the cap keeps the bonus from outgrowing the task reward, since
  an uncapped bonus per call would make calling the tool until the turn budget runs out pay
  more than answering. SPEAR decays this bonus over training (a cosine schedule); that schedule
  is the training method's, not the environment's: each turn's ``info["tool_reward"]`` says
  how much of its reward is the bonus;
* a malformed turn earns 0 and costs a turn.

The turn budget is the rollout's: ``max_turns`` (default 4) is the default of ``rollout.max_turns``,
and an episode that reaches it without an answer stops there (stop reason ``turn_budget``, verdict
``no_answer``). The environment does not end the episode itself, so that the stop is reported as
the budget's, not as the environment's ``done``.
``info["useful"]``: for a tool call, whether its body evaluated without error; for an answer,
whether it is correct; False for a malformed turn.

Demonstrations (``episode_demonstration``) deliberately leave the SFT base model headroom: with
probability ``demo_direct_rate`` (default 0.3, independent of the problem) the expert answers at
once without the tool (the right value: the expert knows it), else it calls ``calc`` on the
prompt's expression and copies the result. A tiny model is not expected to learn 2-3 operation
arithmetic on two-digit numbers from a few thousand examples, so the base model inherits a policy that skips
the tool on about that share of episodes and then mostly answers wrongly; RL gains by moving that
mass onto the tool (and by fixing copy errors).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from entrolab.agents.env import StepResult, ToolEnv
from entrolab.agents.toolcall import format_action
from entrolab.registry import TASKS
from entrolab.tasks.expr import ExprError, format_value, parse
from entrolab.types import Prompt, Verdict

SPLITS = ("train", "validation", "test", "sft")
#: Every printable ASCII character and the newline: the toolcall format's error messages quote
#: parts of the model's own text, so the tokenizer must cover what the model can write.
ASCII_CHARSET = "\n" + "".join(chr(c) for c in range(32, 127))
_PROMPT_SUFFIX = "=?"
_INTEGER = re.compile(r"-?[0-9]{1,30}")
_CALC_ERRORS = {"parse_error": "cannot parse", "bad_char": "bad character", "too_deep": "too deep",
                "big_number": "number too big"}


def last_tag_body(text: str, name: str) -> str | None:
    """The stripped body of the LAST ``<name>body</name>`` in ``text`` (None when there is none).

    Used by the tasks' ``verify`` on a bare transcript; the body may not contain ``<``.
    """
    open_tag, close_tag = f"<{name}>", f"</{name}>"
    end = len(text)
    while True:
        start = text.rfind(open_tag, 0, end)
        if start < 0:
            return None
        body_start = start + len(open_tag)
        close = text.find(close_tag, body_start)
        if close >= 0 and "<" not in text[body_start:close]:
            return text[body_start:close].strip()
        end = start


def check_int(task: str, name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` if it is an int in ``[lo, hi]``; else a ValueError naming the task and key."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{task}: {name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{task}: {name} must be {bound}, got {value}")
    return value


def check_float(task: str, name: str, value: Any, lo: float, hi: float | None = None) -> float:
    """``value`` as a float if it is a finite number in ``[lo, hi]``; else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{task}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def calc_observation(body: str, *, max_chars: int) -> tuple[str, bool]:
    """The ``calc`` tool: ``("= VALUE", True)`` or ``("= error: MESSAGE", False)`` for ``body``."""
    try:
        e = parse(body, max_chars=max_chars, max_depth=4, max_digits=9)
    except ExprError as err:
        msg = f"too long (max {max_chars})" if err.reason == "too_long" else _CALC_ERRORS[err.reason]
        return f"= error: {msg}", False
    if e.value is None:
        return "= error: division by zero", False
    return f"= {format_value(e.value)}", True


def judge_answer(body: str | None, value: int) -> Verdict:
    """Reward 1 when ``body`` is the integer ``value`` (reasons ok/wrong_value/bad_answer/no_answer)."""
    if body is None:
        return Verdict(0.0, False, None, "no_answer")
    if not _INTEGER.fullmatch(body):
        return Verdict(0.0, False, None, "bad_answer")
    answer = int(body)
    ok = answer == value
    return Verdict(1.0 if ok else 0.0, ok, str(answer), "ok" if ok else "wrong_value")


class CalculatorEnv(ToolEnv):
    """One calculator episode (see the module docstring). No randomness: ``seed`` is not needed."""

    tools = ("calc",)

    def __init__(self, value: int, *, tool_reward: float, tool_reward_cap: int, max_expr_chars: int):
        self.value = value
        self.tool_reward, self.tool_reward_cap = tool_reward, tool_reward_cap
        self.max_expr_chars = max_expr_chars
        self.reset(None)

    def reset(self, prompt: Prompt | None) -> str:
        self.rewarded_calls = 0
        self.done = False
        self.verdict = judge_answer(None, self.value)
        return ""

    def call_tool(self, name: str, body: str) -> StepResult:
        obs, ok = calc_observation(body, max_chars=self.max_expr_chars)
        bonus = 0.0
        if self.rewarded_calls < self.tool_reward_cap:
            self.rewarded_calls += 1
            bonus = self.tool_reward
        return StepResult(obs, bonus, False, {"useful": ok, "tool_reward": bonus})

    def answer(self, body: str) -> StepResult:
        self.verdict = judge_answer(body, self.value)
        return StepResult("", self.verdict.reward, True, {"useful": self.verdict.correct})

    def step(self, action_text: str) -> StepResult:
        if self.done:  # the rollout stops at done; a caller that goes on learns so, no exception
            return StepResult("error: the episode is over", 0.0, True,
                              {"malformed": True, "tool_call": False, "useful": False, "tool_reward": 0.0})
        result = super().step(action_text)
        self.done = result.done
        info = {"useful": False, "tool_reward": 0.0, **result.info}
        return StepResult(result.observation, result.reward, result.done, info)

    def outcome(self) -> Verdict:
        return self.verdict


@TASKS.register("calculator", paper="Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive "
                "Exploration for Agentic Reinforcement Learning", arxiv="2509.22601")
class Calculator:
    """Calculator-tool arithmetic as an episodic task (see the module docstring).

    Problems come from one seeded stream: a number of operations uniform in [min_ops, max_ops],
    operands uniform in [min_operand, max_operand], operators uniform over ``ops`` (a subset of
    ``+-*``; the value is then an integer). A draw is kept when its text was not drawn before. The
    first n_test kept problems form ``test``, then ``validation``, ``train`` and ``sft`` (the
    problems the base model's demonstrations use), so splits are disjoint. Ids are
    ``<split>-<index:05d>``; prompts read ``EXPR=?``.

    Args (keyword-only):
        seed: seed of the problem stream.
        min_ops, max_ops: operations per problem (1..4).
        min_operand, max_operand: range of the operands (0..999).
        ops: the operators drawn from (non-empty subset of ``+-*``).
        n_train, n_validation, n_test, n_sft: split sizes.
        max_turns: the default turn budget of the rollout (``rollout.max_turns``).
        tool_reward: SPEAR's auxiliary reward per well-formed tool call (>= 0).
        tool_reward_cap: how many tool calls per episode earn it.
        max_expr_chars: longest ``calc`` body evaluated (longer is ``= error: too long``).
        demo_direct_rate: probability that a demonstration answers without the tool.
    """

    name = "calculator"
    answer_marker = None

    def __init__(self, *, seed: int = 0, min_ops: int = 2, max_ops: int = 3, min_operand: int = 2,
                 max_operand: int = 99, ops: str = "+-*", n_train: int = 2000, n_validation: int = 200,
                 n_test: int = 200, n_sft: int = 2000, max_turns: int = 4, tool_reward: float = 0.0,
                 tool_reward_cap: int = 1, max_expr_chars: int = 40, demo_direct_rate: float = 0.3):
        t = self.name
        self.seed = check_int(t, "seed", seed, 0)
        self.min_ops = check_int(t, "min_ops", min_ops, 1, 4)
        self.max_ops = check_int(t, "max_ops", max_ops, min_ops, 4)
        self.min_operand = check_int(t, "min_operand", min_operand, 0, 999)
        self.max_operand = check_int(t, "max_operand", max_operand, min_operand, 999)
        if not isinstance(ops, str) or not ops or not set(ops) <= set("+-*"):
            raise ValueError(f"{t}: ops must be a non-empty string over '+-*', got {ops!r}")
        self.ops = "".join(sorted(set(ops)))
        self.sizes = {s: check_int(t, f"n_{s}", n, 0) for s, n in
                      (("train", n_train), ("validation", n_validation), ("test", n_test), ("sft", n_sft))}
        self.max_turns = check_int(t, "max_turns", max_turns, 1)
        self.tool_reward = check_float(t, "tool_reward", tool_reward, 0.0)
        self.tool_reward_cap = check_int(t, "tool_reward_cap", tool_reward_cap, 0)
        self.max_expr_chars = check_int(t, "max_expr_chars", max_expr_chars, 1, 200)
        self.demo_direct_rate = check_float(t, "demo_direct_rate", demo_direct_rate, 0.0, 1.0)
        longest = (max_ops + 1) * len(str(max_operand)) + max_ops
        if max_expr_chars < longest:  # the expert's own calls would be refused as too long
            raise ValueError(f"{t}: max_expr_chars must be >= {longest} (the longest problem with max_ops="
                             f"{max_ops}, max_operand={max_operand}), got {max_expr_chars}")
        self._splits: dict[str, list[Prompt]] | None = None

    # ------------------------------------------------------------------ problems
    def _generate(self) -> dict[str, list[Prompt]]:
        rng = random.Random(self.seed)
        total = sum(self.sizes.values())
        kept: list[str] = []
        seen: set[str] = set()
        for _ in range(100 * total + 1000):
            if len(kept) == total:
                break
            k = rng.randint(self.min_ops, self.max_ops)
            nums = [rng.randint(self.min_operand, self.max_operand) for _ in range(k + 1)]
            text = str(nums[0]) + "".join(rng.choice(self.ops) + str(n) for n in nums[1:])
            if text not in seen:
                seen.add(text)
                kept.append(text)
        if len(kept) < total:
            raise ValueError(f"{self.name}: found only {len(kept)} of {total} distinct problems; "
                             "widen the operand range or the number of operations, or ask for fewer")
        out, start = {}, 0
        for split in ("test", "validation", "train", "sft"):
            chunk = kept[start:start + self.sizes[split]]
            start += self.sizes[split]
            out[split] = [Prompt(id=f"{split}-{i:05d}", text=e + _PROMPT_SUFFIX,
                                 meta={"expr": e, "value": int(parse(e, max_chars=100).value)})
                          for i, e in enumerate(chunk)]
        return out

    def prompts(self, split: str) -> list[Prompt]:
        """Prompts of ``split`` (generated on first use, then cached)."""
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if self._splits is None:
            self._splits = self._generate()
        return list(self._splits[split])

    def problem(self, prompt: Prompt) -> tuple[str, int]:
        """(expression, integer value) of ``prompt``, parsed from its text (the text is the problem;
        ``meta`` only repeats it, and a prompt rebuilt from an eval file has none)."""
        expr = prompt.text[:-len(_PROMPT_SUFFIX)] if prompt.text.endswith(_PROMPT_SUFFIX) else ""
        try:
            value = parse(expr, max_chars=100).value if expr else None
        except ExprError:
            value = None
        if value is None or value.denominator != 1:
            raise ValueError(f"{self.name}: prompt {prompt.id!r} is not a calculator problem "
                             f"(expected like '37*48+19=?'): {prompt.text[:80]!r}")
        return expr, int(value)

    # ------------------------------------------------------------------ episodes
    def make_env(self, prompt: Prompt, *, seed: int = 0) -> CalculatorEnv:
        """A fresh environment for ``prompt`` (deterministic: the env draws nothing, ``seed`` is unused)."""
        return CalculatorEnv(self.problem(prompt)[1], tool_reward=self.tool_reward,
                             tool_reward_cap=self.tool_reward_cap, max_expr_chars=self.max_expr_chars)

    def episode_demonstration(self, prompt: Prompt, rng: random.Random) -> list[tuple[str, str]]:
        """The expert: ``calc`` then the copied value, or (rate ``demo_direct_rate``) a direct answer."""
        expr, value = self.problem(prompt)
        final = (format_action("answer", str(value)), "")
        if rng.random() < self.demo_direct_rate:
            return [final]
        obs, _ = calc_observation(expr, max_chars=self.max_expr_chars)
        return [(format_action("calc", expr), obs), final]

    # ------------------------------------------------------------------ Task protocol
    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """Judge the last ``<answer>..</answer>`` of a bare text (reward 1 for the right integer)."""
        return judge_answer(last_tag_body(completion, "answer"), self.problem(prompt)[1])

    def solutions(self, prompt: Prompt) -> list[str]:
        """The one correct answer, as text."""
        return [str(self.problem(prompt)[1])]

    def demonstration(self, prompt: Prompt, rng: Any) -> None:
        """None: an episodic task is imitated through :meth:`episode_demonstration`."""
        return None

    def charset(self) -> str:
        """Printable ASCII and the newline (see ``ASCII_CHARSET``)."""
        return ASCII_CHARSET
