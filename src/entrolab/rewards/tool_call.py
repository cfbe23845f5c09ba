"""SPEAR's auxiliary tool-call reward, decayed over training (the curriculum's skill-level stage).

Qian et al., arXiv 2509.22601 (released code ``verl/recipe/spear/reward.py``): an episode earns
min(cap, per_call·#tool calls)·λ(t), with λ(t) = (1 + cos(π·t/T))/2 for t ≤ T and 0 after
("cosine"), so tool use is encouraged early and the task reward alone counts later. The count
is ``batch.extras["tool_calls_B"]`` (well-formed tool calls per episode, set by multi-turn
rollouts). An environment may also pay for tool use itself (a fixed per-call reward inside the
episode return); a recipe should use one of the two, not both.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from entrolab.registry import REWARDS
from entrolab.types import Metrics, RolloutBatch, Task

Schedule = Literal["cosine", "constant", "none"]
TOOL_CALLS_KEY = "tool_calls_B"


def tool_reward_weight(step: int, *, decay_steps: int = 200, schedule: Schedule = "cosine") -> float:
    """λ(t): ``cosine`` (1 + cos(π·t/T))/2 for t ≤ T, then 0; ``constant`` 1; ``none`` 0."""
    if schedule == "constant":
        return 1.0
    if schedule == "none":
        return 0.0
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'cosine', 'constant' or 'none', got {schedule!r}")
    if decay_steps <= 0 or step >= decay_steps:
        return 0.0
    return (1.0 + math.cos(math.pi * max(0, step) / decay_steps)) / 2.0


@torch.no_grad()
def tool_call_bonus(tool_calls_B: torch.Tensor, *, per_call: float = 0.1, cap: float = 1.0) -> torch.Tensor:
    """min(cap, per_call·n) per episode, n = its number of tool calls: [B] float32."""
    return (per_call * tool_calls_B.to(torch.float32)).clamp(max=cap)


@REWARDS.register("tool_call", paper="Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive "
                  "Exploration for Agentic Reinforcement Learning", arxiv="2509.22601")
class ToolCallReward:
    """SPEAR's auxiliary tool-call reward min(cap, per_call·#calls), scheduled by step (``batch.step``).

    Args:
        per_call, cap: 0.1 and 1 upstream.
        decay_steps: T of the cosine decay (upstream 200).
        schedule: ``cosine`` (upstream default), ``constant`` or ``none``.
    Metrics: ``reward/tool_call_weight`` (λ at this step), ``reward/tool_calls_mean``.
    """

    def __init__(self, *, per_call: float = 0.1, cap: float = 1.0, decay_steps: int = 200,
                 schedule: Schedule = "cosine"):
        if per_call < 0 or cap < 0:
            raise ValueError(f"per_call and cap must be >= 0, got {per_call}, {cap}")
        if schedule not in ("cosine", "constant", "none"):
            raise ValueError(f"schedule must be 'cosine', 'constant' or 'none', got {schedule!r}")
        self.per_call, self.cap, self.decay_steps, self.schedule = float(per_call), float(cap), int(decay_steps), schedule

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        calls_B = batch.extras.get(TOOL_CALLS_KEY)
        if calls_B is None:
            raise ValueError(f"reward 'tool_call' needs batch.extras[{TOOL_CALLS_KEY!r}] (tool calls per episode), "
                             "which multi-turn episodic tasks set; this batch has none")
        if tuple(calls_B.shape) != (batch.batch_size,):
            raise ValueError(f"batch.extras[{TOOL_CALLS_KEY!r}] has shape {tuple(calls_B.shape)}, "
                             f"expected ({batch.batch_size},)")
        weight = tool_reward_weight(batch.step, decay_steps=self.decay_steps, schedule=self.schedule)
        values_B = tool_call_bonus(calls_B.cpu(), per_call=self.per_call, cap=self.cap) * weight
        return values_B, {"reward/tool_call_weight": weight,
                          "reward/tool_calls_mean": float(calls_B.double().mean()) if calls_B.numel() else 0.0}
