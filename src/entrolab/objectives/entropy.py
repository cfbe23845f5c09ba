"""Entropy bonus with a fixed coefficient, or an adaptive one steered toward a target entropy.

Fixed: loss_t = −c·H_t, where H_t is the full-vocabulary entropy of the current policy at token t
(``inp.entropy_BT``, from logits divided by the rollout temperature; it carries gradient). The
aggregation (token mean by default) turns it into −c·agg(H), as verl's
``pg_loss − entropy_coeff·agg(entropy)``.

Adaptive (Skywork-OR1, arXiv 2505.22312, §3.2 "adaptive entropy control"; also TRL's
``use_adaptive_entropy``): after each optimizer step with measured token-mean entropy e,
    c ← clip(c + Δ, c_min, c_max) if e ≤ target,   c ← clip(c − Δ, c_min, c_max) otherwise,
and the bonus is applied only while the last measured e is ≤ target (so it can only push entropy
up toward the target, never beyond it). Before the first measurement no bonus is applied (TRL
starts from e = +inf likewise).
"""

from __future__ import annotations

import math

import torch

from entrolab.objectives._util import as_bool_mask, check_positive, masked_sum, zero_invalid
from entrolab.registry import REGULARIZERS
from entrolab.types import Metrics, PolicyInputs


def entropy_bonus_loss(entropy_BT: torch.Tensor, *, coef: float) -> torch.Tensor:
    """Per-token loss −coef·H_t (maximising entropy = minimising its negative)."""
    return -coef * entropy_BT


def adaptive_coef_update(
    coef: float, entropy: float, *, target: float, delta: float, coef_min: float = 0.0, coef_max: float = 1.0
) -> float:
    """One step of the Skywork-OR1 controller: raise c by Δ when entropy ≤ target, else lower it."""
    step = delta if entropy <= target else -delta
    return min(coef_max, max(coef_min, coef + step))


@REGULARIZERS.register("entropy_bonus", paper="baseline")
class EntropyBonus:
    """Entropy bonus −c·H per token; c fixed, or adapted toward ``target`` (Skywork-OR1).

    Args:
        coef: the coefficient c (fixed mode), or its initial value (adaptive mode).
        target: target token-mean entropy in nats; ``None`` keeps c fixed.
        coef_delta: adaptive step Δ per optimizer step (Skywork-OR1 / TRL: 0.005).
        coef_min, coef_max: bounds on the adaptive c.
    Metrics: ``entropy/coef`` (the coefficient applied in this call), ``entropy/bonus_active``
    (1.0 when the bonus is on), ``entropy/measured`` (token-mean entropy of this micro-batch).
    State (adaptive): c, the last measured entropy and the running sums of the current step.
    """

    def __init__(
        self,
        *,
        coef: float = 0.001,
        target: float | None = None,
        coef_delta: float = 0.005,
        coef_min: float = 0.0,
        coef_max: float = 1.0,
    ):
        check_positive("coef", coef, allow_zero=True)
        check_positive("coef_delta", coef_delta, allow_zero=True)
        if target is not None:
            check_positive("target", target, allow_zero=True)
        if not 0 <= coef_min <= coef_max:
            raise ValueError(f"need 0 <= coef_min <= coef_max, got coef_min={coef_min}, coef_max={coef_max}")
        self.coef, self.target = float(coef), target
        self.coef_delta, self.coef_min, self.coef_max = float(coef_delta), float(coef_min), float(coef_max)
        self.last_entropy: float | None = None
        self._sum, self._count = 0.0, 0

    @property
    def active(self) -> bool:
        if self.target is None:
            return True
        return self.last_entropy is not None and self.last_entropy <= self.target

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        mask_BT = as_bool_mask(inp.mask_BT)
        n = int(mask_BT.sum())
        s = float(masked_sum(inp.entropy_BT.detach().float(), mask_BT))
        self._sum, self._count = self._sum + s, self._count + n
        coef = self.coef if self.active else 0.0
        loss_BT = zero_invalid(entropy_bonus_loss(inp.entropy_BT, coef=coef), mask_BT)
        return loss_BT, {
            "entropy/coef": coef,
            "entropy/bonus_active": float(self.active),
            "entropy/measured": s / n if n else 0.0,
        }

    def on_step_end(self, metrics: dict | None = None) -> None:
        """Close the step: measure the entropy seen this step and (adaptive) move c."""
        if self._count == 0:
            return
        self.last_entropy = self._sum / self._count
        self._sum, self._count = 0.0, 0
        if self.target is not None:
            self.coef = adaptive_coef_update(
                self.coef, self.last_entropy, target=self.target, delta=self.coef_delta,
                coef_min=self.coef_min, coef_max=self.coef_max,
            )

    def state_dict(self) -> dict:
        return {"coef": self.coef, "last_entropy": self.last_entropy, "sum": self._sum, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.coef = float(state["coef"])
        last = state["last_entropy"]
        self.last_entropy = None if last is None or (isinstance(last, float) and math.isnan(last)) else float(last)
        self._sum, self._count = float(state["sum"]), int(state["count"])
