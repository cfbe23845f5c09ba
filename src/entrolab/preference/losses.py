"""Pairwise preference losses (``PREFERENCE_LOSSES``); the contract is in ``preference/api.py``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from entrolab.preference.api import PairLogps
from entrolab.registry import PREFERENCE_LOSSES


def dpo_loss(h_chosen_B: torch.Tensor, h_rejected_B: torch.Tensor, label_B: torch.Tensor, *,
             beta: float = 0.1) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, arXiv:2305.18290, Eq. 7) with soft labels.

    z = β (h_w − h_l); loss = −[l log σ(z) + (1 − l) log σ(−z)], l = P(chosen ≻ rejected).
    With l = 1 this is the paper's −log σ(β (h_w − h_l)). ``logsigmoid`` keeps it finite for large |z|.

    Args:
        h_chosen_B, h_rejected_B: [B] policy − reference sequence log-probs.
        label_B: [B] soft labels in [0, 1].
    Returns: [B] per-pair loss.
    """
    z_B = beta * (h_chosen_B - h_rejected_B)
    return -(label_B * F.logsigmoid(z_B) + (1.0 - label_B) * F.logsigmoid(-z_B))


def implicit_reward_metrics(r_chosen_B: torch.Tensor, r_rejected_B: torch.Tensor) -> dict[str, float]:
    """Implicit-reward margin and accuracy (detached), logged by every reference-based loss."""
    r_w, r_l = r_chosen_B.detach().float(), r_rejected_B.detach().float()
    return {"pref/reward_chosen": float(r_w.mean()), "pref/reward_rejected": float(r_l.mean()),
            "pref/margin": float((r_w - r_l).mean()), "pref/accuracy": float((r_w > r_l).float().mean())}


@PREFERENCE_LOSSES.register("dpo", paper="Direct Preference Optimization: Your Language Model is Secretly a "
                            "Reward Model", arxiv="2305.18290")
class DPO:
    """DPO's sigmoid loss −log σ(β[h(y_w) − h(y_l)]) (soft labels supported)."""

    requires_reference = True

    def __init__(self, *, beta: float = 0.1) -> None:
        if beta <= 0:
            raise ValueError(f"dpo: beta must be > 0, got {beta}")
        self.beta = beta

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        h_w, h_l = lp.log_ratios()
        loss_B = dpo_loss(h_w, h_l, lp.label_B, beta=self.beta)
        return loss_B, implicit_reward_metrics(self.beta * h_w, self.beta * h_l)
