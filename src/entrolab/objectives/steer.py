"""STEER: token weights from the predicted per-token entropy change.

Hao, Wang et al., "Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective",
arXiv 2510.10150. The first-order entropy change caused by a policy-gradient step on the
sampled token (their token-level analysis, read off the released code) is
scored as
    Ω_t = (A_t / π_old(o_t)) · p_t (1 − p_t) · (log p_t + H_t),
with p_t the current probability of the sampled token and H_t the entropy at that position.
Tokens predicted to move entropy most (large |Ω|) get small weights, the rest large ones:

* linear: w = λ_max − (|Ω| − Ω_min)(λ_max − λ_min)/(Ω_max − Ω_min), clamped to [λ_min, λ_max];
  (λ_min + λ_max)/2 when Ω_max = Ω_min;
* exponential: κ = −ln λ_min / max(Ω_max, 0.02), w = exp(−κ|Ω|) clamped to [λ_min, 1].

Ω_min/Ω_max are the min/max of |Ω| over the valid tokens of the **micro-batch** (as upstream).
Weights are detached and multiply the whole token loss (the paper runs dual-clip PPO with
ε 0.2/0.28, c = 10 underneath: ``recipes/steer.yaml``).

Where we differ: upstream takes H from the old-policy pass; we use the current-policy entropy
``inp.entropy_BT`` (detached), which equals it on the first pass over a rollout batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from entrolab.objectives._util import as_bool_mask, check_same_shape, expand_adv, zero_invalid
from entrolab.registry import TOKEN_WEIGHTS
from entrolab.types import Metrics, PolicyInputs

Mode = Literal["linear", "exp"]


def steer_score(logp_BT, old_logp_BT, adv_BT, entropy_BT) -> torch.Tensor:
    """|Ω| per token (all inputs detached; probabilities clamped as upstream; non-finite → 0)."""
    p = logp_BT.detach().exp().clamp(1e-8, 1 - 1e-8)
    p_old = old_logp_BT.detach().exp().clamp(1e-8, 1.0)
    omega = adv_BT.detach() / p_old * p * (1 - p) * (p.log() + entropy_BT.detach())
    return torch.nan_to_num(omega, nan=0.0, posinf=0.0, neginf=0.0).abs()


def steer_weights(
    score_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    mode: Mode = "linear",
    lambda_min: float = 0.8,
    lambda_max: float = 1.2,
) -> torch.Tensor:
    """Map |Ω| to weights (linear or exponential map above); 0 on padded tokens."""
    if not bool(mask_BT.any()):
        return torch.zeros_like(score_BT)
    valid = score_BT[mask_BT]
    lo, hi = valid.min(), valid.max()
    if mode == "linear":
        if float(hi - lo) <= 0.0:
            w = torch.full_like(score_BT, 0.5 * (lambda_min + lambda_max))
        else:
            w = lambda_max - (score_BT - lo) * (lambda_max - lambda_min) / (hi - lo)
            w = w.clamp(lambda_min, lambda_max)
    elif mode == "exp":
        kappa = -math.log(lambda_min) / max(float(hi), 0.02)
        w = torch.exp(-kappa * score_BT).clamp(lambda_min, 1.0)
    else:
        raise ValueError(f"mode must be 'linear' or 'exp', got '{mode}'")
    return zero_invalid(w, mask_BT)


@TOKEN_WEIGHTS.register("steer", paper="Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective",
                        arxiv="2510.10150")
class Steer:
    """STEER: down-weight tokens whose predicted entropy change |Ω| is large.

    Args:
        mode: ``linear`` (paper default) or ``exp``.
        lambda_min, lambda_max: weight range (paper: 0.8 and 1.2; ``exp`` ignores lambda_max
            and caps at 1).
    Metrics: ``weight/steer_mean``, ``weight/steer_min``, ``weight/steer_max`` over valid tokens.
    """

    def __init__(self, *, mode: Mode = "linear", lambda_min: float = 0.8, lambda_max: float = 1.2):
        if mode not in ("linear", "exp"):
            raise ValueError(f"mode must be 'linear' or 'exp', got '{mode}'")
        if not 0 < lambda_min <= lambda_max:
            raise ValueError(f"need 0 < lambda_min <= lambda_max, got {lambda_min}, {lambda_max}")
        if mode == "exp" and lambda_min > 1:
            raise ValueError(f"exp mode needs lambda_min <= 1, got {lambda_min}")
        self.mode, self.lambda_min, self.lambda_max = mode, float(lambda_min), float(lambda_max)

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        check_same_shape(logp_BT=inp.logp_BT, old_logp_BT=inp.old_logp_BT, entropy_BT=inp.entropy_BT)
        mask_BT = as_bool_mask(inp.mask_BT)
        adv_BT = expand_adv(inp.adv_BT, inp.logp_BT)
        with torch.no_grad():
            score = zero_invalid(steer_score(inp.logp_BT, inp.old_logp_BT, adv_BT, inp.entropy_BT), mask_BT)
            w = steer_weights(score, mask_BT, mode=self.mode, lambda_min=self.lambda_min, lambda_max=self.lambda_max)
        valid = w[mask_BT]
        stats = (float(valid.mean()), float(valid.min()), float(valid.max())) if valid.numel() else (0.0, 0.0, 0.0)
        return w, {"weight/steer_mean": stats[0], "weight/steer_min": stats[1], "weight/steer_max": stats[2]}
