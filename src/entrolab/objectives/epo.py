"""EPO: entropy bonus plus a (differentiable) smoothing band around the historical entropy.

Xu et al., "EPO: Entropy-regularized Policy Optimization for LLM Agents Reinforcement
Learning", arXiv 2509.22576. The released loss is pg − β_H·(agg(H) − β_s·agg(P)), so per
token, with H_t the current entropy (gradient) and H̄ the historical mean entropy,
    L_t = −β_H·H_t + β_H·β_s·w(e)·λ·[relu(κ_lo·H̄ − H_t) + relu(H_t − κ_hi·H̄)]
(the band term carries the entropy coefficient β_H too), where w(e) is the phase weight at step e
with horizon E (released code: E = 150), e clamped to [0, E] and h = ⌊E/2⌋:
    w(e) = 1 − 0.2·(1 − exp(−2e/h))               for e ≤ h   (slow decay 1 → ~0.83),
    w(e) = 0.8·exp(−3(e − h)/(E − h))             for e > h   (fast decay 0.8 → ~0.04),
so past the horizon w stays at w(E) = 0.8·e⁻³.

Where we differ from the released code (deliberately):
* Upstream's smoothing term is λ·[H outside the band], built from comparisons and constants:
  it has **no gradient**, so only the plain bonus acts. Ours is the distance outside the band
  (the spec's suggested differentiable form): same zero set, a real restoring force.
* Single-turn batches: H̄ is one number, the mean over all past optimizer steps of the step's
  token-mean entropy. Before the first step ends there is no history and the smoothing term is off.
* Multi-turn batches (``extras["turn_id_BT"]``, the turn index of each model token): as upstream,
  one H̄_τ per turn index τ, the mean over past steps of that step's token-mean entropy of turn τ,
  and each token's band is around its own turn's H̄_τ. Unlike upstream, a step only enters the
  history of the turns it has tokens of (upstream left-pads the per-turn list with zeros, which
  drags H̄_τ towards 0), a turn index without history is not smoothed, and smoothing does not wait
  for a turn index ≥ 25 (a key-name bug makes that threshold constant upstream).
"""

from __future__ import annotations

import math

import torch

from entrolab.objectives._util import as_bool_mask, check_positive, frac, masked_sum, zero_invalid
from entrolab.registry import REGULARIZERS
from entrolab.types import Metrics, PolicyInputs


def epo_phase_weight(step: int, *, horizon: int = 150) -> float:
    """Phase weight w(e) of the released code (``_calculate_epoch_based_entropy_weight``), with the
    horizon E as a parameter (hard-coded 150 there). As upstream, e is clamped to [0, E] (so w
    stays at 0.8·e⁻³ past the horizon) and the split point is ⌊E/2⌋. Needs E >= 2."""
    step = max(0, min(step, horizon))
    half = horizon // 2
    if step <= half:
        return 1.0 - 0.2 * (1.0 - math.exp(-2.0 * step / half))
    return 0.8 * math.exp(-3.0 * (step - half) / (horizon - half))


def epo_band_penalty(
    entropy_BT: torch.Tensor, history_mean: float | torch.Tensor, *, kappa_low: float = 0.5, kappa_high: float = 1.5
) -> torch.Tensor:
    """relu(κ_lo·H̄ − H) + relu(H − κ_hi·H̄): 0 inside the band, linear distance outside.
    ``history_mean`` is a number or a tensor broadcastable to ``entropy_BT`` (per-turn H̄_τ)."""
    return torch.relu(kappa_low * history_mean - entropy_BT) + torch.relu(entropy_BT - kappa_high * history_mean)


@REGULARIZERS.register("epo", paper="EPO: Entropy-regularized Policy Optimization for LLM Agents Reinforcement Learning",
                       arxiv="2509.22576")
class EPO:
    """EPO: entropy bonus plus a differentiable penalty for leaving a band around the historical entropy.

    Per-token loss −β_H·H + β_H·β_s·w·λ·band (both terms scaled by β_H, as upstream), aggregated
    with the policy loss like verl's ``agg_loss(entropy)``.

    Args:
        entropy_coef: β_H, the coefficient of the whole entropy term, bonus and band (paper 0.001).
        smooth_coef: β_s of the smoothing term (paper 1.0).
        penalty: λ (paper 0.1 on ALFWorld, 0.05 on ScienceWorld).
        kappa_low, kappa_high: band [κ_lo·H̄, κ_hi·H̄] (script 0.5/1.5; config 0.8/1.2; README 0/2).
        phase_weighting: multiply the smoothing term by w(step).
        phase_horizon: E, in optimizer steps (upstream hard-codes 150 epochs).
    Metrics: ``entropy/epo_in_band_frac``, ``entropy/epo_history_mean`` (H̄; 0 before any
    history), ``entropy/epo_phase_weight``, ``entropy/epo_penalty`` (mean band distance).
    State: the running history sums (overall, and per turn index for multi-turn batches).
    """

    def __init__(
        self,
        *,
        entropy_coef: float = 0.001,
        smooth_coef: float = 1.0,
        penalty: float = 0.1,
        kappa_low: float = 0.5,
        kappa_high: float = 1.5,
        phase_weighting: bool = True,
        phase_horizon: int = 150,
    ):
        for name, v in (("entropy_coef", entropy_coef), ("smooth_coef", smooth_coef), ("penalty", penalty)):
            check_positive(name, v, allow_zero=True)
        if not 0 <= kappa_low <= 1 <= kappa_high:
            raise ValueError(f"need 0 <= kappa_low <= 1 <= kappa_high, got {kappa_low}, {kappa_high}")
        if phase_horizon < 2:
            raise ValueError(f"phase_horizon must be >= 2 steps, got {phase_horizon}")
        self.entropy_coef, self.smooth_coef, self.penalty = float(entropy_coef), float(smooth_coef), float(penalty)
        self.kappa_low, self.kappa_high = float(kappa_low), float(kappa_high)
        self.phase_weighting, self.phase_horizon = bool(phase_weighting), int(phase_horizon)
        self.hist_sum, self.hist_count = 0.0, 0  # over finished steps
        self._sum, self._count = 0.0, 0  # tokens of the current step
        # multi-turn: the same per turn index τ (lists indexed by τ)
        self.turn_hist_sum: list[float] = []
        self.turn_hist_count: list[int] = []
        self._turn_sum: list[float] = []
        self._turn_count: list[int] = []

    @property
    def history_mean(self) -> float | None:
        return self.hist_sum / self.hist_count if self.hist_count else None

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        mask_BT = as_bool_mask(inp.mask_BT)
        h_BT = zero_invalid(inp.entropy_BT, mask_BT)
        self._sum += float(masked_sum(h_BT.detach().float(), mask_BT))
        self._count += int(mask_BT.sum())
        loss_BT = -self.entropy_coef * h_BT
        hbar = self.history_mean
        weight = epo_phase_weight(inp.step, horizon=self.phase_horizon) if self.phase_weighting else 1.0
        metrics: Metrics = {"entropy/epo_history_mean": hbar or 0.0, "entropy/epo_phase_weight": weight}
        turn_id_BT = inp.extras.get("turn_id_BT")
        if turn_id_BT is not None:  # multi-turn: a band per turn index
            return self._per_turn(h_BT, mask_BT, turn_id_BT.to(h_BT.device), loss_BT, weight, metrics)
        if hbar is not None:
            band_BT = epo_band_penalty(h_BT, hbar, kappa_low=self.kappa_low, kappa_high=self.kappa_high)
            # upstream: pg − β_H·(agg(H) − β_s·agg(P)), P = w·λ·[out of band]: β_H multiplies the band too
            loss_BT = loss_BT + self.entropy_coef * self.smooth_coef * weight * self.penalty * band_BT
            metrics["entropy/epo_in_band_frac"] = frac(band_BT.detach() == 0, mask_BT)
            n = int(mask_BT.sum())
            metrics["entropy/epo_penalty"] = float(masked_sum(band_BT.detach(), mask_BT)) / n if n else 0.0
        else:
            metrics["entropy/epo_in_band_frac"] = 1.0
            metrics["entropy/epo_penalty"] = 0.0
        return zero_invalid(loss_BT, mask_BT), metrics

    def _per_turn(self, h_BT: torch.Tensor, mask_BT: torch.Tensor, turn_id_BT: torch.Tensor, loss_BT: torch.Tensor,
                  weight: float, metrics: Metrics) -> tuple[torch.Tensor, Metrics]:
        """The band of each model token around its turn's historical mean H̄_τ (turn ids −1: no band)."""
        valid_BT = mask_BT & (turn_id_BT >= 0)
        n_turns = int(turn_id_BT[valid_BT].max()) + 1 if bool(valid_BT.any()) else 0
        self._grow(n_turns)
        h = h_BT.detach().float()
        for k in range(n_turns):
            in_k = valid_BT & (turn_id_BT == k)
            self._turn_sum[k] += float(masked_sum(h, in_k))
            self._turn_count[k] += int(in_k.sum())
        known = [c > 0 for c in self.turn_hist_count]
        means = [s / c if c else 0.0 for s, c in zip(self.turn_hist_sum, self.turn_hist_count)]
        idx_BT = turn_id_BT.clamp(min=0, max=max(0, len(means) - 1))
        hbar_BT = torch.tensor(means or [0.0], dtype=h_BT.dtype, device=h_BT.device)[idx_BT]
        smooth_BT = valid_BT & torch.tensor(known or [False], device=h_BT.device)[idx_BT]
        band_BT = epo_band_penalty(h_BT, hbar_BT, kappa_low=self.kappa_low, kappa_high=self.kappa_high)
        band_BT = torch.where(smooth_BT, band_BT, torch.zeros_like(band_BT))
        loss_BT = loss_BT + self.entropy_coef * self.smooth_coef * weight * self.penalty * band_BT
        n = int(smooth_BT.sum())
        metrics["entropy/epo_in_band_frac"] = frac(band_BT.detach() == 0, smooth_BT) if n else 1.0
        metrics["entropy/epo_penalty"] = float(masked_sum(band_BT.detach(), smooth_BT)) / n if n else 0.0
        return zero_invalid(loss_BT, mask_BT), metrics

    def _grow(self, n_turns: int) -> None:
        for lst, zero in ((self.turn_hist_sum, 0.0), (self.turn_hist_count, 0), (self._turn_sum, 0.0),
                          (self._turn_count, 0)):
            lst.extend([zero] * (n_turns - len(lst)))

    def on_step_end(self, metrics: dict | None = None) -> None:
        """Append this step's token-mean entropy to the history (and each turn's, for the turns it had)."""
        if self._count:
            self.hist_sum += self._sum / self._count
            self.hist_count += 1
        self._sum, self._count = 0.0, 0
        for k, (s, c) in enumerate(zip(self._turn_sum, self._turn_count)):
            if c:
                self.turn_hist_sum[k] += s / c
                self.turn_hist_count[k] += 1
        self._turn_sum = [0.0] * len(self._turn_sum)
        self._turn_count = [0] * len(self._turn_count)

    def state_dict(self) -> dict:
        return {"hist_sum": self.hist_sum, "hist_count": self.hist_count, "sum": self._sum, "count": self._count,
                "turn_hist_sum": list(self.turn_hist_sum), "turn_hist_count": list(self.turn_hist_count),
                "turn_sum": list(self._turn_sum), "turn_count": list(self._turn_count)}

    def load_state_dict(self, state: dict) -> None:
        self.hist_sum, self.hist_count = float(state["hist_sum"]), int(state["hist_count"])
        self._sum, self._count = float(state["sum"]), int(state["count"])
        # checkpoints written before per-turn histories existed have none
        self.turn_hist_sum = [float(v) for v in state.get("turn_hist_sum", [])]
        self.turn_hist_count = [int(v) for v in state.get("turn_hist_count", [])]
        self._turn_sum = [float(v) for v in state.get("turn_sum", [])]
        self._turn_count = [int(v) for v in state.get("turn_count", [])]
