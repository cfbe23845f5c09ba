"""PEAR: phase entropy aware reward (penalise thinking-phase entropy relative to answer-phase entropy)."""

from __future__ import annotations

import torch

from entrolab.registry import SHAPERS
from entrolab.rewards.segments import phase_ranges
from entrolab.rewards.verifier import ensure_verdicts
from entrolab.types import Metrics, RolloutBatch, Task


def phase_mean_entropies(batch: RolloutBatch, marker: str | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean token entropy of the thinking and answer phase of every completion.

    The marker tokens themselves and EOS are excluded (PEAR: "excluding the </think> token"). An
    empty phase has mean 0 (no marker ⇒ answer phase empty ⇒ H̄_ans = 0, as in the paper).

    Returns:
        ``(h_think_B, h_ans_B, n_inexact)``; the last is how many rows used the approximate
        char→token mapping (see ``rewards.segments``).
    """
    if batch.entropy_BT is None:
        raise ValueError("pear needs batch.entropy_BT (behaviour-policy token entropies)")
    ent_BT = batch.entropy_BT.detach().float().cpu()
    think, ans, inexact = [], [], 0
    for i in range(batch.batch_size):
        ph = phase_ranges(batch, i, marker)
        inexact += not ph.exact
        think.append(float(ent_BT[i, ph.think.start:ph.think.stop].mean()) if len(ph.think) else 0.0)
        ans.append(float(ent_BT[i, ph.answer.start:ph.answer.stop].mean()) if len(ph.answer) else 0.0)
    return torch.tensor(think), torch.tensor(ans), inexact


def pear_penalty(h_think_B: torch.Tensor, h_ans_B: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    """PEAR phase-entropy penalty ``P(y) = max(0, H̄_think − α·H̄_ans)`` (arXiv 2510.08026).

    Args:
        h_think_B, h_ans_B: [B] mean token entropy of the thinking / answer phase.
        alpha: weight of the answer-phase entropy (the paper's ablation found α = 1 best).
    """
    return (h_think_B - alpha * h_ans_B).clamp(min=0.0)


@SHAPERS.register("pear", paper="Phase Entropy Aware Reward for Efficient Reasoning", arxiv="2510.08026")
class PEAR:
    """Subtract ``coef · max(0, H̄_think − α·H̄_ans)`` from the reward of correct completions.

    The paper's reward is ``min(1, s − P)`` for correct answers and ``r_fmt`` otherwise; as a
    shaper, the incoming reward plays the role of ``s``/``r_fmt`` and only correct completions
    (``Verdict.correct``) are penalised. ``floor`` optionally keeps shaped correct rewards from
    dropping below a value (e.g. the wrong-answer reward; whether upstream clamps is unverified).
    Phases are split at the task's ``answer_marker``; entropies are the behaviour policy's
    (``batch.entropy_BT``, detached).
    """

    name = "pear"

    #: Reads the behaviour entropies batch.entropy_BT before the update.
    requires = frozenset({"old_stats"})

    def __init__(self, *, alpha: float = 1.0, coef: float = 1.0, floor: float | None = None,
                 correct_only: bool = True):
        if coef < 0:
            raise ValueError(f"coef must be >= 0, got {coef}")
        self.alpha, self.coef, self.floor, self.correct_only = float(alpha), float(coef), floor, bool(correct_only)

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        h_think_B, h_ans_B, inexact = phase_mean_entropies(batch, getattr(task, "answer_marker", None))
        pen_B = pear_penalty(h_think_B, h_ans_B, alpha=self.alpha)
        if self.correct_only:
            correct_B = torch.tensor([v.correct for v in ensure_verdicts(batch, task)], dtype=torch.bool)
            pen_B = torch.where(correct_B, pen_B, torch.zeros_like(pen_B))
        out_B = rewards_B - self.coef * pen_B
        if self.floor is not None:
            out_B = torch.where(pen_B > 0, out_B.clamp(min=float(self.floor)), out_B)
        n = max(1, batch.batch_size)
        return out_B, {
            "pear/think_entropy": float(h_think_B.mean()) if batch.batch_size else 0.0,
            "pear/answer_entropy": float(h_ans_B.mean()) if batch.batch_size else 0.0,
            "pear/penalty": float(pen_B.mean()) if batch.batch_size else 0.0,
            "pear/approx_split_frac": inexact / n,
        }
