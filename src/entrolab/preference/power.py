"""POWER and POWER-DL (Rashidinejad & Tian 2024, "Sail into the Headwind", arXiv:2412.09544).

Only the abstract was available to us; the loss below is *reconstructed* from the objective the
abstract names (Guiaşu's weighted entropy + robust reward maximisation) and is not checked
against the paper's final equation (docs/methods/power.md says which parts).

POWER maximises E_π[r] − E_π′[r] + β H_w(π) against the worst reward r that still fits the data,
with the weighted entropy H_w(π) = −Σ_y w(y) π(y) log π(y) and w(y) = 1/|y|. For a fixed r the
stationary point is r(y) = β w(y)(log π(y) + 1) + λ(x); inside Bradley–Terry λ(x) cancels, leaving

    Δ = β (ℓ̄_w − ℓ̄_l) + β (1/|y_w| − 1/|y_l|),        ℓ̄ = Σ_t log π_θ / |y|  (no reference model)

and the pessimistic inner minimisation over r adds a data term −ηβ·w(y_w) ℓ(y_w) (the baseline
policy π′ taken as the dataset's chosen responses: a length-normalised SFT term on y_w).

Dynamic labels (DL): every training pair i keeps a soft label l_i (initially its data label); the
loss uses the current l_i, then l_i ← (1 − γ) l_i + γ σ(Δ_i) (detached). σ(Δ_i) is the
"stationary label" at which pair i's gradient −(l_i − σ(Δ_i)) vanishes, so pairs the model keeps
disagreeing with lose their pull (the paper's Type II reward hacking); γ = 0 is POWER.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from entrolab.preference.api import PairLogps
from entrolab.preference.losses import implicit_reward_metrics
from entrolab.registry import PREFERENCE_LOSSES

_PAPER = "Sail into the Headwind: Alignment via Robust Rewards and Dynamic Labels against Reward Hacking"


def power_margin(logp_chosen_B: torch.Tensor, logp_rejected_B: torch.Tensor, len_chosen_B: torch.Tensor,
                 len_rejected_B: torch.Tensor, *, beta: float = 2.0) -> torch.Tensor:
    """Δ = β(ℓ_w/|y_w| − ℓ_l/|y_l|) + β(1/|y_w| − 1/|y_l|): the weighted-entropy reward gap with w = 1/|y|.

    Args:
        logp_chosen_B, logp_rejected_B: [B] summed response log-probs under the policy.
        len_chosen_B, len_rejected_B: [B] response lengths in tokens (≥ 1).
    Returns: [B] Δ.
    """
    w_w, w_l = 1.0 / len_chosen_B, 1.0 / len_rejected_B
    return beta * (w_w * logp_chosen_B - w_l * logp_rejected_B) + beta * (w_w - w_l)


def power_loss(logp_chosen_B: torch.Tensor, logp_rejected_B: torch.Tensor, len_chosen_B: torch.Tensor,
               len_rejected_B: torch.Tensor, label_B: torch.Tensor, *, beta: float = 2.0,
               eta: float = 0.01) -> torch.Tensor:
    """POWER: −[l log σ(Δ) + (1 − l) log σ(−Δ)] − ηβ·ℓ_w/|y_w| (reconstructed, module docstring).

    The soft-label form is the one dynamic labels act on; the SFT term stays on the chosen
    response whatever the label (π′ is the data's chosen responses).
    Returns: [B] per-pair loss.
    """
    delta_B = power_margin(logp_chosen_B, logp_rejected_B, len_chosen_B, len_rejected_B, beta=beta)
    bt_B = -(label_B * F.logsigmoid(delta_B) + (1.0 - label_B) * F.logsigmoid(-delta_B))
    return bt_B - eta * beta * logp_chosen_B / len_chosen_B


def dynamic_label_update(label_B: torch.Tensor, delta_B: torch.Tensor, *, gamma: float = 0.1) -> torch.Tensor:
    """l ← (1 − γ) l + γ σ(Δ), detached: a step towards each pair's stationary label σ(Δ)."""
    return ((1.0 - gamma) * label_B + gamma * torch.sigmoid(delta_B)).detach()


def _check(name: str, beta: float, eta: float) -> None:
    if not beta > 0:
        raise ValueError(f"{name}: beta must be > 0, got {beta}")
    if not eta >= 0:
        raise ValueError(f"{name}: eta must be >= 0 (0 drops the SFT term), got {eta}")


def _metrics(lp: PairLogps, beta: float) -> dict[str, float]:
    # POWER's implicit reward r(y) = β w(y)(log π(y) + 1); its gap is Δ.
    return implicit_reward_metrics(beta * (lp.chosen_B + 1.0) / lp.len_chosen_B,
                                   beta * (lp.rejected_B + 1.0) / lp.len_rejected_B)


@PREFERENCE_LOSSES.register("power", paper=_PAPER, arxiv="2412.09544")
class POWER:
    """POWER: length-normalised Bradley–Terry margin from Guiaşu's weighted entropy, plus a chosen SFT term."""

    requires_reference = False

    def __init__(self, *, beta: float = 2.0, eta: float = 0.01) -> None:
        _check("power", beta, eta)
        self.beta, self.eta = beta, eta

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        loss_B = power_loss(lp.chosen_B, lp.rejected_B, lp.len_chosen_B, lp.len_rejected_B, lp.label_B,
                            beta=self.beta, eta=self.eta)
        return loss_B, _metrics(lp, self.beta)


@PREFERENCE_LOSSES.register("power_dl", paper=_PAPER, arxiv="2412.09544")
class POWERDL:
    """POWER with dynamic labels: per-pair soft labels move towards σ(Δ) after every training use."""

    requires_reference = False

    def __init__(self, *, beta: float = 2.0, eta: float = 0.01, gamma: float = 0.1) -> None:
        _check("power_dl", beta, eta)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"power_dl: gamma must be in [0, 1] (0 = POWER), got {gamma}")
        self.beta, self.eta, self.gamma = beta, eta, gamma
        self.labels: dict[int, float] = {}  # dataset row index → current label

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss with each pair's current label; then, on a training forward only (Δ carries a
        gradient), the labels of these rows move towards σ(Δ). An evaluation forward under
        ``torch.no_grad`` (whose row indices belong to another dataset) leaves the state alone.
        A row that occurs twice in one batch uses its label before the batch for both."""
        idx = [int(i) for i in lp.index_B.tolist()]
        data = lp.label_B.tolist()
        label_B = torch.tensor([self.labels.get(i, d) for i, d in zip(idx, data)],
                               dtype=lp.label_B.dtype, device=lp.label_B.device)
        loss_B = power_loss(lp.chosen_B, lp.rejected_B, lp.len_chosen_B, lp.len_rejected_B, label_B,
                            beta=self.beta, eta=self.eta)
        delta_B = power_margin(lp.chosen_B, lp.rejected_B, lp.len_chosen_B, lp.len_rejected_B, beta=self.beta)
        if delta_B.requires_grad:
            new = dynamic_label_update(label_B, delta_B, gamma=self.gamma).tolist()
            self.labels.update(zip(idx, new))
        metrics = _metrics(lp, self.beta)
        metrics.update({"pref/label_mean": float(label_B.mean()), "pref/label_min": float(label_B.min())})
        return loss_B, metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        keys = sorted(self.labels)
        return {"index": torch.tensor(keys, dtype=torch.long),
                "label": torch.tensor([self.labels[k] for k in keys], dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        index, label = state.get("index"), state.get("label")
        if index is None or label is None or index.shape != label.shape or index.dim() != 1:
            raise ValueError("power_dl: state must hold 1-D 'index' and 'label' tensors of equal length, got "
                             f"{ {k: tuple(v.shape) for k, v in state.items() if hasattr(v, 'shape')} }")
        self.labels = dict(zip((int(i) for i in index.tolist()), (float(x) for x in label.tolist())))
