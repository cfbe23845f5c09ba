"""VERL: effective rank (ER) of response hidden states, its velocity (ERV) and acceleration (ERA), and
the bounded advantage bonus built from them.

"Beyond the Exploration-Exploitation Trade-off: A Hidden State Approach for LLM Reasoning in RLVR"
(arXiv 2509.23808); formulas follow the released code (docs/methods/effective_rank.md).

Deliberate differences from upstream:

* the bonus is added to the advantage of *every* valid token (upstream writes the auxiliary signal on
  the last token only, so the bonus lands on one token per response);
* the advantage bonus is independent of the reward (upstream couples them: with its released
  switches ``add_reward=False, add_adv=True`` the bonus is identically zero);
* hidden states are our policy's last-layer states from the scoring forward (``batch.hidden_BTD``),
  not a patched vLLM's decode-time states.

ER, ERV and ERA have ONE definition, :func:`entrolab.diagnostics.rank.effective_rank_dynamics`
(imported here, so the bonus and the diagnostic can never disagree). Its conventions on degenerate
inputs: ER of a matrix without spread (one row, identical rows) is 1, and ERA is NaN (undefined)
when a response has only two checkpoints; the bonus then treats ERA as carrying no information
(its deviation is 0, so β = ½), where upstream writes ER = 0 and ERA = 0.
"""

from __future__ import annotations

import math

import torch

from entrolab.advantages.baselines import grpo_advantage
from entrolab.advantages.common import adv_metrics, broadcast_tokens, require_rewards
from entrolab.diagnostics.rank import effective_rank, effective_rank_dynamics  # noqa: F401  (one definition)
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch

INDICATORS = ("era", "erv", "er")


def aux_signal(values: dict[str, float], ema: dict[str, float], *, gain: float = 2.0, scale: float = 1.0,
               w_explore: tuple[float, float, float] = (0.0, 0.0, 1.0),
               w_exploit: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> float:
    """``aux = scale·Σ_m w_m·tanh(dev_m)`` with ``dev_m = clip((m − μ_m)/(|μ_m| + 1e-8), −5, 5)``,
    ``β = σ(gain·dev_ERA)``, ``w = β·w_explore + (1 − β)·w_exploit`` over (ERA, ERV, ER).

    An undefined indicator (NaN value or baseline, e.g. ERA of a two-checkpoint response) has
    ``dev_m = 0``: no information, neither explore nor exploit.
    """
    dev = {m: 0.0 if math.isnan(values[m]) or math.isnan(ema[m]) else
           max(-5.0, min(5.0, (values[m] - ema[m]) / (abs(ema[m]) + 1e-8))) for m in INDICATORS}
    beta = 1.0 / (1.0 + math.exp(-gain * dev["era"]))
    return scale * sum((beta * we + (1 - beta) * wx) * math.tanh(dev[m])
                       for m, we, wx in zip(INDICATORS, w_explore, w_exploit))


def bounded_bonus(adv: torch.Tensor, aux: torch.Tensor, *, kappa: float = 2.0) -> torch.Tensor:
    """``A' = A + min(relu(aux), |A|/κ)``: a positive bonus that can never flip the sign of A."""
    return adv + torch.minimum(aux.clamp(min=0), adv.abs() / kappa)


@ADVANTAGES.register("effective_rank", paper="Beyond the Exploration-Exploitation Trade-off: A Hidden State "
                     "Approach for LLM Reasoning in RLVR", arxiv="2509.23808", aliases=("verl_rank",))
class EffectiveRankBonus:
    """GRPO plus VERL's bounded bonus from the effective-rank dynamics of the response's hidden states.

    Needs ``batch.hidden_BTD`` (``requires = {"hidden"}``). The EMA baselines μ_m are updated after use
    with this batch's means (so each batch is compared with the previous ones); on the first batch
    there is no baseline and the bonus is 0. Responses with fewer than two checkpoints get no bonus.
    Logs ``rank/er``, ``rank/erv``, ``rank/era`` (batch means), ``rank/aux_mean``, ``rank/bonus_frac``.
    """

    requires = frozenset({"hidden"})
    #: The bonus is bounded by |A_GRPO|/κ, so with groups of one (A_GRPO = 0) everything is 0.
    min_group_size = 2

    def __init__(self, *, stride: int = 8, max_len: int = 512, gain: float = 2.0, scale: float = 1.0,
                 ema_alpha: float = 0.3, kappa: float = 2.0, eps: float = 1e-6, scale_by_std: bool = True,
                 w_explore: tuple[float, float, float] = (0.0, 0.0, 1.0),
                 w_exploit: tuple[float, float, float] = (0.0, 1.0, 0.0)):
        if stride < 1 or kappa <= 0 or not 0 < ema_alpha <= 1:
            raise ValueError("need stride >= 1, kappa > 0 and 0 < ema_alpha <= 1")
        if len(w_explore) != 3 or len(w_exploit) != 3:
            raise ValueError("w_explore and w_exploit weigh (ERA, ERV, ER): give 3 numbers each")
        self.stride, self.max_len, self.gain, self.scale, self.ema_alpha = stride, max_len, gain, scale, ema_alpha
        self.kappa, self.eps, self.scale_by_std = kappa, eps, scale_by_std
        self.w_explore, self.w_exploit = tuple(map(float, w_explore)), tuple(map(float, w_exploit))
        self.ema: dict[str, float] | None = None

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        if batch.hidden_BTD is None:
            raise ValueError("effective_rank needs batch.hidden_BTD (requires={'hidden'}); the trainer did not set it")
        adv_B = grpo_advantage(require_rewards(batch, "effective_rank"), batch.group_id_B.cpu(), eps=self.eps,
                               scale_by_std=self.scale_by_std)
        hid, lengths = batch.hidden_BTD.detach().float().cpu(), batch.lengths_B.tolist()
        vals = [effective_rank_dynamics(hid[i, :n], stride=self.stride, max_len=self.max_len) if n else None
                for i, n in enumerate(lengths)]
        aux_B = torch.zeros(batch.batch_size)
        if self.ema is not None:
            for i, v in enumerate(vals):
                if v is not None:
                    aux_B[i] = aux_signal(v, self.ema, gain=self.gain, scale=self.scale,
                                          w_explore=self.w_explore, w_exploit=self.w_exploit)
        mask = batch.mask_BT.cpu()
        adv_BT = bounded_bonus(broadcast_tokens(adv_B, mask), aux_B[:, None], kappa=self.kappa) * mask
        have = [v for v in vals if v is not None]
        metrics = adv_metrics(adv_BT, mask)
        if have:
            means = {m: _nanmean([v[m] for v in have]) for m in INDICATORS}
            metrics.update({f"rank/{m}": means[m] for m in INDICATORS if not math.isnan(means[m])})
            # update after use: the next batch compares against this one (an undefined mean leaves
            # that baseline as it was)
            self.ema = means if self.ema is None else {
                m: self.ema[m] if math.isnan(means[m]) else means[m] if math.isnan(self.ema[m])
                else (1 - self.ema_alpha) * self.ema[m] + self.ema_alpha * means[m] for m in INDICATORS}
        metrics["rank/aux_mean"] = float(aux_B.mean()) if aux_B.numel() else 0.0
        metrics["rank/bonus_frac"] = float((aux_B > 0).float().mean()) if aux_B.numel() else 0.0
        return adv_BT, metrics

    def state_dict(self) -> dict:
        return {"ema": None if self.ema is None else dict(self.ema)}

    def load_state_dict(self, state: dict) -> None:
        self.ema = None if state["ema"] is None else dict(state["ema"])


def _nanmean(xs: list[float]) -> float:
    """Mean of the defined values (NaN when there are none)."""
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan
