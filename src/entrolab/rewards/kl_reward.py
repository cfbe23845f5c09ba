"""KL to the reference policy as a reward penalty (the InstructGPT / PPO-RLHF placement).

"Training language models to follow instructions with human feedback" (Ouyang et al., arXiv
2203.02155), Eq. 2: R(x, y) = r(x, y) − β · log(π(y|x) / π_ref(y|x)). With the behaviour log-probs of
the sampled tokens, log π(y|x)/π_ref(y|x) = Σ_t δ_t with δ_t = log π_old(o_t) − log π_ref(o_t), so the
k1 estimator summed over the sequence is the textbook penalty; k2/k3 are offered as the low-variance
alternatives (``kl_estimate`` in ``objectives/kl.py`` is the shared math). The penalty enters the reward
*before* advantages, so it carries no gradient of its own: it changes which samples the update favours,
unlike the ``kl_to_ref`` regularizer, which adds β·k_t to the loss (DeepSeekMath Eq. 3). Note that with
group-normalised advantages (GRPO) a penalty only matters through its differences within a group.
"""

from __future__ import annotations

import torch

from entrolab.objectives.kl import ESTIMATORS, kl_estimate
from entrolab.registry import SHAPERS
from entrolab.types import Metrics, RolloutBatch, Task


def sequence_kl(old_logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, mask_BT: torch.Tensor, *,
                estimator: str = "k1") -> torch.Tensor:
    """Σ_t k(δ_t) over the valid tokens of each sequence → [B]."""
    k_BT = kl_estimate(old_logp_BT.float(), ref_logp_BT.float(), estimator=estimator)
    return (k_BT * mask_BT.to(k_BT.dtype)).sum(-1)


@SHAPERS.register("kl_in_reward", paper="Training language models to follow instructions with human feedback",
                  arxiv="2203.02155")
class KLInReward:
    """Subtract β · Σ_t k(log π_old − log π_ref) from each sequence's reward (k1 by default)."""

    requires = frozenset({"ref_logp", "old_stats"})  # KL(π_old ‖ π_ref) from batch.old_logp_BT

    def __init__(self, *, beta: float = 0.05, estimator: str = "k1"):
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.beta, self.estimator = float(beta), estimator

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        if batch.ref_logp_BT is None or batch.old_logp_BT is None:
            raise ValueError("kl_in_reward needs batch.old_logp_BT and batch.ref_logp_BT "
                             "(the trainer computes ref_logp because this shaper requires it)")
        kl_B = sequence_kl(batch.old_logp_BT, batch.ref_logp_BT, batch.mask_BT.to(batch.old_logp_BT.device),
                           estimator=self.estimator).to(rewards_B.device)
        return rewards_B - self.beta * kl_B, {"kl/reward_penalty": float((self.beta * kl_B).mean()),
                                              "kl/seq_kl": float(kl_B.mean())}
