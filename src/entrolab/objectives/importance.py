"""Importance-ratio variants: GSPO (sequence-level ratio) and CISPO (clipped, detached IS weight)."""

from __future__ import annotations

import torch

from entrolab.objectives._util import check_positive, frac, zero_invalid
from entrolab.objectives.surrogates import check_clip, ratio_metrics, unpack
from entrolab.registry import SURROGATES
from entrolab.types import Metrics, PolicyInputs

#: GSPO's sequence log-ratio is clamped to ±10 before exp (verl clamps at +10 in log space).
SEQ_LOG_RATIO_CLAMP = 10.0


def gspo_loss(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO-token loss (Zheng et al., "Group Sequence Policy Optimization", arXiv 2507.18071, Eq. 7 and 13).

    Sequence ratio s_i = exp((1/|o_i|) Σ_t δ_{i,t}), the geometric mean of the token ratios.
    Per token s_{i,t} = sg[s_i] · π_θ(o_t) / sg[π_θ(o_t)] (value s_i, gradient s_i ∇log π_θ(o_t)),
        L_{i,t} = max(−A_{i,t} s_{i,t}, −A_{i,t} clip(s_{i,t}, 1−ε_low, 1+ε_high)).
    Aggregated with ``seq_mean_token_mean`` and a sequence-constant A this is exactly GSPO
    (the mean over tokens of s_i ∇log π_θ is ∇s_i); other aggregations weight sequences by length.

    Args:
        logp_BT, old_logp_BT, adv_BT, mask_BT: [B, T]; padded entries must already be finite.
    Returns:
        loss_BT and [B, T] masks ``clip_low`` / ``clip_high`` (the whole sequence's tokens when
        its ratio is clipped with the advantage's sign) plus ``seq_ratio_B``.
    """
    len_B = mask_BT.sum(-1).clamp(min=1).to(logp_BT.dtype)
    delta_BT = zero_invalid(logp_BT - old_logp_BT, mask_BT)
    log_s_B = (delta_BT.sum(-1) / len_B).clamp(-SEQ_LOG_RATIO_CLAMP, SEQ_LOG_RATIO_CLAMP)
    s_BT = torch.exp(log_s_B.detach()[:, None] + logp_BT - logp_BT.detach())
    unclipped_BT = -adv_BT * s_BT
    clipped_BT = -adv_BT * s_BT.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss_BT = torch.maximum(unclipped_BT, clipped_BT)
    s_B = log_s_B.detach().exp()
    s_BT_val = s_B[:, None].expand_as(adv_BT)
    return loss_BT, {
        "clip_low": (adv_BT < 0) & (s_BT_val < 1.0 - eps_low),
        "clip_high": (adv_BT > 0) & (s_BT_val > 1.0 + eps_high),
        "seq_ratio_B": s_B,
    }


def cispo_loss(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    *,
    eps_low: float = 1.0,
    eps_high: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CISPO loss (MiniMax-M1, arXiv 2506.13585, Eq. 4-5): −sg[clip(r, 1−ε_low, 1+ε_high)] · A · log π_θ.

    Unlike PPO no token loses its gradient: the IS weight is clipped and detached, and the
    REINFORCE term always flows. Returns (loss_BT, detached ratio_BT).
    """
    ratio_BT = torch.exp((logp_BT - old_logp_BT).detach().clamp(-20.0, 20.0))
    weight_BT = ratio_BT.clamp(1.0 - eps_low, 1.0 + eps_high)
    return -weight_BT * adv_BT * logp_BT, ratio_BT


@SURROGATES.register("gspo", paper="Group Sequence Policy Optimization", arxiv="2507.18071")
class GSPO:
    """GSPO: PPO clipping on the length-normalised sequence ratio (GSPO-token form).

    Args:
        eps_low, eps_high: clip range of the sequence ratio (paper: 3e-4 and 4e-4).
    Metrics: ``policy/clipfrac_low`` / ``policy/clipfrac_high`` (fraction of valid tokens whose
    sequence ratio is clipped), ``policy/seq_ratio_mean`` (mean s_i over non-empty sequences),
    ``policy/approx_kl``, ``policy/ratio_mean`` (token level).
    """

    def __init__(self, *, eps_low: float = 3e-4, eps_high: float = 4e-4):
        check_clip(eps_low, eps_high, None)
        self.eps_low, self.eps_high = float(eps_low), float(eps_high)

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        logp_BT, old_logp_BT, adv_BT, mask_BT = unpack(inp)
        loss_BT, aux = gspo_loss(logp_BT, old_logp_BT, adv_BT, mask_BT, eps_low=self.eps_low, eps_high=self.eps_high)
        nonempty_B = mask_BT.any(-1)
        n_seq = int(nonempty_B.sum())
        seq_mean = float(aux["seq_ratio_B"][nonempty_B].sum()) / n_seq if n_seq else 1.0
        return zero_invalid(loss_BT, mask_BT), {
            "policy/clipfrac_low": frac(aux["clip_low"], mask_BT),
            "policy/clipfrac_high": frac(aux["clip_high"], mask_BT),
            "policy/seq_ratio_mean": seq_mean,
            **ratio_metrics(logp_BT, old_logp_BT, mask_BT),
        }


@SURROGATES.register("cispo", paper="MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention",
                     arxiv="2506.13585")
class CISPO:
    """CISPO: REINFORCE weighted by a clipped, detached importance ratio.

    Args:
        eps_low: the IS weight's floor is 1−eps_low. MiniMax-M1 sets no lower bound: default 1.0.
        eps_high: the ceiling is 1+eps_high. Default 4.0, i.e. a cap of 5 as ScaleRL
            (arXiv 2510.13786) recommends; TRL's ``epsilon_high`` is this cap itself (5.0).
    Metrics: ``policy/clipfrac_low`` / ``policy/clipfrac_high`` (fraction of valid tokens whose IS
    weight was clipped from below / above), ``policy/approx_kl``, ``policy/ratio_mean``.
    """

    def __init__(self, *, eps_low: float = 1.0, eps_high: float = 4.0):
        check_clip(eps_low, eps_high, None)
        check_positive("eps_high", eps_high)
        self.eps_low, self.eps_high = float(eps_low), float(eps_high)

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        logp_BT, old_logp_BT, adv_BT, mask_BT = unpack(inp)
        loss_BT, ratio_BT = cispo_loss(logp_BT, old_logp_BT, adv_BT, eps_low=self.eps_low, eps_high=self.eps_high)
        return zero_invalid(loss_BT, mask_BT), {
            "policy/clipfrac_low": frac(ratio_BT < 1.0 - self.eps_low, mask_BT),
            "policy/clipfrac_high": frac(ratio_BT > 1.0 + self.eps_high, mask_BT),
            **ratio_metrics(logp_BT, old_logp_BT, mask_BT),
        }

