"""A small episodic task for the core multi-turn tests: reach a target with an ``add`` tool, then answer.

Used by dotted path (``counter_env:CounterTask``) so the test does not register it globally.
"""

from __future__ import annotations

import random

from entrolab.agents.env import StepResult, ToolEnv
from entrolab.agents.toolcall import parse_action
from entrolab.types import Prompt, Verdict

CHARSET = "0123456789+-=<>/ :\nabcdefghijklmnopqrstuvwxyz'(),._"


class CounterEnv(ToolEnv):
    tools = ("add",)

    def __init__(self, target: int, seed: int):
        self.target, self.seed, self.total, self.answered = target, seed, 0, None

    def reset(self, prompt: Prompt) -> str:
        return "\n"

    def call_tool(self, name: str, body: str) -> StepResult:
        if not body.isdigit():
            return StepResult("\nbad number\n", 0.0, False, {"useful": False})
        self.total += int(body)
        return StepResult(f"\n={self.total}\n", 0.25 if self.total == self.target else 0.0, False,
                          {"useful": self.total <= self.target})

    def answer(self, body: str) -> StepResult:
        self.answered = body
        return StepResult("", 1.0 if body == str(self.target) else 0.0, True, {})

    def outcome(self) -> Verdict:
        ok = self.answered == str(self.target)
        return Verdict(1.0 if ok else 0.0, ok, self.answered, "ok" if ok else "wrong_value")


class CounterTask:
    """Targets 1–9; the expert adds the target once and answers it."""

    name = "counter"
    answer_marker = None
    max_turns = 3

    def __init__(self, *, n: int = 12, seed: int = 0):
        self.n, self.seed = n, seed

    def prompts(self, split: str) -> list[Prompt]:
        rng = random.Random(f"{self.seed}-{split}")
        return [Prompt(id=f"{split}-{i}", text=f"reach {t}:", meta={"target": t})
                for i, t in enumerate(rng.randint(1, 9) for _ in range(self.n))]

    def make_env(self, prompt: Prompt, *, seed: int) -> CounterEnv:
        return CounterEnv(prompt.meta["target"], seed)

    def episode_demonstration(self, prompt: Prompt, rng: random.Random) -> list[tuple[str, str]]:
        t = prompt.meta["target"]
        return [(f"<add>{t}</add>", f"\n={t}\n"), (f"<answer>{t}</answer>", "")]

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        a = parse_action(completion.rsplit("\n", 1)[-1], ())
        ok = a.kind == "answer" and a.body == str(prompt.meta["target"])
        return Verdict(1.0 if ok else 0.0, ok, a.body, "ok" if ok else "wrong_value")

    def solutions(self, prompt: Prompt):
        return None

    def demonstration(self, prompt: Prompt, rng):
        return None

    def charset(self) -> str:
        return CHARSET
