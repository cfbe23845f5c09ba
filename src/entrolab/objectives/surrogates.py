"""Basic policy surrogates: REINFORCE and the PPO clipped surrogate (clip-higher, dual clip).

Contract: ``surrogate(inp: PolicyInputs) -> (loss_BT, metrics)``. ``loss_BT`` is the per-token
loss to *minimise* (0 at padded positions); the aggregation turns it into a scalar.
Token statistics in the metrics are over the valid tokens of the micro-batch.
"""

from __future__ import annotations

import torch

from entrolab.objectives._util import (
    LOG_RATIO_CLAMP,
    as_bool_mask,
    check_positive,
    check_same_shape,
    expand_adv,
    fmean,
    frac,
    zero_invalid,
)
from entrolab.registry import SURROGATES
from entrolab.types import Metrics, PolicyInputs


def log_ratio(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, *, clamp: float = LOG_RATIO_CLAMP) -> torch.Tensor:
    """δ = clamp(log π_θ − log π_old, ±clamp): the log importance ratio, safe to exponentiate."""
    return (logp_BT - old_logp_BT).clamp(-clamp, clamp)


def approx_kl_k3(log_ratio_BT: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_old ‖ π_θ) on samples from π_old: (r − 1) − log r ≥ 0.

    Schulman, "Approximating KL Divergence" (2020): unbiased and always non-negative.
    """
    return torch.expm1(log_ratio_BT) - log_ratio_BT


def reinforce_loss(logp_BT: torch.Tensor, adv_BT: torch.Tensor) -> torch.Tensor:
    """REINFORCE per-token loss −A·log π_θ(o_t) (Williams 1992; GPG in verl).

    Gradient −A·∇log π_θ: the score-function estimator with a (group) baseline folded into A.
    """
    return -adv_BT * logp_BT


def ppo_clip_loss(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip_c: float | None = None,
    clamp: float = LOG_RATIO_CLAMP,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate with clip-higher and optional dual clip, per token.

    PPO (Schulman et al. 2017, Eq. 7), written as a loss:
        L = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)),   r = exp(δ), δ clamped to ±clamp.
    Clip-higher (DAPO, arXiv 2503.14476, Eq. 10) uses ε_high > ε_low. Dual clip (Ye et al. 2020,
    arXiv 1912.09729, Eq. 5) caps the loss of negative-advantage tokens at −c·A (c > 1):
        L ← min(L, −c·A)  where A < 0.

    Args:
        logp_BT: log π_θ of the sampled tokens [B, T] (carries gradient).
        old_logp_BT: behaviour log-probs [B, T] (detached).
        adv_BT: advantages [B, T].
    Returns:
        ``loss_BT`` and boolean [B, T] masks ``clip_low`` (A<0, r<1−ε_low: gradient zeroed by the
        lower bound), ``clip_high`` (A>0, r>1+ε_high), ``clip_dual`` (A<0, dual bound active), and
        the ratio ``ratio_BT``.
    """
    delta_BT = log_ratio(logp_BT, old_logp_BT, clamp=clamp)
    ratio_BT = torch.exp(delta_BT)
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * ratio_BT.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss_BT = torch.maximum(unclipped_BT, clipped_BT)
    with torch.no_grad():
        r = ratio_BT.detach()
        clip_low = (adv_BT < 0) & (r < 1.0 - eps_low)
        clip_high = (adv_BT > 0) & (r > 1.0 + eps_high)
        clip_dual = torch.zeros_like(clip_low)
    if dual_clip_c is not None:
        cap_BT = -dual_clip_c * adv_BT
        neg = adv_BT < 0
        with torch.no_grad():
            clip_dual = neg & (loss_BT.detach() > cap_BT)
        loss_BT = torch.where(neg, torch.minimum(loss_BT, cap_BT), loss_BT)
    return loss_BT, {"clip_low": clip_low, "clip_high": clip_high, "clip_dual": clip_dual, "ratio_BT": ratio_BT}


def ratio_metrics(logp_BT, old_logp_BT, mask_BT, *, clamp: float = LOG_RATIO_CLAMP) -> Metrics:
    """``policy/approx_kl`` (k3 of old vs new) and ``policy/ratio_mean`` over valid tokens."""
    with torch.no_grad():
        delta = log_ratio(logp_BT.detach(), old_logp_BT, clamp=clamp)
        return {"policy/approx_kl": fmean(approx_kl_k3(delta), mask_BT), "policy/ratio_mean": fmean(delta.exp(), mask_BT)}


def unpack(inp: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated (logp_BT, old_logp_BT, adv_BT, mask_BT) from the stage inputs."""
    check_same_shape(logp_BT=inp.logp_BT, old_logp_BT=inp.old_logp_BT, mask_BT=inp.mask_BT)
    mask_BT = as_bool_mask(inp.mask_BT)
    adv_BT = expand_adv(inp.adv_BT, inp.logp_BT)
    # Padded positions are replaced by 0 up front: a NaN/inf there would otherwise poison the
    # gradient even behind a final ``where`` (0 · ∂exp(NaN) is NaN).
    return (
        zero_invalid(inp.logp_BT, mask_BT),
        zero_invalid(inp.old_logp_BT.detach(), mask_BT),
        zero_invalid(adv_BT.detach(), mask_BT),
        mask_BT,
    )


def check_clip(eps_low: float, eps_high: float, dual_clip_c: float | None) -> None:
    """Validate clip hyperparameters with messages naming the key."""
    if not 0 <= eps_low <= 1:
        raise ValueError(f"eps_low must be in [0, 1] (1 = no lower clip, as Clip-Cov runs), got {eps_low}")
    check_positive("eps_high", eps_high, allow_zero=True)
    if dual_clip_c is not None and dual_clip_c <= 1:
        raise ValueError(f"dual_clip_c must be > 1 (or null to disable), got {dual_clip_c}")


@SURROGATES.register("reinforce", paper="baseline", aliases=("gpg",))
class Reinforce:
    """REINFORCE: loss −A·log π_θ per token (no ratio, no clipping)."""

    def __init__(self) -> None:  # no hyperparameters: unknown recipe keys are errors
        pass

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        logp_BT, old_logp_BT, adv_BT, mask_BT = unpack(inp)
        loss_BT = zero_invalid(reinforce_loss(logp_BT, adv_BT), mask_BT)
        return loss_BT, ratio_metrics(logp_BT, old_logp_BT, mask_BT)


@SURROGATES.register("ppo_clip", paper="Proximal Policy Optimization Algorithms", arxiv="1707.06347")
class PPOClip:
    """PPO clipped surrogate with separate ε_low/ε_high (clip-higher) and optional dual clip.

    Args:
        eps_low: lower clip range, ratio floor 1−eps_low (0.2 in PPO/GRPO/DAPO).
        eps_high: upper clip range, ratio ceiling 1+eps_high (DAPO clip-higher: 0.28).
        dual_clip_c: dual-clip constant c > 1 (verl ``clip_ratio_c``, 3.0 there); None disables.
    Metrics: ``policy/clipfrac_low``, ``policy/clipfrac_high``, ``policy/clipfrac_dual``
    (fractions of valid tokens), ``policy/approx_kl`` (k3), ``policy/ratio_mean``.
    """

    def __init__(self, *, eps_low: float = 0.2, eps_high: float = 0.2, dual_clip_c: float | None = None):
        check_clip(eps_low, eps_high, dual_clip_c)
        self.eps_low, self.eps_high, self.dual_clip_c = float(eps_low), float(eps_high), dual_clip_c

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        logp_BT, old_logp_BT, adv_BT, mask_BT = unpack(inp)
        loss_BT, aux = ppo_clip_loss(
            logp_BT, old_logp_BT, adv_BT, eps_low=self.eps_low, eps_high=self.eps_high, dual_clip_c=self.dual_clip_c
        )
        metrics = {
            "policy/clipfrac_low": frac(aux["clip_low"], mask_BT),
            "policy/clipfrac_high": frac(aux["clip_high"], mask_BT),
            "policy/clipfrac_dual": frac(aux["clip_dual"], mask_BT),
            **ratio_metrics(logp_BT, old_logp_BT, mask_BT),
        }
        return zero_invalid(loss_BT, mask_BT), metrics
