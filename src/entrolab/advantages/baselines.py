"""Baseline advantage estimators: GRPO, Dr.GRPO, RLOO, REINFORCE++ and REINFORCE++-baseline.

Call contract: ``estimator(batch) -> (adv_B or adv_BT, metrics)``; groups come from
``batch.group_id_B``. All advantages are computed without gradient.

Edge cases shared by the group estimators (all differ on purpose from verl, which for a group of
one sets mean 0 / std 1 and so returns the raw score ``A = r``):

* a group of one gives ``A = 0`` (there is nothing to compare against);
* a group whose rewards are all exactly equal gives ``A = 0`` exactly (no rounding residue);
* the result is never NaN (rewards must be finite; a non-finite reward is an error).
"""

from __future__ import annotations

import torch

from entrolab.advantages.common import (
    adv_metrics,
    broadcast_tokens,
    group_index,
    group_is_constant,
    group_mean,
    group_std,
    masked_whiten,
    require_rewards,
)
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch


# --------------------------------------------------------------------------- pure functions
@torch.no_grad()
def grpo_advantage(
    rewards_B: torch.Tensor, group_id_B: torch.Tensor, *, eps: float = 1e-6, scale_by_std: bool = True
) -> torch.Tensor:
    """GRPO group-relative advantage (DeepSeekMath, arXiv 2402.03300, §4.1.2).

    ``A_i = (r_i − mean_g r) / (std_g r + eps)`` with the unbiased (N−1) group std;
    ``scale_by_std=False`` gives Dr.GRPO's ``A_i = r_i − mean_g r``.

    Args:
        rewards_B: [B] scalar rewards.
        group_id_B: [B] group label of each sequence.
        eps: added to the std (verl uses 1e-6, TRL 1e-4).
        scale_by_std: divide by the group std.

    Returns:
        adv_B: [B]; 0 for groups of one and for groups whose rewards are all equal.
    """
    r = rewards_B.to(torch.float32)
    inv_B, count_K = group_index(group_id_B)
    adv_B = r - group_mean(r, inv_B, count_K)
    if scale_by_std:
        adv_B = adv_B / (group_std(r, inv_B, count_K) + eps)
    # Exact zeros for degenerate groups (see module docstring): a group of one is constant too.
    return torch.where(group_is_constant(r, inv_B, count_K.shape[0]), torch.zeros_like(adv_B), adv_B)


@torch.no_grad()
def rloo_advantage(rewards_B: torch.Tensor, group_id_B: torch.Tensor) -> torch.Tensor:
    """RLOO leave-one-out advantage (Ahmadian et al., arXiv 2402.14740).

    ``A_i = r_i − (1/(G−1)) Σ_{j≠i} r_j = G/(G−1) · (r_i − mean_g r)``.

    Args:
        rewards_B: [B] scalar rewards.
        group_id_B: [B] group label of each sequence.

    Returns:
        adv_B: [B]; 0 for groups of one (no other sample to form the baseline).
    """
    r = rewards_B.to(torch.float32)
    inv_B, count_K = group_index(group_id_B)
    n_B = count_K[inv_B].to(r.dtype)
    centred_B = r - group_mean(r, inv_B, count_K)
    adv_B = centred_B * n_B / (n_B - 1).clamp(min=1)
    return torch.where(group_is_constant(r, inv_B, count_K.shape[0]), torch.zeros_like(adv_B), adv_B)


@torch.no_grad()
def reinforce_pp_advantage(
    rewards_B: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    kl_BT: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    whiten_eps: float = 1e-8,
) -> torch.Tensor:
    """REINFORCE++ token advantage (Hu, arXiv 2501.03262).

    Token rewards ``c_t = r·1[t = last valid] − β·KL_t``; return-to-go ``R_t = Σ_{s≥t} c_s`` (γ = 1);
    then global whitening over all valid tokens of the batch, ``(R − μ)/sqrt(σ² + 1e-8)``.

    Args:
        rewards_B: [B] scalar outcome rewards.
        mask_BT: [B, T] True = valid completion token.
        kl_BT: [B, T] per-token KL estimate to the reference (k1: ``old_logp − ref_logp``), or None.
        kl_coef: β; the KL term is used only when β > 0.
        whiten_eps: added to the variance.

    Returns:
        adv_BT: [B, T], 0 at masked positions.
    """
    m = mask_BT.to(torch.float32)
    c_BT = torch.zeros_like(m)
    lengths_B = mask_BT.sum(-1)
    has_tok = lengths_B > 0
    rows = torch.nonzero(has_tok).squeeze(-1)
    # The outcome reward sits on the last valid token (masks are right-padded).
    c_BT[rows, lengths_B[rows] - 1] = rewards_B.to(torch.float32)[rows]
    if kl_coef > 0:
        if kl_BT is None:
            raise ValueError("reinforce_pp: kl_coef > 0 needs kl_BT (reference log-probs)")
        c_BT = c_BT - kl_coef * kl_BT.to(torch.float32) * m
    # Reverse cumulative sum = return-to-go; masked positions carry zero reward so they add nothing.
    ret_BT = torch.flip(torch.cumsum(torch.flip(c_BT * m, [-1]), -1), [-1]) * m
    return masked_whiten(ret_BT, mask_BT, eps=whiten_eps)


@torch.no_grad()
def reinforce_pp_baseline_advantage(
    rewards_B: torch.Tensor, group_id_B: torch.Tensor, mask_BT: torch.Tensor, *, whiten_eps: float = 1e-8
) -> torch.Tensor:
    """REINFORCE++-baseline (Hu, arXiv 2501.03262): group-mean baseline, then batch token whitening.

    ``A_i = r_i − mean_g r`` broadcast to the tokens of response i, then ``(A − μ)/sqrt(σ² + eps)``
    over all valid tokens of the batch (so long responses weigh more in μ, σ).

    Args:
        rewards_B: [B]; group_id_B: [B]; mask_BT: [B, T] True = valid.

    Returns:
        adv_BT: [B, T], 0 at masked positions.
    """
    centred_B = grpo_advantage(rewards_B, group_id_B, scale_by_std=False)
    return masked_whiten(broadcast_tokens(centred_B, mask_BT), mask_BT, eps=whiten_eps)


# --------------------------------------------------------------------------- registered estimators
@ADVANTAGES.register("grpo", paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
                     arxiv="2402.03300")
class GRPO:
    """GRPO: group mean/std normalised outcome reward, broadcast to tokens by the trainer."""

    #: Group-relative: with one sample per prompt the advantage is always 0 (see build_components).
    min_group_size = 2

    def __init__(self, *, eps: float = 1e-6, scale_by_std: bool = True):
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)
        self.scale_by_std = bool(scale_by_std)

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        adv_B = grpo_advantage(require_rewards(batch, "grpo"), batch.group_id_B.cpu(), eps=self.eps,
                               scale_by_std=self.scale_by_std)
        return adv_B, adv_metrics(adv_B)


@ADVANTAGES.register("dr_grpo", paper="Understanding R1-Zero-Like Training: A Critical Perspective",
                     arxiv="2503.20783")
class DrGRPO:
    """Dr.GRPO: group-mean baseline without std division (pair with a constant-normaliser aggregation)."""

    #: Group-relative: with one sample per prompt the advantage is always 0 (see build_components).
    min_group_size = 2

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        adv_B = grpo_advantage(require_rewards(batch, "dr_grpo"), batch.group_id_B.cpu(), scale_by_std=False)
        return adv_B, adv_metrics(adv_B)


@ADVANTAGES.register("rloo", paper="Back to Basics: Revisiting REINFORCE Style Optimization for Learning from "
                     "Human Feedback in LLMs", arxiv="2402.14740")
class RLOO:
    """RLOO: reward minus the mean reward of the other members of the group."""

    #: Group-relative: with one sample per prompt the advantage is always 0 (see build_components).
    min_group_size = 2

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        adv_B = rloo_advantage(require_rewards(batch, "rloo"), batch.group_id_B.cpu())
        return adv_B, adv_metrics(adv_B)


@ADVANTAGES.register("reinforce_pp", paper="REINFORCE++: A Simple and Efficient Approach for Aligning Large "
                     "Language Models", arxiv="2501.03262")
class ReinforcePP:
    """REINFORCE++: return-to-go of outcome reward (minus β·KL in the reward), batch-whitened over tokens."""

    def __init__(self, *, kl_coef: float = 0.0, whiten_eps: float = 1e-8):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.kl_coef = float(kl_coef)
        self.whiten_eps = float(whiten_eps)
        # Reference and behaviour log-probs (before the update) are needed only for the KL-in-reward term.
        self.requires = frozenset({"ref_logp", "old_stats"}) if self.kl_coef > 0 else frozenset()

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        r = require_rewards(batch, "reinforce_pp")
        kl_BT = None
        if self.kl_coef > 0:
            if batch.ref_logp_BT is None or batch.old_logp_BT is None:
                raise ValueError("reinforce_pp: kl_coef > 0 needs batch.old_logp_BT and batch.ref_logp_BT")
            kl_BT = (batch.old_logp_BT - batch.ref_logp_BT).float().cpu()  # k1 estimator, as in verl's token-KL reward
        adv_BT = reinforce_pp_advantage(r, batch.mask_BT.cpu(), kl_BT=kl_BT, kl_coef=self.kl_coef,
                                        whiten_eps=self.whiten_eps)
        return adv_BT, adv_metrics(adv_BT, batch.mask_BT.cpu())


@ADVANTAGES.register("reinforce_pp_baseline", paper="REINFORCE++: A Simple and Efficient Approach for Aligning "
                     "Large Language Models", arxiv="2501.03262")
class ReinforcePPBaseline:
    """REINFORCE++-baseline: group-mean baseline, then whitening over all valid tokens of the batch."""

    #: Group-relative: with one sample per prompt the advantage is always 0 (see build_components).
    min_group_size = 2

    def __init__(self, *, whiten_eps: float = 1e-8):
        self.whiten_eps = float(whiten_eps)

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        adv_BT = reinforce_pp_baseline_advantage(require_rewards(batch, "reinforce_pp_baseline"),
                                                 batch.group_id_B.cpu(), batch.mask_BT.cpu(),
                                                 whiten_eps=self.whiten_eps)
        return adv_BT, adv_metrics(adv_BT, batch.mask_BT.cpu())


@ADVANTAGES.register("raw", paper="baseline")
class RawReward:
    """Raw reward as the advantage, ``A_i = r_i`` (no baseline).

    Plain REINFORCE; also for rewards that already are advantages, such as the JEPO leave-one-out
    form of the ``likelihood`` reward.
    """

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        adv_B = require_rewards(batch, "raw").clone()
        return adv_B, adv_metrics(adv_B)
