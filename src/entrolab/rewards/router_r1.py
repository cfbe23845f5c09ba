"""Router-R1's rule-based reward for multi-turn routing episodes: format + outcome + cost.

Router-R1 (Zhang, Feng, You, arXiv 2506.09033, §3 "reward curation") rewards a routing episode with

    r = R_format + (1 − α)·R_outcome + α·R_cost

* ``R_format`` is 0 for a well-formed episode and −1 otherwise, and the reward is **hierarchical**:
  a format failure nullifies the other two terms, so a malformed episode gets exactly −1.
* ``R_outcome`` is exact match of the final answer (1 or 0).
* ``R_cost`` rewards cheap episodes: the episode's total model cost mapped to [0, 1], 1 = free.
* α (``cost_weight``) trades performance for cost.

Two details follow the authors' released code (``verl/utils/reward_score/qa_em.py``,
``compute_score_em``): the cost term is paid only to **correct** answers (a wrong answer with a
valid format gets 0, whatever it cost), so cheapness is never bought with wrong answers; set
``cost_if_wrong`` to pay it always. Where we deliberately differ: the released code normalises the
cost by a rolling window of the last 1000 episodes (square root, then 5th-95th percentile
min-max), a window shared by the training and validation reward managers and updated sample by
sample, so a sample's reward depends on which episodes came before it in the same batch and on
validation runs. Here the normalisation is fixed, ``c = min(C / cost_scale, 1)`` with
``R_cost = 1 − c``, so the reward is a pure function of the episode (identical in training and
evaluation, and resumes exactly without extra state).
"""

from __future__ import annotations

import math

import torch

from entrolab.registry import REWARDS
from entrolab.types import Metrics, RolloutBatch, Task


# --------------------------------------------------------------------------- pure functions
@torch.no_grad()
def router_r1_reward(format_ok_B: torch.Tensor, correct_B: torch.Tensor, cost_B: torch.Tensor, *,
                     cost_weight: float = 0.0, cost_scale: float = 1.0, format_penalty: float = -1.0,
                     cost_if_wrong: bool = False) -> torch.Tensor:
    """Router-R1's hierarchical reward (arXiv 2506.09033, §3; cost gating from the released code).

    ``r = format_penalty`` when the format fails, else ``(1 − α)·R_outcome + α·R_cost·g`` with
    ``R_cost = 1 − min(C/cost_scale, 1)`` and ``g = R_outcome`` (or 1 with ``cost_if_wrong``).

    Args:
        format_ok_B: [B] bool, the episode is well-formed (no malformed turn, ended by an answer).
        correct_B: [B] bool, the final answer is right (``R_outcome``).
        cost_B: [B] float ≥ 0, the episode's total model cost ``C``.
        cost_weight: α in [0, 1].
        cost_scale: the cost that maps to ``R_cost = 0`` (> 0); costs above it are clipped.
        format_penalty: ``R_format`` of a malformed episode (−1 in the paper).
        cost_if_wrong: pay the cost term to wrong answers too (the released code does not).

    Returns:
        rewards_B: [B] float32.
    """
    outcome_B = correct_B.to(torch.float32)
    r_cost_B = 1.0 - (cost_B.to(torch.float32) / cost_scale).clamp(0.0, 1.0)
    gate_B = torch.ones_like(outcome_B) if cost_if_wrong else outcome_B
    valid_B = (1.0 - cost_weight) * outcome_B + cost_weight * r_cost_B * gate_B
    return torch.where(format_ok_B.to(torch.bool), valid_B, torch.full_like(valid_B, format_penalty))


def episode_cost(infos: list[dict], *, key: str = "cost", where: str = "episode") -> float:
    """Sum of ``info[key]`` over an episode's turns (a turn without the key costs 0).

    Raises ValueError naming ``where`` and the turn when a cost is not a finite number ≥ 0.
    """
    total = 0.0
    for t, info in enumerate(infos):
        c = info.get(key, 0.0)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            raise ValueError(f"{where}, turn {t}: info[{key!r}] = {c!r} is not a finite number >= 0")
        total += float(c)
    return total


# --------------------------------------------------------------------------- registered reward
@REWARDS.register("router_r1", paper="Router-R1: Teaching LLMs Multi-Round Routing and Aggregation via "
                  "Reinforcement Learning", arxiv="2506.09033")
class RouterR1Reward:
    """Router-R1's format + outcome + cost reward of a multi-turn episode (needs an episodic task).

    Reads, per episode b: ``batch.extras["malformed_B"]`` (format), ``batch.extras["episodes"][b]``
    (``stop`` must be ``done`` when ``require_answer``; total cost = Σ ``infos[t]["cost"]``),
    ``batch.verdicts[b].correct`` (outcome). ``cost_scale`` None takes the task's
    ``max_episode_cost`` (routing: the priciest model on every turn but the answer's).
    Logs ``reward/router_r1_format_ok``, ``reward/router_r1_correct``, ``reward/router_r1_cost``
    (mean normalised cost c), ``reward/router_r1_cost_raw`` (mean C).
    """

    def __init__(self, *, cost_weight: float = 0.0, cost_scale: float | None = None,
                 format_penalty: float = -1.0, cost_if_wrong: bool = False, require_answer: bool = True):
        if not 0.0 <= cost_weight <= 1.0:
            raise ValueError(f"router_r1: cost_weight must be in [0, 1], got {cost_weight}")
        if cost_scale is not None and not cost_scale > 0:
            raise ValueError(f"router_r1: cost_scale must be > 0 or None, got {cost_scale}")
        self.cost_weight, self.cost_scale = float(cost_weight), cost_scale
        self.format_penalty, self.cost_if_wrong = float(format_penalty), bool(cost_if_wrong)
        self.require_answer = bool(require_answer)

    def _scale(self, task: Task | None) -> float:
        if self.cost_scale is not None:
            return float(self.cost_scale)
        scale = getattr(task, "max_episode_cost", None)
        if not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"router_r1: set cost_scale, or use a task with a max_episode_cost > 0 "
                             f"(task {getattr(task, 'name', task)!r} has {scale!r})")
        return float(scale)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        B = batch.batch_size
        episodes, malformed_B = batch.extras.get("episodes"), batch.extras.get("malformed_B")
        if episodes is None or malformed_B is None:
            raise ValueError("router_r1 needs multi-turn episodes (batch.extras['episodes'] and "
                             "['malformed_B']): use it with an episodic task such as 'routing'")
        if len(episodes) != B or malformed_B.shape != (B,):
            raise ValueError(f"router_r1: {len(episodes)} episodes and malformed_B of shape "
                             f"{tuple(malformed_B.shape)} for a batch of {B} rows")
        if batch.verdicts is None or len(batch.verdicts) != B:
            raise ValueError("router_r1: the batch needs one verdict per episode (batch.verdicts)")
        cost_B = torch.tensor([episode_cost(ep.infos, where=f"router_r1: episode {b}")
                               for b, ep in enumerate(episodes)])  # floats: float32
        answered_B = torch.tensor([ep.stop == "done" or not self.require_answer for ep in episodes],
                                  dtype=torch.bool)
        format_ok_B = (malformed_B == 0) & answered_B
        correct_B = batch.correct_B
        scale = self._scale(task)
        rewards_B = router_r1_reward(format_ok_B, correct_B, cost_B, cost_weight=self.cost_weight,
                                     cost_scale=scale, format_penalty=self.format_penalty,
                                     cost_if_wrong=self.cost_if_wrong)
        mean = (lambda t: float(t.to(torch.float32).mean())) if B else (lambda t: 0.0)
        return rewards_B, {"reward/router_r1_format_ok": mean(format_ok_B),
                           "reward/router_r1_correct": mean(correct_B),
                           "reward/router_r1_cost": mean((cost_B / scale).clamp(max=1.0)),  # C >= 0 is checked
                           "reward/router_r1_cost_raw": mean(cost_B)}
