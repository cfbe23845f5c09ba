"""Contrastive Preference Learning (Hejna et al. 2023, arXiv:2310.13639), for language models.

CPL models preferences by the regret of a segment: P(σ⁺ ≻ σ⁻) = σ(S(σ⁺) − S(σ⁻)) with
S(σ) = Σ_t γ^t A*(s_t, a_t), and in maximum-entropy RL A*(s, a) = α log π*(a|s). Substituting
gives a supervised loss in π alone (the CPL objective), with no reference model. For a language
model the segment is the response, γ = 1 (as the authors' code), so S = α·Σ_t log π_θ(y_t | x, y_<t):
the summed log-prob the trainer already hands over (a mean would break the regret model).

The conservative variant ("CPL(λ)", the code's ``contrastive_bias``) down-weights the negative
inside the softmax: −log σ(S⁺ − λ S⁻), λ ∈ (0, 1]. The gradient on the rejected response is λ
times the one on the chosen response, so the loss falls more by raising the chosen response than
by pushing the rejected one down, which stops the negatives' likelihood from being driven to −∞
on finite offline data (the authors' runs use λ = 0.5; λ = 1 is plain CPL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from entrolab.preference.api import PairLogps
from entrolab.preference.losses import implicit_reward_metrics
from entrolab.registry import PREFERENCE_LOSSES

_PAPER = "Contrastive Preference Learning: Learning from Human Feedback without Reinforcement Learning"


def cpl_loss(logp_chosen_B: torch.Tensor, logp_rejected_B: torch.Tensor, label_B: torch.Tensor, *,
             alpha: float = 0.1, lam: float = 0.5) -> torch.Tensor:
    """CPL(λ) with soft labels: −[l log σ(S_w − λ S_l) + (1 − l) log σ(S_l − λ S_w)], S = α·logp.

    The soft form is the authors' ``biased_bce_with_logits`` with the label meaning
    P(chosen ≻ rejected) (their ``y`` means the *second* segment is preferred).

    Args:
        logp_chosen_B, logp_rejected_B: [B] summed response log-probs under the policy.
        label_B: [B] soft labels in [0, 1].
    Returns: [B] per-pair loss.
    """
    s_w, s_l = alpha * logp_chosen_B, alpha * logp_rejected_B
    return -(label_B * F.logsigmoid(s_w - lam * s_l) + (1.0 - label_B) * F.logsigmoid(s_l - lam * s_w))


def cpl_ranked_loss(logp_K: torch.Tensor, score_K: torch.Tensor, *, alpha: float = 0.1,
                    lam: float = 0.5) -> torch.Tensor:
    """Ranked CPL over K scored responses to one prompt: the mean of −log σ(S_j − λ S_i) over every
    ordered pair with score_j > score_i (the authors' ``biased_bce_with_scores``).

    Pairs with equal scores are skipped: upstream sorts by score and keeps the strict upper
    triangle, which orders ties arbitrarily, and it counts pairs as the non-zero loss entries.
    With no strictly ordered pair the loss is 0 (still attached to the graph).

    Args:
        logp_K: [K] summed response log-probs under the policy.
        score_K: [K] the ranking scores (reward, verifier score, ...), higher = better.
    Returns: a 0-dim loss.
    """
    s_K = alpha * logp_K
    better_KK = score_K[None, :] > score_K[:, None]  # [i, j]: response j ranks above response i
    loss_KK = -F.logsigmoid(s_K[None, :] - lam * s_K[:, None])
    n = better_KK.sum()
    return torch.where(better_KK, loss_KK, torch.zeros_like(loss_KK)).sum() / n.clamp(min=1)


def _check(name: str, alpha: float, lam: float) -> None:
    if not alpha > 0:
        raise ValueError(f"{name}: alpha must be > 0, got {alpha}")
    if not 0.0 < lam <= 1.0:
        raise ValueError(f"{name}: lam must be in (0, 1] (1 = plain CPL, < 1 conservative), got {lam}")


@PREFERENCE_LOSSES.register("cpl", paper=_PAPER, arxiv="2310.13639")
class CPL:
    """CPL(λ): −log σ(α Σ log π(y_w) − λ α Σ log π(y_l)), reference-free, soft labels supported."""

    requires_reference = False

    def __init__(self, *, alpha: float = 0.1, lam: float = 0.5) -> None:
        _check("cpl", alpha, lam)
        self.alpha, self.lam = alpha, lam

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        loss_B = cpl_loss(lp.chosen_B, lp.rejected_B, lp.label_B, alpha=self.alpha, lam=self.lam)
        # S = α Σ log π is CPL's implicit optimal-advantage score of a response.
        return loss_B, implicit_reward_metrics(self.alpha * lp.chosen_B, self.alpha * lp.rejected_B)


@PREFERENCE_LOSSES.register("cpl_ranked", paper=_PAPER, arxiv="2310.13639")
class CPLRanked:
    """Ranked CPL: every chosen response of a prompt against every rejected one of the same prompt."""

    requires_reference = False

    def __init__(self, *, alpha: float = 0.1, lam: float = 0.5) -> None:
        _check("cpl_ranked", alpha, lam)
        self.alpha, self.lam = alpha, lam

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        """Per pair i: the mean over the pairs j of its group of −log σ(S_w,i − λ S_l,j).

        The pairs of one prompt (same ``group_B``) are read as two tiers, every chosen response
        ranked above every rejected one, which is what verifier-built pairs are (correct vs
        incorrect); the batch mean is then ``cpl_ranked_loss`` of each prompt, weighted by its pair
        count. Pairs alone in their group, or every pair when ``group_B`` is None, get plain
        ``cpl_loss`` (soft labels allowed there). A cross pair (w_i, l_j) has no label of its own,
        so a group of several pairs with a soft label is an error rather than a guess.
        """
        s_w, s_l = self.alpha * lp.chosen_B, self.alpha * lp.rejected_B
        metrics = implicit_reward_metrics(s_w, s_l)
        if lp.group_B is None:
            return cpl_loss(lp.chosen_B, lp.rejected_B, lp.label_B, alpha=self.alpha, lam=self.lam), metrics
        same_BB = lp.group_B[:, None] == lp.group_B[None, :]
        n_B = same_BB.sum(1)
        soft = (lp.label_B != 1.0) & (n_B > 1)
        if bool(soft.any()):
            i = int(soft.nonzero()[0])
            raise ValueError(f"cpl_ranked: pair at batch row {i} (dataset row {int(lp.index_B[i])}) has soft label "
                             f"{float(lp.label_B[i])} in a group of {int(n_B[i])} pairs; the ranked variant compares "
                             f"responses across pairs and needs hard labels (use 'cpl' for soft labels)")
        loss_BB = -F.logsigmoid(s_w[:, None] - self.lam * s_l[None, :])
        ranked_B = torch.where(same_BB, loss_BB, torch.zeros_like(loss_BB)).sum(1) / n_B
        plain_B = cpl_loss(lp.chosen_B, lp.rejected_B, lp.label_B, alpha=self.alpha, lam=self.lam)
        return torch.where(n_B > 1, ranked_B, plain_B), metrics
