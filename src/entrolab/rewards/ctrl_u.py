"""Ctrl-U adapted to LM reward models: down-weight rewards whose members disagree (arXiv 2410.11236).

Ctrl-U (Zhang et al., ICLR 2025) scores two generations that share everything but the timestep with
a perception reward model, takes the disagreement ``U = u_scale · KL(p² ‖ p¹)`` of the two
predictions as the reward's uncertainty, and weights the per-pixel reward loss by ``exp(−U)``.

Our adaptation to scalar LM rewards (see docs/methods/ctrl_u.md for what transfers and what not):

* the two predictions are the members of a reward ensemble (``reward: ensemble``; K ≥ 2 reward
  models, heads or stochastic passes), each normalised by the ensemble (``member_norm``), which
  is the paper's "normalise the output scale before the KL";
* a scalar prediction r is read as a unit-variance Gaussian ``N(r, 1)``, so the paper's KL between
  two predictions is ``(r¹ − r²)²/2``; for K members we average it over member pairs, which is
  the unbiased variance across members (``member_disagreement``, tested by brute force);
* the reward of sample b is shrunk towards its prompt group's mean by ``exp(−U_b)``
  (``ctrl_u_shape``): multiplying the reward itself (``center: none``) would move a *negative*
  reward up, i.e. pay an uncertain bad sample more, while for GRPO the group mean is the baseline,
  so shrinking the deviation from it scales the sample's advantage by about ``exp(−U_b)``, as Ctrl-U
  scales the sample's loss.
"""

from __future__ import annotations

import torch

from entrolab.registry import SHAPERS
from entrolab.types import Metrics, RolloutBatch, Task

PAPER = "Ctrl-U: Robust Conditional Image Generation via Uncertainty-aware Reward Modeling"
ARXIV = "2410.11236"
#: ``batch.extras`` key of the per-sample reward uncertainty, written by the ensemble reward term.
UNCERTAINTY_KEY = "reward_uncertainty_B"
CENTERS = ("group", "none")


# --------------------------------------------------------------------------- pure functions
def member_disagreement(scores_KB: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over member pairs j < k of ``(r_j − r_k)²/2`` = the unbiased variance across members.

    With each member's score read as ``N(r_k, 1)``, ``(r_j − r_k)²/2`` is ``KL(N(r_j,1) ‖ N(r_k,1))``:
    Ctrl-U's two-prediction KL (arXiv 2410.11236, uncertainty of Sec. 3), averaged over pairs.

    Args:
        scores_KB: [K, B] normalised member scores, K ≥ 2.

    Returns:
        u_B: [B] ≥ 0.
    """
    if scores_KB.shape[0] < 2:
        raise ValueError(f"member disagreement needs at least 2 members, got {scores_KB.shape[0]}")
    return scores_KB.var(0, unbiased=True)


def ctrl_u_shape(rewards_B: torch.Tensor, u_B: torch.Tensor, group_id_B: torch.Tensor, *, u_scale: float = 1.0,
                 center: str = "group") -> torch.Tensor:
    """``c_b + exp(−u_scale·u_b)·(r_b − c_b)``: each reward shrunk towards ``c_b`` by its uncertainty.

    ``c_b`` is the mean reward of b's prompt group (``center="group"``; scope: the group within the
    batch given) or 0 (``center="none"``, the paper's plain ``exp(−U)·r``). Ctrl-U weights each
    sample's reward loss by ``exp(−U)`` (Eq. of the rectified reward loss, arXiv 2410.11236).

    Args:
        rewards_B: [B] rewards; u_B: [B] uncertainty ≥ 0; group_id_B: [B] prompt-group ids.
        u_scale: the paper's ``u_scale`` (0.1 default of its script, 1 in its ADE20K run).
        center: ``group`` | ``none``.
    """
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    w_B = torch.exp(-u_scale * u_B.to(rewards_B.dtype))
    if center == "none":
        return w_B * rewards_B
    n_G = torch.zeros(int(group_id_B.max()) + 1 if group_id_B.numel() else 0, dtype=rewards_B.dtype)
    sums_G = n_G.clone().index_add_(0, group_id_B, rewards_B)
    n_G.index_add_(0, group_id_B, torch.ones_like(rewards_B))
    c_B = (sums_G / n_G.clamp(min=1))[group_id_B]
    return c_B + w_B * (rewards_B - c_B)


# --------------------------------------------------------------------------- the shaper
@SHAPERS.register("ctrl_u", paper=PAPER, arxiv=ARXIV)
class CtrlU:
    """Shrink each reward towards its group mean by ``exp(−u_scale·U)``, U = member disagreement.

    Reads ``batch.extras["reward_uncertainty_B"]``, which the ``ensemble`` reward term writes (the
    unbiased variance of its normalised members, ``member_disagreement``); with no such term (or a
    one-member ensemble) it is an error, never a silent no-op. Logs ``ctrl_u/uncertainty`` (mean U
    before scaling), ``ctrl_u/weight`` and ``ctrl_u/weight_min`` (of ``exp(−u_scale·U)``).
    """

    name = "ctrl_u"

    def __init__(self, *, u_scale: float = 1.0, center: str = "group"):
        if not u_scale >= 0:
            raise ValueError(f"u_scale must be >= 0, got {u_scale}")
        if center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
        self.u_scale, self.center = float(u_scale), center

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        u_B = batch.extras.get(UNCERTAINTY_KEY)
        if u_B is None:
            raise ValueError(f"shaper 'ctrl_u' needs batch.extras[{UNCERTAINTY_KEY!r}], written by an 'ensemble' "
                             f"reward term with at least 2 members; add one to rewards.terms")
        u_B = u_B.to(rewards_B.dtype)
        out = ctrl_u_shape(rewards_B, u_B, batch.group_id_B, u_scale=self.u_scale, center=self.center)
        w_B = torch.exp(-self.u_scale * u_B)
        empty = not u_B.numel()
        return out, {"ctrl_u/uncertainty": 0.0 if empty else float(u_B.mean()),
                     "ctrl_u/weight": 0.0 if empty else float(w_B.mean()),
                     "ctrl_u/weight_min": 0.0 if empty else float(w_B.min())}
