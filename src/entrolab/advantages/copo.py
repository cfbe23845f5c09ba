"""COPO: blend a global consistency advantage with the local GRPO advantage by an answer-entropy gate.

Han et al., "Consistency-Aware Policy Optimization" (arXiv 2508.04138); released code, see
docs/methods/copo.md.

Deviation: upstream blends two PPO-clip *losses* per token, ``(1 − w)·L(A_glob) + w·L(A_loc)``.
Our stage contract returns one advantage, so we blend the *advantages*,
``A = (1 − w)·A_glob + w·A_loc``. The two agree exactly when the surrogate is linear in A
(REINFORCE), and their gradients agree for PPO-clip whenever the ratio is inside the clip range
(e.g. the first update on a fresh batch, ratio = 1); they differ only on clipped tokens where
A_glob and A_loc have opposite signs.
"""

from __future__ import annotations

import math

import torch

from entrolab.advantages.baselines import grpo_advantage
from entrolab.advantages.common import adv_metrics, group_index, require_rewards
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch

GATES = ("soft", "soft_with_zero", "soft_with_forced", "only_zero", "only_forced", "local", "global")


def answer_entropy_bits(answers: list) -> float:
    """Entropy (bits) of the empirical distribution of answers (exact equality; None is one class)."""
    n = len(answers)
    if n == 0:
        return 0.0
    counts: dict = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    return -sum(c / n * math.log2(c / n) for c in counts.values())


@torch.no_grad()
def copo_advantage(rewards_B: torch.Tensor, group_id_B: torch.Tensor, entropy_B: torch.Tensor,
                   correct_B: torch.Tensor, *, k: float = 5.0, b: float = 1.0, gate: str = "soft_with_zero",
                   entropy_coef: bool = False, norm_by_std: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """COPO blended advantage and gate.

    ``A_loc`` = GRPO. Per prompt: ``R_glob = r̄·c`` with ``c = 1 − λ_G·H`` if ``entropy_coef`` else 1,
    ``λ_G = (1 − 1/G)/log₂G``; ``A_glob = (R_glob − mean_prompts)/(std_prompts + 1e-6)`` (unbiased std
    across the batch's prompts; mean only when ``norm_by_std`` is False; 0 with a single prompt).
    Gate ``w = σ(k(H − b))`` per prompt, then by mode: ``soft`` w; ``soft_with_zero`` w·1[correct];
    ``soft_with_forced`` w·1[A_loc ≠ 0]; ``only_zero`` 1[correct]; ``only_forced`` 1[A_loc ≠ 0];
    ``local`` 1; ``global`` 0. ``A = (1 − w)·A_glob + w·A_loc``.

    Args:
        rewards_B, group_id_B: [B]; entropy_B: [B] answer entropy (bits) of the sample's group;
        correct_B: [B] bool (upstream tests r ≠ 0, which breaks for ±1 rewards).

    Returns:
        ``(adv_B, w_B)``.
    """
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    r = rewards_B.double()
    a_loc = grpo_advantage(r.float(), group_id_B, scale_by_std=norm_by_std).double()
    inv_B, count_K = group_index(group_id_B)
    K = count_K.numel()
    mean_K = torch.zeros(K, dtype=torch.float64).index_add_(0, inv_B, r) / count_K.double()
    H_K = torch.zeros(K, dtype=torch.float64).scatter_reduce(0, inv_B, entropy_B.double(), "amax", include_self=False)
    G_K = count_K.double()
    lam_K = torch.where(G_K > 1, (1 - 1 / G_K) / torch.log2(G_K.clamp(min=2)), torch.zeros_like(G_K))
    R_K = mean_K * ((1 - lam_K * H_K) if entropy_coef else 1.0)
    if K > 1 and float(R_K.max() - R_K.min()) > 0:
        a_glob_K = R_K - R_K.mean()
        if norm_by_std:
            a_glob_K = a_glob_K / (R_K.std() + 1e-6)
    else:
        a_glob_K = torch.zeros(K, dtype=torch.float64)
    w = torch.sigmoid(k * (entropy_B.double() - b))
    ones = torch.ones_like(w)
    w = {"soft": w, "soft_with_zero": w * correct_B.double(), "soft_with_forced": w * (a_loc != 0).double(),
         "only_zero": correct_B.double(), "only_forced": (a_loc != 0).double(), "local": ones,
         "global": torch.zeros_like(w)}[gate]
    adv = (1 - w) * a_glob_K[inv_B] + w * a_loc
    return adv.float(), w.float()


@ADVANTAGES.register("copo", paper="Consistency-Aware Policy Optimization", arxiv="2508.04138")
class COPO:
    """COPO: prompts whose answers agree (low answer entropy) learn from a batch-level pass-rate advantage.

    Answers are ``Verdict.answer`` (canonical; unparsed answers form one class). Logs
    ``copo/gate_mean`` (mean w), ``copo/answer_entropy`` (mean over samples, bits).
    """

    #: Its local part is GRPO (0 for groups of one) but the batch-level part still compares
    #: prompts, so a group of one is a warning, not an error.
    advised_group_size = 2

    def __init__(self, *, k: float = 5.0, b: float = 1.0, gate: str = "soft_with_zero", entropy_coef: bool = False,
                 norm_by_std: bool = True):
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        self.k, self.b, self.gate, self.entropy_coef, self.norm_by_std = k, b, gate, entropy_coef, norm_by_std

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        if batch.verdicts is None:
            raise ValueError("copo needs batch.verdicts (answers and correctness)")
        gid = batch.group_id_B.cpu()
        groups: dict[int, list] = {}
        for g, v in zip(gid.tolist(), batch.verdicts):
            groups.setdefault(g, []).append(v.answer)
        H = {g: answer_entropy_bits(a) for g, a in groups.items()}
        entropy_B = torch.tensor([H[g] for g in gid.tolist()], dtype=torch.float64)
        correct_B = torch.tensor([v.correct for v in batch.verdicts], dtype=torch.bool)
        adv, w = copo_advantage(require_rewards(batch, "copo"), gid, entropy_B, correct_B, k=self.k, b=self.b,
                                gate=self.gate, entropy_coef=self.entropy_coef, norm_by_std=self.norm_by_std)
        return adv, {**adv_metrics(adv), "copo/gate_mean": float(w.mean()) if w.numel() else 0.0,
                     "copo/answer_entropy": float(entropy_B.mean()) if entropy_B.numel() else 0.0}
