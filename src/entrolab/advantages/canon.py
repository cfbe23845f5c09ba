"""CANON: conditional advantage estimation (split each group at the median of a metric, inter/intra terms)."""

from __future__ import annotations

import torch

from entrolab.advantages.common import adv_metrics, group_index, require_rewards
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch

METRICS = ("entropy", "length")


@torch.no_grad()
def canon_advantage(rewards_B: torch.Tensor, metric_B: torch.Tensor, group_id_B: torch.Tensor, *, mu: float = 1.0,
                    alpha: float = 1.0, beta: float = 0.0, prefer: str = "low", scale: float = 1.0) -> torch.Tensor:
    """CANON advantage (Chen et al., arXiv 2509.23962; released code, see docs/methods/canon.md).

    Within each group sort by the metric u (stable, ascending) and split at ⌊G/2⌋ into Lo (first
    half) and Hi (rest). With P the preferred half (``prefer``: ``low`` = Lo, ``high`` = Hi) and O
    the other, and ``±β`` = +β on Hi, −β on Lo:

        i ∈ P:  A_i = μ·(α r_i − r̄_O ± β) + (1 − μ)·(r_i − r̄_P)
        i ∈ O:  A_i = μ·(r_i − α r̄_P ± β) + (1 − μ)·(r_i − r̄_O)

    μ weights the inter-group comparison (against the other half), 1 − μ the intra-group one.
    Upstream's entropy variant is ``prefer="low"``, its length variant ``prefer="high"``; with
    α = 1, β = 0, μ = ½ and even G this is Dr.GRPO's ``r − r̄``. Finally ``A ← A·scale``
    (upstream folds ``1/L_max`` in here for seq-mean-token-sum; we keep the default 1 and let the
    aggregation normalise). Groups of fewer than 2 get 0. Ties in u are split by batch order.

    Args:
        rewards_B: [B]; metric_B: [B] per-response metric u; group_id_B: [B].
    """
    if prefer not in ("low", "high"):
        raise ValueError(f"prefer must be 'low' or 'high', got {prefer!r}")
    r = rewards_B.double()
    inv_B, count_K = group_index(group_id_B)
    out = torch.zeros_like(r)
    for k in range(count_K.numel()):
        rows = (inv_B == k).nonzero().squeeze(-1)
        G = rows.numel()
        if G < 2:
            continue
        order = rows[torch.argsort(metric_B[rows].double(), stable=True)]
        lo, hi = order[: G // 2], order[G // 2:]
        P, O = (lo, hi) if prefer == "low" else (hi, lo)
        rP, rO = r[P].mean(), r[O].mean()
        sign_P = 1.0 if prefer == "high" else -1.0  # +β on Hi, −β on Lo
        out[P] = mu * (alpha * r[P] - rO + sign_P * beta) + (1 - mu) * (r[P] - rP)
        out[O] = mu * (r[O] - alpha * rP - sign_P * beta) + (1 - mu) * (r[O] - rO)
    return (out * scale).float()


def response_metric(batch: RolloutBatch, metric: str) -> torch.Tensor:
    """[B] per-response metric: masked mean behaviour entropy, or length in tokens."""
    mask = batch.mask_BT.cpu().float()
    if metric == "length":
        return mask.sum(-1)
    if batch.entropy_BT is None:
        raise ValueError("canon with metric='entropy' needs batch.entropy_BT")
    return (batch.entropy_BT.detach().float().cpu() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@ADVANTAGES.register("canon", paper="Conditional Advantage Estimation for Reinforcement Learning in Large Reasoning "
                     "Models", arxiv="2509.23962")
class CANON:
    """CANON: compare each response with the other half of its group split at the median entropy or length.

    ``prefer`` defaults to upstream's direction for the metric (entropy → low, length → high).
    Logs ``canon/metric_gap`` (mean over groups of mean u(Hi) − mean u(Lo)).
    """

    #: Both halves of a group are compared; a group of one gets A = 0.
    min_group_size = 2

    def __init__(self, *, metric: str = "entropy", mu: float = 1.0, alpha: float = 1.0, beta: float = 0.0,
                 prefer: str | None = None, scale: float = 1.0):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"mu must be in [0, 1], got {mu}")
        prefer = prefer or ("low" if metric == "entropy" else "high")
        if prefer not in ("low", "high"):
            raise ValueError(f"prefer must be 'low' or 'high', got {prefer!r}")
        self.metric, self.mu, self.alpha, self.beta, self.prefer, self.scale = metric, mu, alpha, beta, prefer, scale
        # metric='entropy' reads the behaviour entropies batch.entropy_BT before the update.
        self.requires = frozenset({"old_stats"}) if metric == "entropy" else frozenset()

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        u_B = response_metric(batch, self.metric)
        gid = batch.group_id_B.cpu()
        adv_B = canon_advantage(require_rewards(batch, "canon"), u_B, gid, mu=self.mu, alpha=self.alpha,
                                beta=self.beta, prefer=self.prefer, scale=self.scale)
        inv_B, count_K = group_index(gid)
        gaps = []
        for k in range(count_K.numel()):
            rows = (inv_B == k).nonzero().squeeze(-1)
            if rows.numel() >= 2:
                srt = torch.sort(u_B[rows]).values
                gaps.append(float(srt[rows.numel() // 2:].mean() - srt[: rows.numel() // 2].mean()))
        return adv_B, {**adv_metrics(adv_B), "canon/metric_gap": sum(gaps) / max(1, len(gaps))}
