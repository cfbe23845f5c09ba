"""SAFE: an entropy-gated KL penalty whose threshold a PID controller sets from reward velocity.

Maity, "SAFE: Stable Alignment Finetuning with Entropy-Aware Predictive Control for RLHF",
arXiv 2602.04651. Per optimizer step:

* reward EMA m ← 0.95·m + 0.05·r̄; velocity v = Δm; error e = v − v*; PID output
  u = K_p·e + K_i·clip(Σe, ±1) + K_d·(e − e_prev) with (K_p, K_i, K_d) = (0.3, 0.01, 0.05);
* phase φ from the reward history: < 50 steps WARMUP 1.5; mean(last 50) > mean(previous 50) +
  0.01 CLIMBING 1.2; std(last 50) < 0.02 and mean > 0.7 CONVERGED 1.0; else PLATEAU 0.8;
* threshold τ = clip((τ_0 + u)·φ, 0.1, 0.6);
* KL EMA k_s ← 0.9·k_s + 0.1·k̄, k̄ the step's token-mean k1 estimate of KL(π_θ ‖ π_ref).

Per micro-batch the penalty is P = c·g·relu(k_s' − τ)² with k_s' = 0.9·sg[k_s] + 0.1·k and
entropy gate g = max(0.5, H_floor/(H̄ + 0.1)), H̄ the micro-batch's mean entropy (detached). k is
the micro-batch's token-mean KL estimate: its *value* is the k1 mean (SAFE's measurement, also fed
to the EMA and compared with τ), its *gradient* is that of the k2 mean (``kl_k1_with_k2_gradient``).
P is one number per micro-batch and is returned as a 0-dim loss: the policy update adds it once,
after the policy-loss aggregation (upstream: L = L_pol + 0.5·L_V + P − 0.01·H̄).

Where we differ: the released code computes P from python floats, so it carries **no gradient**
and never affects training; ours differentiates through k. Differentiating the k1 mean would not
help: its pathwise gradient over on-policy samples is the mean score ∇log π, zero in expectation
(no pull toward π_ref). The k2 gradient δ·∇log π has expectation exactly ∇KL(π_θ ‖ π_ref) on
on-policy samples (Schulman, "Approximating KL Divergence"; "On a few pitfalls in KL divergence
gradient estimation for RL"). The double soft-min critic of the paper needs a value head, which
the trainer does not have yet: it is not implemented (see docs/methods/safe_kl.md).
"""

from __future__ import annotations

import statistics

import torch

from entrolab.objectives._util import as_bool_mask, check_positive, masked_mean
from entrolab.registry import REGULARIZERS
from entrolab.types import Metrics, PolicyInputs

PHASES = {"warmup": (0, 1.5), "climbing": (1, 1.2), "converged": (2, 1.0), "plateau": (3, 0.8)}


class RewardPID:
    """PID on reward velocity (SAFE ``pid.py``): returns u after each observed mean reward."""

    def __init__(self, *, kp=0.3, ki=0.01, kd=0.05, target_velocity=0.001, ema=0.95, integral_clip=1.0):
        self.kp, self.ki, self.kd, self.target_velocity = kp, ki, kd, target_velocity
        self.ema_decay, self.integral_clip = ema, integral_clip
        self.ema: float | None = None
        self.integral, self.prev_error, self.output = 0.0, 0.0, 0.0

    def update(self, reward_mean: float) -> float:
        if self.ema is None:  # first observation: no velocity yet
            self.ema = reward_mean
            return self.output
        new = self.ema_decay * self.ema + (1 - self.ema_decay) * reward_mean
        error = (new - self.ema) - self.target_velocity
        self.ema = new
        self.integral += error
        i_term = max(-self.integral_clip, min(self.integral_clip, self.integral))
        self.output = self.kp * error + self.ki * i_term + self.kd * (error - self.prev_error)
        self.prev_error = error
        return self.output

    def state_dict(self) -> dict:
        return {"ema": self.ema, "integral": self.integral, "prev_error": self.prev_error, "output": self.output}

    def load_state_dict(self, s: dict) -> None:
        self.ema, self.integral, self.prev_error, self.output = s["ema"], s["integral"], s["prev_error"], s["output"]


def detect_phase(history: list[float], *, window: int = 50) -> str:
    """SAFE's phase detector over the per-step mean-reward history."""
    if len(history) < window:
        return "warmup"
    last, prev = history[-window:], history[-2 * window:-window]
    if prev and statistics.fmean(last) > statistics.fmean(prev) + 0.01:
        return "climbing"
    if statistics.pstdev(last) < 0.02 and statistics.fmean(last) > 0.7:
        return "converged"
    return "plateau"


def kl_k1_with_k2_gradient(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Token-mean KL(π_θ ‖ π_ref) estimate with the k1 value and the k2 gradient (0-dim).

    With δ_t = log π_θ(o_t) − log π_ref(o_t) over valid tokens: value mean(δ) (k1, unbiased for the
    KL on on-policy samples; SAFE's measurement), gradient ∇ mean(½δ²) = mean(δ·∇log π_θ). Over
    on-policy samples E_π[δ·∇log π] = ∇KL(π ‖ π_ref) − E_π[∇log π] = ∇KL, exactly; the gradient of
    mean(δ) itself is the mean score, zero in expectation.

    Args:
        logp_BT: log π_θ of the sampled tokens [B, T] (carries gradient).
        ref_logp_BT: log π_ref of the same tokens [B, T] (detached here).
        mask_BT: bool [B, T], True = valid. No valid token gives 0.
    """
    delta_BT = torch.where(mask_BT, logp_BT - ref_logp_BT.detach(), torch.zeros((), dtype=logp_BT.dtype))
    k1 = masked_mean(delta_BT, mask_BT)
    k2 = masked_mean(0.5 * delta_BT.square(), mask_BT)
    return k1.detach() + (k2 - k2.detach())


def safe_penalty(kl_smoothed: torch.Tensor, threshold: float, entropy_mean: float, *, coef=0.1, h_floor=2.0):
    """(P, gate): P = coef·g·relu(k_s − τ)², g = max(0.5, H_floor/(H̄ + 0.1))."""
    gate = max(0.5, h_floor / (entropy_mean + 0.1))
    return coef * gate * torch.relu(kl_smoothed - threshold).square(), gate


@REGULARIZERS.register("safe_kl", paper="SAFE: Stable Alignment Finetuning with Entropy-Aware Predictive Control for RLHF",
                       arxiv="2602.04651")
class SafeKL:
    """SAFE's entropy-gated KL penalty with a PID/phase-controlled threshold (differentiable).

    Returns a 0-dim loss (a batch-level penalty, added once after aggregation; docs/CONTRACTS.md).

    Args:
        coef: penalty coefficient (0.1). h_floor: entropy gate floor H_floor (2.0).
        base_threshold: τ_0 (0.3). kl_ema: decay of the KL EMA k_s (0.9).
        target_velocity: v* of the PID (0.001). window: phase-detector window (50 steps).
    Metrics: ``kl/safe_threshold`` (τ), ``kl/safe_smoothed`` (k_s'), ``kl/safe_penalty`` (P),
    ``kl/safe_gate`` (g), ``kl/safe_phase`` (0 warmup, 1 climbing, 2 converged, 3 plateau),
    ``kl/safe_active`` (1 when k_s' > τ). State: EMAs, PID, reward history.
    """

    requires = frozenset({"ref_logp"})

    def __init__(
        self,
        *,
        coef: float = 0.1,
        h_floor: float = 2.0,
        base_threshold: float = 0.3,
        kl_ema: float = 0.9,
        target_velocity: float = 0.001,
        window: int = 50,
    ):
        check_positive("coef", coef, allow_zero=True)
        check_positive("h_floor", h_floor)
        if not 0 <= kl_ema < 1:
            raise ValueError(f"kl_ema must be in [0, 1), got {kl_ema}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.coef, self.h_floor, self.base_threshold, self.kl_ema = float(coef), float(h_floor), base_threshold, kl_ema
        self.window = int(window)
        self.pid = RewardPID(target_velocity=target_velocity)
        self.kl_smoothed, self.rewards_history = 0.0, []
        self.phase = "warmup"
        self._kl_sum = self._reward_sum = 0.0
        self._kl_n = self._reward_n = 0

    @property
    def threshold(self) -> float:
        return min(0.6, max(0.1, (self.base_threshold + self.pid.output) * PHASES[self.phase][1]))

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        if inp.ref_logp_BT is None:
            raise ValueError("safe_kl needs ref_logp_BT (requires={'ref_logp'}); the trainer did not provide it")
        mask_BT = as_bool_mask(inp.mask_BT)
        k = kl_k1_with_k2_gradient(inp.logp_BT, inp.ref_logp_BT, mask_BT)
        n = int(mask_BT.sum())
        self._kl_sum, self._kl_n = self._kl_sum + float(k.detach()) * n, self._kl_n + n
        self._reward_sum += float(inp.rewards_B.float().sum())
        self._reward_n += int(inp.rewards_B.numel())
        smoothed = self.kl_ema * self.kl_smoothed + (1 - self.kl_ema) * k
        h_mean = float(masked_mean(inp.entropy_BT.detach().float(), mask_BT))
        penalty, gate = safe_penalty(smoothed, self.threshold, h_mean, coef=self.coef, h_floor=self.h_floor)
        return penalty.to(inp.logp_BT.dtype), {
            "kl/safe_threshold": self.threshold,
            "kl/safe_smoothed": float(smoothed.detach()),
            "kl/safe_penalty": float(penalty.detach()),
            "kl/safe_gate": gate,
            "kl/safe_phase": float(PHASES[self.phase][0]),
            "kl/safe_active": float(float(smoothed.detach()) > self.threshold),
        }

    def on_step_end(self, metrics: dict | None = None) -> None:
        """Close the step: update the KL EMA, the reward PID and the phase from this step's data."""
        if self._kl_n:
            self.kl_smoothed = self.kl_ema * self.kl_smoothed + (1 - self.kl_ema) * self._kl_sum / self._kl_n
        if self._reward_n:
            r = self._reward_sum / self._reward_n
            self.rewards_history = (self.rewards_history + [r])[-2 * self.window:]
            self.pid.update(r)
            self.phase = detect_phase(self.rewards_history, window=self.window)
        self._kl_sum = self._reward_sum = 0.0
        self._kl_n = self._reward_n = 0

    def state_dict(self) -> dict:
        return {"kl_smoothed": self.kl_smoothed, "rewards_history": list(self.rewards_history), "phase": self.phase,
                "pid": self.pid.state_dict(), "pending": [self._kl_sum, self._kl_n, self._reward_sum, self._reward_n]}

    def load_state_dict(self, state: dict) -> None:
        self.kl_smoothed, self.phase = float(state["kl_smoothed"]), state["phase"]
        self.rewards_history = [float(x) for x in state["rewards_history"]]
        self.pid.load_state_dict(state["pid"])
        self._kl_sum, self._kl_n, self._reward_sum, self._reward_n = state["pending"]
