"""Environments for multi-turn agents: the protocol, a tool-calling base class, and episodic tasks.

An **environment** plays one episode::

    obs0 = env.reset(prompt)                  # text shown after the prompt ("" for none)
    result = env.step(action_text)            # -> StepResult(observation, reward, done, info)
    ...                                       # until result.done or the rollout's budget ends
    verdict = env.outcome()                   # the episode's Verdict (success, canonical answer)

``action_text`` is the model's turn, untrusted: environments never raise on it. ``ToolEnv`` parses
it with ``agents.toolcall.parse_action`` (the strict ``<name>body</name>`` format) and dispatches
to ``call_tool`` or ``answer``; a malformed turn becomes an observation telling the model what was
wrong (``info["malformed"]`` True). Rewards are per turn: the rollout places each turn's reward on
the turn's last token (``turn_reward_BT``) and sums them into the episode return.

``info`` keys every environment sets (the rollout counts them per episode):
``tool_call`` (bool, a well-formed tool call), ``malformed`` (bool). Others are the environment's
own (``cost`` for routing, ...), kept in ``Episode.infos``.

An **episodic task** is a registered task (``registry.TASKS``) that also has
``make_env(prompt, *, seed) -> Env`` and ``episode_demonstration(prompt, rng)`` (the expert's
``[(action_text, observation), ...]`` for SFT); ``is_episodic`` tells them apart. Its ``verify``
judges a bare final answer (used by tools that see only text); training and evaluation take the
verdict from ``env.outcome()``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from entrolab.agents.toolcall import Action, parse_action
from entrolab.types import Prompt, Verdict


@dataclass(frozen=True)
class StepResult:
    """What the environment answers to one action."""

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Env(Protocol):
    """One episode's environment (see the module docstring)."""

    tools: tuple[str, ...]

    def reset(self, prompt: Prompt) -> str: ...

    def step(self, action_text: str) -> StepResult: ...

    def outcome(self) -> Verdict: ...


class ToolEnv(ABC):
    """Base class: parses each turn, dispatches well-formed actions, turns malformed ones into feedback.

    Subclasses set ``tools`` and implement ``call_tool(name, body) -> StepResult`` and
    ``answer(body) -> StepResult`` (which should end the episode), ``outcome()``, and ``reset``.
    ``malformed_reward`` is the reward of a malformed turn (0 by default; a format penalty if < 0).
    """

    tools: tuple[str, ...] = ()
    malformed_reward: float = 0.0
    max_body: int = 200

    @abstractmethod
    def reset(self, prompt: Prompt) -> str:
        """See the module docstring."""

    @abstractmethod
    def call_tool(self, name: str, body: str) -> StepResult:
        """See the module docstring."""

    @abstractmethod
    def answer(self, body: str) -> StepResult:
        """See the module docstring."""

    @abstractmethod
    def outcome(self) -> Verdict:
        """See the module docstring."""

    def step(self, action_text: str) -> StepResult:
        action = parse_action(action_text, self.tools, max_body=self.max_body)
        if action.kind == "malformed":
            return StepResult(f"error: {action.error}", self.malformed_reward, False,
                              {"malformed": True, "tool_call": False, "error": action.error})
        result = self.call_tool(action.name, action.body) if action.kind == "tool" else self.answer(action.body)
        info = {"malformed": False, "tool_call": action.kind == "tool", **result.info}
        return StepResult(result.observation, float(result.reward), bool(result.done), info)

    @staticmethod
    def parse(action_text: str, tools: Sequence[str]) -> Action:
        return parse_action(action_text, tools)


def is_episodic(task: Any) -> bool:
    """Whether ``task`` is an episodic (multi-turn) task: it can build environments."""
    return callable(getattr(task, "make_env", None))
