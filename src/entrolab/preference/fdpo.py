"""f-DPO: DPO under other f-divergences (Wang et al. 2023, "Beyond Reverse KL", arXiv:2309.16240).

Regularising with D_f(π‖π_ref) instead of the reverse KL makes the implicit reward β·f′(u) with
u = π/π_ref = e^h (the paper's main result: the KKT conditions give r(x, y) = β f′(u(y)) + const(x),
and the constant cancels inside Bradley–Terry). The loss is DPO's with h replaced by
ψ(h) = f′(e^h) (additive constants dropped, they cancel):

    reverse KL   f(u) = u log u       ψ(h) = h                         (DPO)
    forward KL   f(u) = −log u        ψ(h) = −e^{−h}
    JS           f(u) = u log u − (u + 1) log((u + 1)/2)
                                      ψ(h) = log 2 + log σ(h)
    α-divergence α ∈ (0, 1)           ψ(h) = −e^{−αh}/α

Forward KL and α contain e^{−αh}, which overflows (fp32 at αh < −88, bf16 much earlier) when the
policy gives a response much less mass than the reference, the usual state of a rejected response.
We compute in at least fp32 and cap the exponent at ``max_exponent``; beyond the cap the exponential
continues along its tangent, so ψ stays finite, continuous and strictly increasing, and the gradient
keeps pushing a chosen response up instead of vanishing as a hard clamp (upstream TRL's capped exp)
would make it exactly on the pairs that are furthest from fitting.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from entrolab.preference.api import PairLogps
from entrolab.preference.losses import dpo_loss, implicit_reward_metrics
from entrolab.registry import PREFERENCE_LOSSES

DIVERGENCES = ("reverse_kl", "forward_kl", "js", "alpha")
Divergence = Literal["reverse_kl", "forward_kl", "js", "alpha"]


def capped_exp(x: torch.Tensor, *, max_exponent: float = 20.0) -> torch.Tensor:
    """e^x for x ≤ c, and its tangent e^c·(1 + x − c) beyond c = ``max_exponent`` (value and slope
    continuous at c; finite for every finite x)."""
    xc = x.clamp(max=max_exponent)
    return torch.exp(xc) * (1.0 + (x - xc))


def f_divergence_psi(h_B: torch.Tensor, *, divergence: Divergence = "reverse_kl", alpha: float = 0.5,
                     max_exponent: float = 20.0) -> torch.Tensor:
    """ψ(h) = f′(e^h) of one divergence (table in the module docstring), in at least fp32.

    Args:
        h_B: [B] policy − reference sequence log-probs.
    Returns: [B] ψ(h), dtype ``promote(h.dtype, float32)``.
    """
    h_B = h_B.to(torch.promote_types(h_B.dtype, torch.float32))
    if divergence == "reverse_kl":
        return h_B
    if divergence == "forward_kl":
        return -capped_exp(-h_B, max_exponent=max_exponent)
    if divergence == "js":
        return math.log(2.0) + torch.nn.functional.logsigmoid(h_B)
    if divergence == "alpha":
        return -capped_exp(-alpha * h_B, max_exponent=max_exponent) / alpha
    raise ValueError(f"fdpo: divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")


def fdpo_loss(h_chosen_B: torch.Tensor, h_rejected_B: torch.Tensor, label_B: torch.Tensor, *,
              beta: float = 0.1, divergence: Divergence = "reverse_kl", alpha: float = 0.5,
              max_exponent: float = 20.0) -> torch.Tensor:
    """f-DPO loss −[l log σ(z) + (1 − l) log σ(−z)], z = β[ψ(h_w) − ψ(h_l)] (the paper's loss; soft labels
    as in ``dpo_loss``). ``divergence="reverse_kl"`` is ``dpo_loss`` exactly."""
    kw = dict(divergence=divergence, alpha=alpha, max_exponent=max_exponent)
    return dpo_loss(f_divergence_psi(h_chosen_B, **kw), f_divergence_psi(h_rejected_B, **kw), label_B, beta=beta)


@PREFERENCE_LOSSES.register("fdpo", paper="Beyond Reverse KL: Generalizing Direct Preference Optimization with "
                            "Diverse Divergence Constraints", arxiv="2309.16240")
class FDPO:
    """f-DPO: −log σ(β[ψ(h_w) − ψ(h_l)]) with ψ = f′(e^h) of reverse KL, forward KL, JS or an α-divergence."""

    requires_reference = True

    def __init__(self, *, beta: float = 0.1, divergence: Divergence = "reverse_kl", alpha: float = 0.5,
                 max_exponent: float = 20.0) -> None:
        if not beta > 0:
            raise ValueError(f"fdpo: beta must be > 0, got {beta}")
        if divergence not in DIVERGENCES:
            raise ValueError(f"fdpo: divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"fdpo: alpha must be in (0, 1) (α → 0 is reverse_kl, α = 1 is forward_kl), "
                             f"got {alpha}")
        if not 0.0 < max_exponent <= 80.0:
            raise ValueError(f"fdpo: max_exponent must be in (0, 80] (e^88 overflows fp32), got {max_exponent}")
        self.beta, self.divergence, self.alpha, self.max_exponent = beta, divergence, alpha, max_exponent

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        h_w, h_l = lp.log_ratios()
        kw = dict(divergence=self.divergence, alpha=self.alpha, max_exponent=self.max_exponent)
        psi_w, psi_l = f_divergence_psi(h_w, **kw), f_divergence_psi(h_l, **kw)
        loss_B = dpo_loss(psi_w, psi_l, lp.label_B.to(psi_w.dtype), beta=self.beta)
        # β·ψ(h) is the implicit reward; it is bounded above for every divergence but reverse KL, so
        # margins are not comparable with DPO's.
        return loss_B, implicit_reward_metrics(self.beta * psi_w, self.beta * psi_l)
