"""Deliberately wrong rewards for controlled studies: random, incorrect-only, and a near-miss proxy.

``spurious`` is the random Bernoulli reward of the spurious-reward studies (Shao et al. 2025,
analysed in "Exploration v.s. Exploitation: Rethinking RLVR through Clipping, Entropy, and Spurious
Reward", arXiv 2512.16912): it carries no information about correctness, so any accuracy change
under it comes from the optimiser (clipping bias) and the prior, not from the signal.
"""

from __future__ import annotations

import torch

from entrolab.registry import REWARDS
from entrolab.rewards.verifier import ensure_verdicts
from entrolab.types import Metrics, RolloutBatch, Task

PAPER = "Exploration v.s. Exploitation: Rethinking RLVR through Clipping, Entropy, and Spurious Reward"
ARXIV = "2512.16912"


@REWARDS.register("spurious", paper=PAPER, arxiv=ARXIV)
class SpuriousReward:
    """Random reward ``value ~ Bernoulli(p)`` per completion, independent of the completion.

    Draws come from the reward's own ``torch.Generator`` seeded with ``seed`` (so they do not
    disturb sampling randomness); its state is checkpointed, so a resumed run draws the same values.
    """

    def __init__(self, *, p: float = 0.5, seed: int = 0, value: float = 1.0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p, self.seed, self.value = float(p), int(seed), float(value)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        u_B = torch.rand(batch.batch_size, generator=self.generator)
        return (u_B < self.p).float() * self.value, {}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


@REWARDS.register("incorrect", paper=PAPER, arxiv=ARXIV)
class IncorrectReward:
    """Pays ``value`` for completions the verifier marks wrong, 0 for correct ones (an adversarial reward)."""

    def __init__(self, *, value: float = 1.0, require_answer: bool = True):
        self.value, self.require_answer = float(value), bool(require_answer)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        vals = [self.value if (not v.correct and (v.answer is not None or not self.require_answer)) else 0.0
                for v in ensure_verdicts(batch, task)]
        return torch.tensor(vals, dtype=torch.float32), {}


@REWARDS.register("near_miss", paper="baseline")
class NearMissProxy:
    """A flawed proxy: ``correct_reward`` for correct answers and ``near_miss_reward`` for near misses.

    A near miss is a verdict whose ``reason`` is in ``reasons`` (default ``wrong_value``: a
    well-formed expression over exactly the given numbers that misses the target). Training on it
    while logging the true ``verifier`` (weight 0) is the reward-hacking study of issue 4.
    """

    def __init__(self, *, correct_reward: float = 1.0, near_miss_reward: float = 1.0,
                 reasons: tuple[str, ...] | list[str] = ("wrong_value",)):
        if not reasons:
            raise ValueError("reasons must name at least one verdict reason")
        self.correct_reward, self.near_miss_reward = float(correct_reward), float(near_miss_reward)
        self.reasons = frozenset(reasons)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        verdicts = ensure_verdicts(batch, task)
        near = [(not v.correct) and v.reason in self.reasons for v in verdicts]
        vals = [self.correct_reward if v.correct else (self.near_miss_reward if n else 0.0)
                for v, n in zip(verdicts, near)]
        return torch.tensor(vals, dtype=torch.float32), {"reward/near_miss_frac": sum(near) / max(1, len(near))}
