"""The entropy discriminator S = p·(H + log p) and its per-step statistics.

Paper: "On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models" (Wang et
al., arXiv 2602.03392). Raising the logit of token k by ε changes
the entropy by −ε·S_k + O(ε²): rewarding a token with S_k > 0 (confident: log p_k > −H) lowers the
entropy, rewarding a token with S_k < 0 (rare) raises it.
"""

from __future__ import annotations

import math

import torch


def entropy_discriminator(logp_BT: torch.Tensor, entropy_BT: torch.Tensor) -> torch.Tensor:
    """S = p·(H + log p) per token (Entropy Dynamics §7.1), from the sampled token's log-prob ℓ and
    the full-vocabulary entropy H at that position.

    Args:
        logp_BT: [B, T] log-probs of the sampled tokens.
        entropy_BT: [B, T] entropies of the distributions they were sampled from.
    Returns: [B, T] float64 discriminator values (padding positions are not masked out).
    """
    if logp_BT.shape != entropy_BT.shape:
        raise ValueError(f"logp_BT {tuple(logp_BT.shape)} and entropy_BT {tuple(entropy_BT.shape)} differ in shape")
    logp = logp_BT.detach().double()
    return logp.exp() * (entropy_BT.detach().double() + logp)


def expected_discriminator(logits_V: torch.Tensor) -> torch.Tensor:
    """E_{j∼π}[S_j] = Σ_j p_j²(H + log p_j) over the vocabulary (the baseline in Entropy Dynamics'
    GRPO step ΔH ≈ −ηA·(S_k − E_π[S]); Clip_V's "nec" under our reading).

    Args:
        logits_V: [..., V] logits.
    Returns: [...] float64.
    """
    logp = torch.log_softmax(logits_V.double(), dim=-1)
    p = logp.exp()
    H = -(p * logp).sum(-1, keepdim=True)
    return (p * p * (H + logp)).sum(-1)


def discriminator_stats(
    S_BT: torch.Tensor,
    adv_BT: torch.Tensor | None,
    mask_BT: torch.Tensor,
    *,
    clip_b_mu: float = 2.5,
) -> dict[str, float]:
    """Statistics of S over the valid tokens of one step's batch.

    Returns ``mean``, ``std`` (population, as Clip_B uses), ``frac_pos`` (fraction with S > 0),
    and, when advantages are given, ``mean_adv_pos`` / ``mean_adv_neg`` (mean S over tokens with
    A > 0 / A < 0) and ``clip_b_frac``: the fraction of valid tokens that Clip_B would
    drop, i.e. A < 0 and S − mean(S) < −μ·std(S). Scope: the tokens passed in.

    Args:
        S_BT: [B, T] discriminator values (:func:`entropy_discriminator`).
        adv_BT: [B, T] or [B] advantages, or None.
        mask_BT: [B, T] bool, True = valid.
        clip_b_mu: Clip_B's μ (default 2.5, the released value).
    """
    mask = mask_BT.bool()
    S = S_BT.double()[mask]
    if S.numel() == 0:
        return {"count": 0}
    mean, std = float(S.mean()), float(S.std(unbiased=False))
    out = {"count": int(S.numel()), "mean": mean, "std": std, "frac_pos": float((S > 0).double().mean())}
    if adv_BT is not None:
        if adv_BT.dim() == 1:
            adv_BT = adv_BT[:, None].expand_as(S_BT)
        A = adv_BT.double()[mask]
        pos, neg = A > 0, A < 0
        out["mean_adv_pos"] = float(S[pos].mean()) if pos.any() else math.nan
        out["mean_adv_neg"] = float(S[neg].mean()) if neg.any() else math.nan
        # Clip_B keeps everything when the spread is degenerate.
        dropped = neg & (S - mean < -clip_b_mu * std) if std >= 1e-12 else torch.zeros_like(neg)
        out["clip_b_frac"] = float(dropped.double().mean())
    return out
