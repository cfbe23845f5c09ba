"""Shared helpers for advantage estimators: group statistics, whitening, metrics.

Everything here is a pure function over tensors. Groups are given explicitly by ``group_id_B``
(any integer labels; they need not be contiguous or sorted), never by prompt text.
"""

from __future__ import annotations

import torch

from entrolab.types import Metrics, RolloutBatch


def group_index(group_id_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map arbitrary group labels to ``0..K-1``.

    Args:
        group_id_B: [B] integer group label per sequence.

    Returns:
        ``(inv_B, count_K)``: the dense group index of each sequence and the size of each group.
    """
    if group_id_B.dim() != 1:
        raise ValueError(f"group_id_B must be 1-D, got shape {tuple(group_id_B.shape)}")
    _, inv_B, count_K = torch.unique(group_id_B, return_inverse=True, return_counts=True)
    return inv_B, count_K


def group_mean(values_B: torch.Tensor, inv_B: torch.Tensor, count_K: torch.Tensor) -> torch.Tensor:
    """Per-group mean, broadcast back to the sequences: ``[B]``."""
    sum_K = torch.zeros(count_K.shape[0], dtype=values_B.dtype).index_add_(0, inv_B, values_B)
    return (sum_K / count_K.to(values_B.dtype))[inv_B]


def group_std(values_B: torch.Tensor, inv_B: torch.Tensor, count_K: torch.Tensor) -> torch.Tensor:
    """Per-group unbiased (Bessel, N−1) standard deviation broadcast to sequences; 0 for groups of one."""
    mean_B = group_mean(values_B, inv_B, count_K)
    sq_K = torch.zeros(count_K.shape[0], dtype=values_B.dtype).index_add_(0, inv_B, (values_B - mean_B) ** 2)
    denom_K = (count_K - 1).clamp(min=1).to(values_B.dtype)
    return (sq_K / denom_K).sqrt()[inv_B]


def group_is_constant(values_B: torch.Tensor, inv_B: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[B] True where every member of the sequence's group has exactly the same value.

    Used to force an exact zero advantage: ``r - mean(r)`` is not always exactly 0 in floating point
    (e.g. three rewards of 0.1), and dividing that rounding error by ``eps`` would be a large advantage.
    """
    big = torch.finfo(values_B.dtype).max
    max_K = torch.full((num_groups,), -big, dtype=values_B.dtype).scatter_reduce(0, inv_B, values_B, "amax")
    min_K = torch.full((num_groups,), big, dtype=values_B.dtype).scatter_reduce(0, inv_B, values_B, "amin")
    return (max_K == min_K)[inv_B]


def masked_whiten(values_BT: torch.Tensor, mask_BT: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """Whiten over all valid tokens of the batch: ``(x − μ)/sqrt(σ² + eps)``; 0 at masked positions.

    The variance is unbiased (N−1) as in verl's ``masked_whiten``. Statistics scope: every valid
    token of the tensor passed in (the whole rollout batch when called by an estimator). If all
    valid values are equal (or there are fewer than two valid tokens) the result is exactly 0.
    """
    mask = mask_BT.bool()
    out = torch.zeros_like(values_BT)
    vals = values_BT[mask]
    if vals.numel() < 2 or bool(vals.max() == vals.min()):
        return out
    mu = vals.mean()
    var = vals.var(unbiased=True)
    out[mask] = (vals - mu) / torch.sqrt(var + eps)
    return out


def require_rewards(batch: RolloutBatch, who: str) -> torch.Tensor:
    """``batch.rewards_B`` as a float tensor, with a clear error if it is missing or malformed."""
    if batch.rewards_B is None:
        raise ValueError(f"advantage '{who}': batch.rewards_B is None (run the reward stage first)")
    # Advantages are computed on the CPU (cheap, and bit-for-bit repeatable); the trainer moves them back.
    r = batch.rewards_B.detach().to(torch.float32).cpu()
    if r.shape != (batch.batch_size,):
        raise ValueError(f"advantage '{who}': rewards_B has shape {tuple(r.shape)}, expected ({batch.batch_size},)")
    if not torch.isfinite(r).all():
        bad = int((~torch.isfinite(r)).nonzero()[0])
        raise ValueError(f"advantage '{who}': rewards_B[{bad}] = {float(r[bad])} is not finite")
    return r


def adv_metrics(adv: torch.Tensor, mask_BT: torch.Tensor | None = None, *, tol: float = 1e-8) -> Metrics:
    """``adv/mean``, ``adv/std`` (population) and ``adv/zero_frac`` (|A| ≤ tol).

    For a per-sequence ``adv_B`` the statistics are over sequences; for a per-token ``adv_BT`` they
    are over valid tokens (``mask_BT``).
    """
    vals = adv[mask_BT.bool()] if (adv.dim() == 2 and mask_BT is not None) else adv.reshape(-1)
    vals = vals.detach().double()
    if vals.numel() == 0:
        return {"adv/mean": 0.0, "adv/std": 0.0, "adv/zero_frac": 1.0}
    return {
        "adv/mean": float(vals.mean()),
        "adv/std": float(vals.std(unbiased=False)),
        "adv/zero_frac": float((vals.abs() <= tol).double().mean()),
    }


def broadcast_tokens(adv_B: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """[B] sequence advantage → [B, T] on valid tokens, 0 elsewhere."""
    return adv_B[:, None] * mask_BT.to(adv_B.dtype)
