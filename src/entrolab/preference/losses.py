"""Pairwise preference losses on log-ratios: DPO, IPO and the noisy-label baselines cDPO and robust DPO.

The contract is in ``preference/api.py``. The other families live next to this file: f-DPO in
``fdpo.py``, CPL in ``cpl.py``, POWER / POWER-DL in ``power.py``, SPO in ``spo.py``. Every function
here takes h = log π_θ(y|x) − log π_ref(y|x) (summed over response tokens) for the chosen and the
rejected response, and soft labels l = P(chosen ≻ rejected) ∈ [0, 1].
"""

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


def _positive(name: str, key: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: {key} must be > 0, got {value}")


def _flip_rate(name: str, eps: float) -> None:
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"{name}: eps must be in [0, 0.5) (a flip probability below one half), got {eps}")


@PREFERENCE_LOSSES.register("dpo", paper="Direct Preference Optimization: Your Language Model is Secretly a "
                            "Reward Model", arxiv="2305.18290")
class DPO:
    """DPO's sigmoid loss −log σ(β·(h(y_w) − h(y_l))) (soft labels supported)."""

    requires_reference = True

    def __init__(self, *, beta: float = 0.1) -> None:
        _positive("dpo", "beta", beta)
        self.beta = beta

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        h_w, h_l = lp.log_ratios()
        loss_B = dpo_loss(h_w, h_l, lp.label_B, beta=self.beta)
        return loss_B, implicit_reward_metrics(self.beta * h_w, self.beta * h_l)


def ipo_loss(h_chosen_B: torch.Tensor, h_rejected_B: torch.Tensor, label_B: torch.Tensor, *,
             tau: float = 0.1) -> torch.Tensor:
    """IPO (Azar et al. 2023, arXiv:2310.12036, the sampled IPO loss): (h_w − h_l − (2l − 1)/(2τ))².

    The paper's sampled loss is (h_w − h_l − 1/(2τ))² for a hard label. A soft label l is the
    expectation over which response the annotator picked: l·(Δ − c)² + (1 − l)·(−Δ − c)² with
    Δ = h_w − h_l, c = 1/(2τ), which equals (Δ − (2l − 1)c)² + 4l(1 − l)c². We drop the constant,
    so the loss is 0 at its minimiser Δ* = (2l − 1)/(2τ) (the paper's regression target for
    p* = l) and has exactly the expected loss's gradient. l = ½ regresses Δ to 0.

    Args:
        h_chosen_B, h_rejected_B: [B] policy − reference log-probs (sums, or per-token means).
        label_B: [B] soft labels in [0, 1].
    Returns: [B] per-pair loss.
    """
    target_B = (2.0 * label_B - 1.0) / (2.0 * tau)
    return (h_chosen_B - h_rejected_B - target_B) ** 2


@PREFERENCE_LOSSES.register("ipo", paper="A General Theoretical Paradigm to Understand Learning from Human "
                            "Preferences", arxiv="2310.12036")
class IPO:
    """IPO's squared loss (h_w − h_l − (2l − 1)/(2τ))²: regresses the log-ratio gap to a finite target."""

    requires_reference = True

    def __init__(self, *, tau: float = 0.1, length_normalize: bool = False) -> None:
        _positive("ipo", "tau", tau)
        self.tau = tau
        self.length_normalize = length_normalize

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        h_w, h_l = lp.log_ratios()
        if self.length_normalize:  # TRL's IPO averages over tokens; the paper's h is a sequence sum
            h_w, h_l = h_w / lp.len_chosen_B, h_l / lp.len_rejected_B
        loss_B = ipo_loss(h_w, h_l, lp.label_B, tau=self.tau)
        # The KL-regularised optimum is π ∝ π_ref·exp(Ψ/τ), so τ·h is IPO's implicit reward.
        return loss_B, implicit_reward_metrics(self.tau * h_w, self.tau * h_l)


def cdpo_loss(h_chosen_B: torch.Tensor, h_rejected_B: torch.Tensor, label_B: torch.Tensor, *,
              beta: float = 0.1, eps: float = 0.1) -> torch.Tensor:
    """Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): label smoothing.

    Each label is assumed flipped with probability ε, so the target becomes
    l' = (1 − ε)·l + ε·(1 − l) and the loss is DPO's soft-label loss at l':
    −[(1 − ε) log σ(z) + ε log σ(−z)] for a hard label, z = β(h_w − h_l).
    """
    return dpo_loss(h_chosen_B, h_rejected_B, (1.0 - eps) * label_B + eps * (1.0 - label_B), beta=beta)


@PREFERENCE_LOSSES.register("cdpo", paper="A note on DPO with noisy preferences & relationship to IPO (Mitchell 2023)")
class CDPO:
    """Conservative DPO: DPO with labels smoothed towards ½ by an assumed flip rate ε."""

    requires_reference = True

    def __init__(self, *, beta: float = 0.1, eps: float = 0.1) -> None:
        _positive("cdpo", "beta", beta)
        _flip_rate("cdpo", eps)
        self.beta, self.eps = beta, eps

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        h_w, h_l = lp.log_ratios()
        loss_B = cdpo_loss(h_w, h_l, lp.label_B, beta=self.beta, eps=self.eps)
        return loss_B, implicit_reward_metrics(self.beta * h_w, self.beta * h_l)


def robust_dpo_loss(h_chosen_B: torch.Tensor, h_rejected_B: torch.Tensor, label_B: torch.Tensor, *,
                    beta: float = 0.1, eps: float = 0.1) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, arXiv:2403.00409, the rDPO loss): unbiased under flip rate ε.

    With ℓ(z) = −log σ(z), z = β(h_w − h_l):
        ℓ_ε(z) = [(1 − ε) ℓ(z) − ε ℓ(−z)] / (1 − 2ε),
    so that over a label flipped with probability ε, (1 − ε)ℓ_ε(z) + ε ℓ_ε(−z) = ℓ(z): in expectation
    it is the clean DPO loss. A soft label l mixes the two orders: l·ℓ_ε(z) + (1 − l)·ℓ_ε(−z).
    Unlike cDPO this loss is unbounded below (slope −βε/(1 − 2ε) as z → ∞).
    """
    z_B = beta * (h_chosen_B - h_rejected_B)
    fwd_B = ((1.0 - eps) * F.softplus(-z_B) - eps * F.softplus(z_B)) / (1.0 - 2.0 * eps)
    rev_B = ((1.0 - eps) * F.softplus(z_B) - eps * F.softplus(-z_B)) / (1.0 - 2.0 * eps)
    return label_B * fwd_B + (1.0 - label_B) * rev_B


@PREFERENCE_LOSSES.register("robust_dpo", paper="Provably Robust DPO: Aligning Language Models with Noisy "
                            "Feedback", arxiv="2403.00409")
class RobustDPO:
    """Robust DPO: DPO's loss de-biased for labels flipped with a known rate ε (divides by 1 − 2ε)."""

    requires_reference = True

    def __init__(self, *, beta: float = 0.1, eps: float = 0.1) -> None:
        _positive("robust_dpo", "beta", beta)
        _flip_rate("robust_dpo", eps)
        self.beta, self.eps = beta, eps

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        h_w, h_l = lp.log_ratios()
        loss_B = robust_dpo_loss(h_w, h_l, lp.label_B, beta=self.beta, eps=self.eps)
        return loss_B, implicit_reward_metrics(self.beta * h_w, self.beta * h_l)
