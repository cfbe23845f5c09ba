"""SPEAR: self-imitation with progressive exploration for agentic RL.

Qian et al., "Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive Exploration for
Agentic Reinforcement Learning" (arXiv 2509.22601); released code TencentYoutuResearch/SPEAR
(``TrajectoryBufferBatch``, the replay loss in ``dp_actor.py``). See docs/methods/spear.md.

The estimator gives the on-policy rows Dr.GRPO/GRPO advantages and runs self-imitation through the
trainer's ``replay_rows`` hook:

1. every step, each prompt group's reward mean and (population) std enter a FIFO baseline history;
2. rows of the step's batch with a positive advantage enter the replay buffer (rows older than
   ``tolerate_steps`` are evicted first);
3. when more than ``fire_factor · buffer_size`` buffered rows beat the CURRENT baseline, the whole
   buffer is replayed once and reset: each row's advantage is recalibrated against the current
   baseline, Â = R − P50(history means) (÷ (P50(history stds) + eps) with ``scale_by_std``), rows
   with Â ≤ 0 are dropped, a random largest-power-of-two subset of at most ``buffer_size`` rows is
   kept, and their advantage is Â times the self-imitation weight, which ramps up over training:
   c_rep·(1 − cos(π·t/T_rep))/2 for t ≤ T_rep, then c_rep.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from entrolab.advantages.baselines import grpo_advantage
from entrolab.advantages.common import adv_metrics, group_index, require_rewards
from entrolab.advantages.replay import ReplayBuffer
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch

#: Row extra marking replayed rows (True) in the update batch; the hook adds it (False) to the main batch.
REPLAY_KEY = "replay_B"


# --------------------------------------------------------------------------- pure functions
def replay_weight(step: int, *, coef: float = 1.0, ramp_steps: int = 200) -> float:
    """Self-imitation weight at ``step``: c·(1 − cos(π·t/T))/2 for t ≤ T, then c (SPEAR's replay-loss
    schedule, ``max_replay_loss_steps`` = T); ``ramp_steps`` 0 gives c from the start."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return float(coef)
    return float(coef) * (1.0 - math.cos(math.pi * max(0, step) / ramp_steps)) / 2.0


@torch.no_grad()
def group_reward_stats(rewards_B: torch.Tensor, group_id_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group reward mean and population std (ddof 0, as ``np.std`` upstream): ``(mean_K, std_K)``
    in the order of the sorted group labels."""
    r = rewards_B.detach().double().cpu()
    inv_B, count_K = group_index(group_id_B.cpu())
    n_K = count_K.double()
    mean_K = torch.zeros_like(n_K).index_add_(0, inv_B, r) / n_K
    var_K = torch.zeros_like(n_K).index_add_(0, inv_B, (r - mean_K[inv_B]) ** 2) / n_K
    return mean_K, var_K.sqrt()


@torch.no_grad()
def recalibrated_advantage(returns_B: torch.Tensor, mean_hist_N: torch.Tensor, std_hist_N: torch.Tensor, *,
                           scale_by_std: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """SPEAR's advantage of replayed rows against the current baseline (``weight_decay = −1`` path):
    Â_i = R_i − P50(mean_hist), divided by P50(std_hist) + eps with ``scale_by_std``. P50 is the
    linearly interpolated median (``np.percentile(·, 50)``).

    Args:
        returns_B: [B] rewards of the replayed rows; mean_hist_N, std_hist_N: [N] stored group
            means and stds (N ≥ 1).
    Returns:
        adv_B: [B] float64.
    """
    if mean_hist_N.numel() == 0:
        raise ValueError("recalibrated_advantage: empty baseline history")
    adv_B = returns_B.double() - torch.quantile(mean_hist_N.double(), 0.5)
    if scale_by_std:
        adv_B = adv_B / (torch.quantile(std_hist_N.double(), 0.5) + eps)
    return adv_B


def power_of_two_floor(n: int) -> int:
    """Largest power of two ≤ n (0 for n < 1)."""
    return 0 if n < 1 else 1 << (int(n).bit_length() - 1)


# --------------------------------------------------------------------------- the component
@ADVANTAGES.register("spear", paper="Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive "
                     "Exploration for Agentic Reinforcement Learning", arxiv="2509.22601")
class SPEAR:
    """SPEAR: (Dr.)GRPO advantages plus self-imitation replay of past positive rows, recalibrated.

    Args:
        scale_by_std: divide by the std, both on-policy (GRPO) and in the recalibration (SPEAR
            scripts: False, Dr.GRPO-style).
        eps: added to the std.
        buffer_size: at most this many rows per replay (rounded down to a power of two).
        fire_factor: replay when more than ``fire_factor · buffer_size`` buffered rows beat the baseline.
        baseline_size: group statistics kept in the FIFO baseline history.
        tolerate_steps: rows sampled more than this many steps ago are evicted.
        replay_coef, replay_ramp_steps: the self-imitation weight c_rep and its ramp length T_rep.
        seed: seeds the random power-of-two subsample (its generator state is checkpointed).
    Metrics: ``spear/buffer_rows``, ``spear/buffer_positive``, ``spear/baseline`` (P50 of the history
    means), ``spear/replay_weight``, ``spear/replayed`` (rows replayed this step),
    ``spear/replay_adv_mean``, ``spear/evicted``; they reach the step's log through ``on_step_end``.
    """

    #: On-policy part is group-relative: a group of one trains nothing.
    min_group_size = 2

    def __init__(self, *, scale_by_std: bool = False, eps: float = 1e-6, buffer_size: int = 2048,
                 fire_factor: float = 1.5, baseline_size: int = 10240, tolerate_steps: int = 5,
                 replay_coef: float = 1.0, replay_ramp_steps: int = 200, seed: int = 0):
        if buffer_size < 1 or baseline_size < 1:
            raise ValueError(f"buffer_size and baseline_size must be >= 1, got {buffer_size}, {baseline_size}")
        if fire_factor < 0 or replay_coef < 0 or eps < 0:
            raise ValueError(f"fire_factor, replay_coef and eps must be >= 0, got {fire_factor}, {replay_coef}, {eps}")
        self.scale_by_std, self.eps = bool(scale_by_std), float(eps)
        self.buffer_size, self.fire_factor, self.baseline_size = int(buffer_size), float(fire_factor), int(baseline_size)
        self.replay_coef, self.replay_ramp_steps = float(replay_coef), int(replay_ramp_steps)
        self.buffer = ReplayBuffer(tolerate_steps=tolerate_steps)
        self.mean_hist_N = torch.zeros(0, dtype=torch.float64)
        self.std_hist_N = torch.zeros(0, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.metrics: Metrics = {}

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        adv_B = grpo_advantage(require_rewards(batch, "spear"), batch.group_id_B.cpu(), eps=self.eps,
                               scale_by_std=self.scale_by_std)
        return adv_B, adv_metrics(adv_B)

    # ------------------------------------------------------------------ replay
    def record_baseline(self, batch: RolloutBatch) -> None:
        """Append the batch's group reward means/stds to the FIFO history (at most ``baseline_size``)."""
        mean_K, std_K = group_reward_stats(require_rewards(batch, "spear"), batch.group_id_B)
        self.mean_hist_N = torch.cat([self.mean_hist_N, mean_K])[-self.baseline_size:]
        self.std_hist_N = torch.cat([self.std_hist_N, std_K])[-self.baseline_size:]

    def replay_rows(self, batch: RolloutBatch, *, step: int) -> RolloutBatch | None:
        """Trainer hook: record the baseline, maybe replay the buffer, then buffer this batch's winners.

        The buffer replayed at step t holds rows of steps < t (as upstream, where rows enter after
        the on-policy update); the baseline they are recalibrated against includes step t's groups.
        """
        if batch.adv_BT is None:
            raise ValueError("spear.replay_rows: batch.adv_BT is None (run the advantage stage first)")
        self.record_baseline(batch)
        batch.extras.setdefault(REPLAY_KEY, torch.zeros(batch.batch_size, dtype=torch.bool))
        weight = replay_weight(step, coef=self.replay_coef, ramp_steps=self.replay_ramp_steps)
        out, m = self._replay(batch, weight=weight)
        mask_BT = batch.mask_BT.to(batch.adv_BT.device)
        winners_B = ((batch.adv_BT * mask_BT).sum(-1) > 0).cpu()  # upstream: sign of the row's mean advantage
        m["spear/evicted"] = float(self.buffer.add(batch.select(winners_B.nonzero().flatten()), step=step))
        m["spear/buffer_rows"] = float(len(self.buffer))
        self.metrics = m
        return out

    def _replay(self, batch: RolloutBatch, *, weight: float) -> tuple[RolloutBatch | None, Metrics]:
        m: Metrics = {"spear/baseline": float(torch.quantile(self.mean_hist_N, 0.5)), "spear/replay_weight": weight,
                      "spear/replayed": 0.0, "spear/replay_adv_mean": 0.0, "spear/buffer_positive": 0.0}
        if self.buffer.rows is None:
            return None, m
        adv_B = recalibrated_advantage(self.buffer.rows.rewards_B.cpu(), self.mean_hist_N, self.std_hist_N,
                                       scale_by_std=self.scale_by_std, eps=self.eps)
        positive_B = adv_B > 0  # rows with Â = 0 carry no gradient and would only dilute the token mean
        m["spear/buffer_positive"] = float(positive_B.sum())
        if weight <= 0 or not float(positive_B.sum()) > self.fire_factor * self.buffer_size:
            return None, m
        rows, _ = self.buffer.take()
        idx = positive_B.nonzero().flatten()
        k = power_of_two_floor(min(idx.numel(), self.buffer_size))
        idx = idx[torch.randperm(idx.numel(), generator=self.generator)[:k]].sort().values
        out = rows.select(idx)
        adv_k = (adv_B[idx] * weight).float()
        out.adv_BT = adv_k[:, None] * out.mask_BT.float()
        out.temperature, out.step = batch.temperature, batch.step
        out.extras[REPLAY_KEY] = torch.ones(k, dtype=torch.bool)
        m.update({"spear/replayed": float(k), "spear/replay_adv_mean": float(adv_k.double().mean())})
        return out, m

    def on_step_end(self, metrics: dict[str, Any]) -> None:
        """Hand the replay metrics of this step to the step's log."""
        metrics.update(self.metrics)
        self.metrics = {}

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict(), "mean_hist_N": self.mean_hist_N.clone(),
                "std_hist_N": self.std_hist_N.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.mean_hist_N = state["mean_hist_N"].clone().double()
        self.std_hist_N = state["std_hist_N"].clone().double()
        self.generator.set_state(state["generator"])
