"""PPO clip activity and the clipping bias.

Paper: "Exploration v.s. Exploitation: Rethinking RLVR through Clipping, Entropy, and Spurious
Reward" (Chen et al., arXiv 2512.16912). No official code exists and the paper's exact definitions
were not readable; the quantities below are our [DERIVED] reading, stated precisely:

* clip fractions: the share of valid tokens whose gradient the clipped surrogate zeroes, split by
  side (upper clip with A > 0, lower clip with A < 0) and the dual clip (A < 0, ratio > c);
* clipping bias: what clipping removes from the policy-gradient token weights. The unclipped
  surrogate A·r has d/dℓ = A·r; the clipped one has A·r on unclipped tokens and 0 on clipped ones.
  So the bias per token is A·r·1[clipped], reported as its mean and as a share of Σ|A·r|;
* entropy shift from clipping: to first order (Entropy Mechanism §1.1, natural-PG form) the update
  changes the entropy by −η·Cov(ℓ, effective weight); clipping changes it by
  +η·Cov(ℓ, A·r·1[clipped]). We report that covariance per unit η (negative: clipping lowers H).
"""

from __future__ import annotations

import math

import torch


def clip_stats(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip_c: float | None = 3.0,
) -> dict[str, float]:
    """Clip fractions and clipping bias of the PPO surrogate max(−A·r, −A·clip(r, 1−ε_lo, 1+ε_hi)).

    Scope: all valid tokens passed in. Ratio r = exp(ℓ − ℓ_old).

    Args:
        logp_BT: [B, T] log-probs under the policy being optimised.
        old_logp_BT: [B, T] log-probs under the behaviour policy.
        adv_BT: [B, T] or [B] advantages.
        mask_BT: [B, T] bool, True = valid.
        eps_low, eps_high: clip range (verl/TRL defaults 0.2; DAPO's clip-higher uses 0.28 high).
        dual_clip_c: dual-clip constant c > 1 for A < 0 (verl default 3), or None for no dual clip.
    Returns: ``clipfrac_low``, ``clipfrac_high``, ``clipfrac_dual``, ``clipfrac`` (their sum),
        ``ratio_mean``, ``bias_mean`` (mean of A·r·1[clipped]), ``bias_abs_share``
        (Σ|A·r|·1[clipped] / Σ|A·r|), ``entropy_shift_per_eta`` (Cov(ℓ, A·r·1[clipped])) and
        ``surrogate_gap`` (mean of A·r − J_clip, the objective value clipping removes).
    """
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if dual_clip_c is not None and dual_clip_c <= 1:
        raise ValueError(f"dual_clip_c must be > 1 (or None), got {dual_clip_c}")
    if adv_BT.dim() == 1:
        adv_BT = adv_BT[:, None].expand_as(logp_BT)
    if not (logp_BT.shape == old_logp_BT.shape == adv_BT.shape == mask_BT.shape):
        raise ValueError("logp_BT, old_logp_BT, adv_BT and mask_BT must share one shape")
    mask = mask_BT.bool()
    logp = logp_BT.detach().double()[mask]
    A = adv_BT.detach().double()[mask]
    r = (logp - old_logp_BT.detach().double()[mask]).exp()
    n = int(mask.sum())
    if n == 0:
        return {"count": 0}
    high = (A > 0) & (r > 1 + eps_high)
    low = (A < 0) & (r < 1 - eps_low)
    dual = (A < 0) & (r > dual_clip_c) if dual_clip_c is not None else torch.zeros_like(low)
    clipped = high | low | dual
    # Surrogate objective (to maximise): min(A r, A clip(r)); dual clip floors it at c·A for A < 0.
    j = torch.minimum(A * r, A * r.clamp(1 - eps_low, 1 + eps_high))
    if dual_clip_c is not None:
        j = torch.where(A < 0, torch.maximum(j, dual_clip_c * A), j)
    w = A * r
    removed = w * clipped
    total_abs = float(w.abs().sum())
    cov = float(((logp - logp.mean()) * (removed - removed.mean())).mean())
    return {
        "count": n,
        "clipfrac_low": float(low.double().mean()),
        "clipfrac_high": float(high.double().mean()),
        "clipfrac_dual": float(dual.double().mean()),
        "clipfrac": float(clipped.double().mean()),
        "ratio_mean": float(r.mean()),
        "bias_mean": float(removed.mean()),
        "bias_abs_share": float(removed.abs().sum()) / total_abs if total_abs > 0 else math.nan,
        "entropy_shift_per_eta": cov,
        "surrogate_gap": float((w - j).mean()),
    }
