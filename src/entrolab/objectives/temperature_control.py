"""AEPO and DCPO as registered advantage estimators, driven by the trainer's sampling hooks.

Both own a :class:`~entrolab.objectives.temperature.TemperatureSwitch` fed, after every step, with
the update's entropy proxy (``policy/nll`` = −mean log π_θ of the trained tokens, what upstream logs
as ``actor/entropy_loss``), and both start from GRPO advantages. The math is in ``temperature.py``.

* ``aepo`` asks for one extra sampling pass (``side_rollouts``) on the first ``prompt_frac`` of the
  step's prompts at the switched temperature and merges the selected side samples into the update
  batch with advantage +1 (``merge_side``). The trainer scores side samples at the main temperature,
  so the side term's gradient is ∇log π_θ at T = 1 on samples from π^T.
* ``dcpo`` asks for the sampled tokens' log-probs at the switched temperature
  (``scoring_temperatures``) and mixes the temperature ratio into the advantage.

Method pages: ``docs/methods/aepo.md``, ``dcpo.md``.
"""

from __future__ import annotations

from typing import Literal

import torch

from entrolab.advantages.common import adv_metrics, broadcast_tokens, require_rewards
from entrolab.advantages.baselines import grpo_advantage
from entrolab.objectives.temperature import (
    TemperatureSwitch,
    aepo_select,
    dcpo_mix_advantages,
    temperature_ratio,
)
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch, SideRequest, logp_at_temperature_key

#: Which step metric the controller reads: the NLL proxy (upstream) or the full-vocabulary
#: behaviour entropy of the main batch.
MEASURES = {"nll": "policy/nll", "entropy": "policy/entropy"}


class _Controlled:
    """Shared part: GRPO settings, the temperature switch and its per-step measurement."""

    name = "controller"
    #: The advantage is GRPO's, which is 0 for every group of one.
    min_group_size = 2

    def __init__(self, *, target: float, t_high: float, t_low: float, measure: str, eps: float,
                 scale_by_std: bool):
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {sorted(MEASURES)}, got '{measure}'")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.switch = TemperatureSwitch(target=target, t_high=t_high, t_low=t_low)
        self.measure, self.eps, self.scale_by_std = measure, float(eps), bool(scale_by_std)

    def grpo(self, batch: RolloutBatch) -> torch.Tensor:
        return grpo_advantage(require_rewards(batch, self.name), batch.group_id_B.cpu(), eps=self.eps,
                              scale_by_std=self.scale_by_std)

    def on_step_end(self, metrics: dict[str, float]) -> None:
        key = MEASURES[self.measure]
        if key not in metrics:
            raise ValueError(f"{self.name}: the step metrics lack '{key}' (measure='{self.measure}')")
        self.switch.update(metrics[key])

    def controller_metrics(self) -> Metrics:
        return {f"{self.name}/entropy_measured": self.switch.entropy}

    def state_dict(self) -> dict:
        return {"switch": self.switch.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.switch.load_state_dict(state["switch"])


@ADVANTAGES.register("aepo", paper="Arbitrary Entropy Policy Optimization: Entropy Is Controllable in "
                     "Reinforcement Fine-tuning", arxiv="2510.08141")
class AEPO(_Controlled):
    """AEPO: GRPO plus positive-only REINFORCE on a side batch sampled at an entropy-switched temperature.

    ∇J = ∇J_GRPO + α·E_{o~π^T}[∇log π_θ(o)·R] (AEPO §3, as the released code runs it): T = t_high
    while the previous step's measured entropy H ≤ target, else t_low; side samples whose group
    advantage exceeds ``threshold`` get advantage +1 on every token; k = min(max_samples, #kept),
    halved when H > target. ``merge="replace"`` puts them in place of the first k main rows (upstream:
    the batch size stays fixed), ``"append"`` adds them. α is implicit: the side tokens' share.

    Args:
        target: H_target (script 0.5). t_high / t_low: side temperatures (1.2 / 0.8).
        prompt_frac: share of the step's prompts resampled (upstream the first quarter; at least one).
        group_size: side samples per prompt (None = the recipe's group size, as upstream).
        threshold: minimum side group advantage to keep a sample (0.05). max_samples: cap on k (60).
        merge: ``replace`` or ``append``. measure: ``nll`` (upstream) or ``entropy``.
        eps, scale_by_std: GRPO settings of the main and side advantages.
    Metrics: ``aepo/temperature`` (the side batch's recorded sampling temperature),
    ``aepo/entropy_measured``, ``aepo/side_rows``, ``aepo/side_pass_rate``, ``aepo/side_candidates``,
    ``aepo/side_kept``, ``aepo/side_token_frac``.
    """

    name = "aepo"

    def __init__(self, *, target: float = 0.5, t_high: float = 1.2, t_low: float = 0.8, prompt_frac: float = 0.25,
                 group_size: int | None = None, threshold: float = 0.05, max_samples: int = 60,
                 merge: Literal["replace", "append"] = "replace", measure: Literal["nll", "entropy"] = "nll",
                 eps: float = 1e-6, scale_by_std: bool = True):
        super().__init__(target=target, t_high=t_high, t_low=t_low, measure=measure, eps=eps,
                         scale_by_std=scale_by_std)
        if not 0 < prompt_frac <= 1:
            raise ValueError(f"prompt_frac must be in (0, 1], got {prompt_frac}")
        if group_size is not None and group_size < 1:
            raise ValueError(f"group_size must be >= 1 or null, got {group_size}")
        if max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {max_samples}")
        if merge not in ("replace", "append"):
            raise ValueError(f"merge must be 'replace' or 'append', got '{merge}'")
        self.prompt_frac, self.group_size, self.merge = float(prompt_frac), group_size, merge
        self.threshold, self.max_samples = float(threshold), int(max_samples)

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        adv_B = self.grpo(batch)
        return adv_B, adv_metrics(adv_B)

    def side_rollouts(self, batch: RolloutBatch, *, step: int) -> list[SideRequest]:
        """One request: the first ``prompt_frac`` of the prompts (their order is random) at T."""
        n = max(1, int(len(batch.prompts) * self.prompt_frac))
        return [SideRequest(temperature=self.switch.temperature, prompt_idx=tuple(range(n)),
                            group_size=self.group_size)]

    def merge_side(self, batch: RolloutBatch, sides: list[RolloutBatch]) -> tuple[RolloutBatch, Metrics]:
        """The update batch: the k selected side rows (advantage +1) then the main rows."""
        if len(sides) != 1:
            raise ValueError(f"aepo asked for one side batch and got {len(sides)}")
        side = sides[0]
        adv_side_B = self.grpo(side)
        above = self.switch.entropy > self.switch.target
        idx_K, ones_K = aepo_select(adv_side_B, threshold=self.threshold, max_samples=self.max_samples,
                                    above_target=above)
        recorded = side.extras.get("sampling_temperature_B")
        metrics = {
            "aepo/temperature": float(recorded[0]) if recorded is not None and recorded.numel() else
            self.switch.temperature,
            **self.controller_metrics(),
            "aepo/side_rows": float(side.batch_size),
            "aepo/side_pass_rate": float(side.correct_B.float().mean()) if side.verdicts else 0.0,
            "aepo/side_candidates": float((adv_side_B > self.threshold).sum()),
            "aepo/side_kept": float(idx_K.numel()),
            "aepo/side_token_frac": 0.0,
        }
        if idx_K.numel() == 0:  # upstream crashes here (selection returns None); we train on the main batch
            return batch, metrics
        chosen = side.select(idx_K)
        device = batch.adv_BT.device
        chosen.adv_BT = ones_K.to(device)[:, None] * chosen.mask_BT.to(device)  # +1 on valid tokens, 0 on pads
        rest = batch
        if self.merge == "replace":
            k = min(int(idx_K.numel()), batch.batch_size)
            rest = batch.select(torch.arange(k, batch.batch_size))
        merged = RolloutBatch.concat([chosen, rest])
        metrics["aepo/side_token_frac"] = float(chosen.mask_BT.sum()) / max(1.0, float(merged.mask_BT.sum()))
        return merged, metrics


@ADVANTAGES.register("dcpo", paper="Distribution-Centric Policy Optimization Dominates Exploration-Exploitation "
                     "Trade-off", arxiv="2601.12730")
class DCPO(_Controlled):
    """DCPO: GRPO advantage mixed with the temperature ratio of correct responses, Ã = (1−α)A + α·b·ρ.

    ρ_t = π_old^T(o_t)/π_old(o_t) from a second no-grad forward at T (``scoring_temperatures``),
    T = t_high while the previous step's H ≤ target else t_low; α = α₁/(1+α₁), α₁ = min(|target − H|,
    alpha_cap)/p_correct over the whole batch; b = 1[R > correct_threshold] as upstream (the verifier's
    0/1 reward makes it "correct"). p_correct = 0 gives α = 0 (upstream: NaN advantages).

    Args:
        target: H_target (script 0.5; the README ablation found 0.25 best on Qwen2.5-Math-7B).
        t_high / t_low: the ratio's temperatures (hard-coded 1.2 / 0.8 upstream). alpha_cap: 0.1.
        correct_threshold: reward above which b = 1 (0.05). measure: ``nll`` (upstream) or ``entropy``.
        eps, scale_by_std: GRPO settings.
    Metrics: ``dcpo/temperature``, ``dcpo/alpha``, ``dcpo/p_correct``, ``dcpo/rho_mean`` (over valid
    tokens of correct responses; 0 when none), ``dcpo/entropy_measured``.
    """

    name = "dcpo"
    # Its GRPO part is 0 for groups of one, but the α·b·ρ term still weighs correct responses, so a
    # group of one loses only part of the signal: a warning, not an error.
    min_group_size = 1
    advised_group_size = 2

    #: Reads the behaviour log-probs batch.old_logp_BT (the ratio's denominator) before the update.
    requires = frozenset({"old_stats"})

    def __init__(self, *, target: float = 0.5, t_high: float = 1.2, t_low: float = 0.8, alpha_cap: float = 0.1,
                 correct_threshold: float = 0.05, measure: Literal["nll", "entropy"] = "nll", eps: float = 1e-6,
                 scale_by_std: bool = True):
        super().__init__(target=target, t_high=t_high, t_low=t_low, measure=measure, eps=eps,
                         scale_by_std=scale_by_std)
        if alpha_cap < 0:
            raise ValueError(f"alpha_cap must be >= 0, got {alpha_cap}")
        self.alpha_cap, self.correct_threshold = float(alpha_cap), float(correct_threshold)

    def scoring_temperatures(self, *, step: int) -> tuple[float, ...]:
        return (self.switch.temperature,)

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        temperature = self.switch.temperature
        key = logp_at_temperature_key(temperature)
        if key not in batch.extras:
            raise ValueError(f"dcpo needs batch.extras['{key}'] (log-probs at T={temperature:g}); the trainer "
                             "computes it through the scoring_temperatures hook")
        if batch.old_logp_BT is None:
            raise ValueError("dcpo needs batch.old_logp_BT (behaviour log-probs)")
        mask_BT = batch.mask_BT.cpu()
        rewards_B = require_rewards(batch, self.name)
        adv_BT = broadcast_tokens(self.grpo(batch), mask_BT)
        rho_BT = temperature_ratio(batch.extras[key].float().cpu(), batch.old_logp_BT.float().cpu(), mask_BT)
        correct_B = rewards_B.float().cpu() > self.correct_threshold
        mixed_BT, alpha = dcpo_mix_advantages(adv_BT, correct_B, rho_BT, mask_BT, entropy=self.switch.entropy,
                                              target=self.switch.target, alpha_cap=self.alpha_cap)
        on_BT = mask_BT & correct_B[:, None]
        n_on = int(on_BT.sum())
        metrics = {**adv_metrics(mixed_BT, mask_BT), **self.controller_metrics(),
                   "dcpo/temperature": temperature, "dcpo/alpha": alpha,
                   "dcpo/p_correct": float(correct_B.float().mean()) if correct_B.numel() else 0.0,
                   "dcpo/rho_mean": float(rho_BT[on_BT].sum()) / n_on if n_on else 0.0}
        return mixed_BT, metrics
