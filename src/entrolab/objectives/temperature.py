"""Sampling-side entropy control (AEPO, DCPO): the math, as pure functions and a controller.

The registered components that use it (the ``aepo`` and ``dcpo`` advantage estimators, which drive
the trainer's extra sampling / extra scoring hooks) are in ``temperature_control.py``.

* AEPO — "Arbitrary Entropy Policy Optimization: Entropy Is Controllable in Reinforcement
  Fine-tuning", arXiv 2510.08141: ∇J = ∇J_GRPO + α·E_{o~π^T}[∇log π_θ(o)·R], T = T_high when the
  measured entropy H ≤ H_target, else T_low; the side batch keeps the samples whose group
  advantage exceeds 0.05, with advantage +1 (positive-only REINFORCE).
* DCPO — "Distribution-Centric Policy Optimization Dominates Exploration-Exploitation
  Trade-off", arXiv 2601.12730: Ã = (1 − α)·A + α·b·ρ with ρ = π_old^T(o)/π_old(o),
  b = 1 for correct responses, α₀ = min(|H_target − H|, 0.1), α₁ = α₀/p_correct, α = α₁/(1 + α₁).
"""

from __future__ import annotations

import torch

from entrolab.objectives._util import zero_invalid


class TemperatureSwitch:
    """Bang-bang temperature controller: T_high while the measured entropy ≤ target, else T_low.

    The measurement is the previous step's entropy (AEPO/DCPO use the NLL proxy −mean ℓ of the
    update batch; any token-mean entropy works). Before the first measurement H = 0 (upstream),
    so the first step uses T_high.
    """

    def __init__(self, *, target: float = 0.5, t_high: float = 1.2, t_low: float = 0.8):
        if not 0 < t_low <= t_high:
            raise ValueError(f"need 0 < t_low <= t_high, got {t_low}, {t_high}")
        if target < 0:
            raise ValueError(f"target must be >= 0, got {target}")
        self.target, self.t_high, self.t_low = float(target), float(t_high), float(t_low)
        self.entropy = 0.0

    @property
    def temperature(self) -> float:
        return self.t_high if self.entropy <= self.target else self.t_low

    def update(self, entropy: float) -> float:
        """Record the latest measured entropy; return the temperature to use next."""
        self.entropy = float(entropy)
        return self.temperature

    def state_dict(self) -> dict:
        return {"entropy": self.entropy}

    def load_state_dict(self, state: dict) -> None:
        self.entropy = float(state["entropy"])


def nll_entropy_proxy(logp_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
    """−mean ℓ over valid sampled tokens: the Monte-Carlo entropy estimate AEPO/DCPO steer on."""
    n = int(mask_BT.sum())
    return -float(zero_invalid(logp_BT.detach(), mask_BT).sum()) / n if n else 0.0


def aepo_select(
    adv_B: torch.Tensor, *, threshold: float = 0.05, max_samples: int = 60, above_target: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """AEPO side-batch selection: rows with group advantage > threshold, advantage set to +1.

    k = min(max_samples, #kept), halved (floor) when the entropy is above target. Upstream
    crashes when nothing qualifies; here the result is simply empty.
    Returns (row indices [k], advantages [k] of ones).
    """
    idx = (adv_B > threshold).nonzero().squeeze(-1)
    k = min(max_samples, int(idx.numel()))
    if above_target:
        k //= 2
    idx = idx[:k]
    return idx, torch.ones(idx.numel(), dtype=adv_B.dtype)


def temperature_ratio(logp_T_BT: torch.Tensor, logp_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """ρ = π_old^T(o)/π_old(o) per token (detached, 1 on pads); log-ratio clamped to ±20."""
    delta = zero_invalid((logp_T_BT - logp_BT).detach(), mask_BT).clamp(-20.0, 20.0)
    return delta.exp()


def dcpo_alpha(entropy: float, *, target: float, p_correct: float, alpha_cap: float = 0.1) -> float:
    """α = α₁/(1 + α₁), α₁ = min(|target − H|, cap)/p_correct; 0 when no response is correct.

    Upstream divides by p_correct = 0 and produces NaN advantages; we switch the term off.
    """
    if p_correct <= 0:
        return 0.0
    a1 = min(abs(target - entropy), alpha_cap) / p_correct
    return a1 / (1 + a1)


def dcpo_mix_advantages(
    adv_BT: torch.Tensor,
    correct_B: torch.Tensor,
    rho_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    entropy: float,
    target: float = 0.5,
    alpha_cap: float = 0.1,
) -> tuple[torch.Tensor, float]:
    """DCPO advantage Ã = (1 − α)·A + α·b·ρ (0 on pads). Returns (Ã [B, T], α).

    Args:
        adv_BT: GRPO advantages [B, T]. correct_B: bool [B] (b). rho_BT: temperature ratio [B, T].
        entropy: measured entropy H of the previous step. target: H_target (script 0.5).
    """
    b_B = correct_B.to(adv_BT.dtype)
    p_correct = float(b_B.mean()) if b_B.numel() else 0.0
    alpha = dcpo_alpha(entropy, target=target, p_correct=p_correct, alpha_cap=alpha_cap)
    mixed = (1 - alpha) * adv_BT + alpha * b_B[:, None] * rho_BT
    return zero_invalid(mixed, mask_BT), alpha
