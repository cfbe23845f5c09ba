"""EMPG: entropy-modulated policy gradients with step-level scaling and a future-clarity bonus.

Wang et al., "Harnessing Uncertainty: Entropy-Modulated Policy Gradients for Long-Horizon LLM
Agents" (arXiv 2509.09265). No official code was found; formulas follow the paper as restated in
the spec (docs/methods/empg.md).

Steps for single-turn tasks (our definition; the paper's steps are agent turns): the scratchpad is
cut after every delimiter character (default ``, . ; newline``), and the answer marker plus the
answer form one final step (EOS joins it). For Countdown ``3+5=8,7*8=56#7*(3+5)`` the steps are
``3+5=8,`` | ``7*8=56`` | ``#7*(3+5)``. See ``rewards.segments.step_ranges``.

Multi-turn episodes (``batch.extras["turn_id_BT"]`` present): the steps are the agent's turns, as in
the paper; each turn's model tokens form one step and environment tokens (turn id −1) get no
advantage. Without ``turn_id_BT`` the single-turn split above is used unchanged.
"""

from __future__ import annotations

import torch

from entrolab.advantages.baselines import grpo_advantage
from entrolab.advantages.common import adv_metrics, require_rewards
from entrolab.registry import ADVANTAGES
from entrolab.rewards.segments import step_ranges
from entrolab.types import Metrics, RolloutBatch


@torch.no_grad()
def empg_step_advantages(adv_B: torch.Tensor, step_H: list[torch.Tensor], *, k: float = 1.0, k_next: float = 1.0,
                         zeta: float = 0.05, center: bool = True) -> list[torch.Tensor]:
    """Modulated step advantages ``A_mod(i,t) = g(H_{i,t})·A_i + ζ·f(H_{i,t+1})``, then zero-mean.

    ``H̃`` = min–max normalised step entropy over all steps of the batch (``+1e-8`` in the
    denominator); ``g = exp(−k·H̃)/mean_all exp(−k·H̃)`` (batch mean of g is 1: confident steps get
    g > 1); ``f = exp(−k'·H̃_{next})`` and 0 for the last step. With ``center`` the batch mean over
    all steps is subtracted (the paper's final normalisation; no std division).

    Args:
        adv_B: [B] trajectory advantages; step_H: B tensors [S_i] of mean token entropy per step.

    Returns:
        B tensors [S_i] of step advantages.
    """
    flat = torch.cat(step_H).double() if step_H else torch.zeros(0, dtype=torch.float64)
    if flat.numel() == 0:
        return [h.double() for h in step_H]
    lo, hi = flat.min(), flat.max()
    norm = [(h.double() - lo) / (hi - lo + 1e-8) for h in step_H]
    denom = torch.cat([torch.exp(-k * n) for n in norm]).mean()
    out = []
    for a, n in zip(adv_B.double().tolist(), norm):
        g = torch.exp(-k * n) / denom
        f = torch.zeros_like(n)
        f[:-1] = torch.exp(-k_next * n[1:])
        out.append(g * a + zeta * f)
    if center:
        mu = torch.cat(out).mean()
        out = [o - mu for o in out]
    return out


def turn_step_ranges(turn_id_T: torch.Tensor, *, row: int = 0) -> list[range]:
    """One range per agent turn of a row: the positions whose turn id is k, for k = 0, 1, ... in order.

    Args:
        turn_id_T: [T] long, the turn index on model tokens and −1 on environment tokens and pads.
    Raises:
        ValueError (naming ``row`` and the turn) if a turn's tokens are not contiguous.
    """
    out = []
    for k in torch.unique(turn_id_T[turn_id_T >= 0]).tolist():
        pos = (turn_id_T == k).nonzero().flatten()
        lo, hi = int(pos[0]), int(pos[-1]) + 1
        if hi - lo != pos.numel():
            raise ValueError(f"empg: turn {k} of row {row} is not contiguous in extras['turn_id_BT'] "
                             f"(positions {pos.tolist()})")
        out.append(range(lo, hi))
    return out


@ADVANTAGES.register("empg", paper="Harnessing Uncertainty: Entropy-Modulated Policy Gradients for Long-Horizon "
                     "LLM Agents", arxiv="2509.09265")
class EMPG:
    """EMPG: GRPO advantages rescaled per reasoning step by its (normalised) entropy, plus a clarity bonus.

    Step entropy = mean behaviour token entropy over the step's tokens; steps are agent turns when
    the batch has ``extras["turn_id_BT"]`` (multi-turn episodes). The answer marker is
    ``marker`` or, if None, ``batch.extras["answer_marker"]``. Returns ``adv_BT`` (each
    token gets its step's value). Logs ``empg/steps_mean`` (steps per response), ``empg/approx_split_frac``.
    """

    #: The reward enters only through GRPO's group-relative A; with groups of one only the entropy
    #: (clarity) bonus would remain and the reward would never reach the gradient.
    min_group_size = 2

    #: Reads the behaviour entropies batch.entropy_BT before the update.
    requires = frozenset({"old_stats"})

    def __init__(self, *, k: float = 1.0, k_next: float = 1.0, zeta: float = 0.05, delimiters: str = ",.;\n",
                 marker: str | None = None, scale_by_std: bool = True, eps: float = 1e-6, center: bool = True):
        if zeta < 0:
            raise ValueError(f"zeta must be >= 0, got {zeta}")
        self.k, self.k_next, self.zeta, self.delimiters = k, k_next, zeta, delimiters
        self.scale_by_std, self.eps, self.center = scale_by_std, eps, center
        # The estimator contract has no task: the marker comes from here or batch.extras["answer_marker"].
        self.marker = marker

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        if batch.entropy_BT is None:
            raise ValueError("empg needs batch.entropy_BT (behaviour-policy token entropies)")
        adv_B = grpo_advantage(require_rewards(batch, "empg"), batch.group_id_B.cpu(), eps=self.eps,
                               scale_by_std=self.scale_by_std)
        marker = self.marker if self.marker is not None else batch.extras.get("answer_marker")
        ent_BT = batch.entropy_BT.detach().float().cpu()
        steps, inexact = [], 0
        turn_id_BT = batch.extras.get("turn_id_BT")
        for i in range(batch.batch_size):
            if turn_id_BT is not None:  # multi-turn: the paper's steps, one per agent turn
                steps.append(turn_step_ranges(turn_id_BT[i].cpu(), row=i))
                continue
            rng, exact = step_ranges(batch, i, delimiters=self.delimiters, marker=marker)
            steps.append(rng)
            inexact += not exact
        step_H = [torch.stack([ent_BT[i, s.start:s.stop].mean() for s in rs]) if rs else torch.zeros(0)
                  for i, rs in enumerate(steps)]
        step_A = empg_step_advantages(adv_B, step_H, k=self.k, k_next=self.k_next, zeta=self.zeta,
                                      center=self.center)
        adv_BT = torch.zeros_like(ent_BT)
        for i, rs in enumerate(steps):
            for s, a in zip(rs, step_A[i].tolist()):
                adv_BT[i, s.start:s.stop] = a
        mask = batch.mask_BT.cpu()
        n = max(1, batch.batch_size)
        return adv_BT * mask, {**adv_metrics(adv_BT, mask), "empg/steps_mean": sum(len(r) for r in steps) / n,
                               "empg/approx_split_frac": inexact / n}
