"""G²RPO: map rewards to N(0, 1) by rank (1-D optimal transport), within groups and then across the batch."""

from __future__ import annotations

import math

import torch

from entrolab.advantages.common import adv_metrics, group_index, require_rewards
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch


def gaussian_rank_transform(values_N: torch.Tensor) -> torch.Tensor:
    """Rank-based map of N values to standard-normal quantiles, ties averaged.

    Sort ascending; rank k = 1..N gets ``z_k = Φ⁻¹((k − 0.5)/N) = √2·erfinv(2(k − 0.5)/N − 1)``;
    equal values get the mean of the z of their ranks (so an all-equal set maps to 0, and the
    output always sums to 0). N ≤ 1 gives 0. Only ranks matter, not magnitudes.

    Args:
        values_N: [N] values.

    Returns:
        z_N: [N] float64-accurate values in float32.
    """
    n = values_N.numel()
    if n <= 1:
        return torch.zeros(n)
    v = values_N.double()
    order = torch.argsort(v, stable=True)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    z_sorted = math.sqrt(2.0) * torch.special.erfinv(2 * (k - 0.5) / n - 1)
    # tie averaging: mean of z over each run of equal sorted values
    uniq, inv = torch.unique(v[order], return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, z_sorted)
    cnts = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, torch.ones(n, dtype=torch.float64))
    out = torch.empty(n, dtype=torch.float64)
    out[order] = (sums / cnts)[inv]
    return out.float()


@torch.no_grad()
def g2rpo_advantage(rewards_B: torch.Tensor, group_id_B: torch.Tensor, *, task_id_B: torch.Tensor | None = None,
                    across_batch: bool = True, exclude_constant_groups: bool = True) -> torch.Tensor:
    """G²RPO advantage (OpenVLThinkerV2, arXiv 2604.08539): two-stage Gaussian rank mapping.

    Stage 1, within each group: ``a_i = OT(r over the group)``. Stage 2 (``across_batch``), within
    each task over the whole rollout batch: ``A_i = OT(a over all responses of the task)``.

    Args:
        rewards_B: [B]; group_id_B: [B]; task_id_B: [B] task label (None = one task).
        across_batch: apply stage 2.
        exclude_constant_groups: groups whose stage-1 output is all 0 (all rewards equal, or a
            group of one) stay exactly 0 and are left out of the stage-2 ranking. Upstream ranks them
            too, so a block of tied zeros gets the (usually nonzero) mean quantile of its ranks.

    Returns:
        adv_B: [B].
    """
    r = rewards_B.double()
    inv_B, count_K = group_index(group_id_B)
    a_B = torch.zeros_like(r)
    live_B = torch.zeros(r.numel(), dtype=torch.bool)
    for k in range(count_K.numel()):
        rows = (inv_B == k).nonzero().squeeze(-1)
        a_B[rows] = gaussian_rank_transform(r[rows]).double()
        live_B[rows] = bool(r[rows].max() > r[rows].min())
    if not across_batch:
        return a_B.float()
    if not exclude_constant_groups:
        live_B[:] = True
    tasks = task_id_B if task_id_B is not None else torch.zeros_like(group_id_B)
    out = torch.zeros_like(r)
    for t in tasks.unique().tolist():
        rows = ((tasks == t) & live_B).nonzero().squeeze(-1)
        out[rows] = gaussian_rank_transform(a_B[rows]).double()
    return out.float()


@ADVANTAGES.register("gaussian", paper="OpenVLThinkerV2: A Generalist Multimodal Reasoning Model for Multi-domain "
                     "Visual Tasks", arxiv="2604.08539", aliases=("g2rpo",))
class GaussianGRPO:
    """G²RPO: rewards → N(0,1) by tie-averaged rank within the group, then across each task in the batch.

    The task of a prompt is ``prompt.meta[task_key]`` (missing = one task for everybody).
    """

    #: Ranks within a group: a group of one has no rank spread and gets A = 0.
    min_group_size = 2

    def __init__(self, *, across_batch: bool = True, task_key: str = "task", exclude_constant_groups: bool = True):
        self.across_batch, self.task_key = bool(across_batch), task_key
        self.exclude_constant_groups = bool(exclude_constant_groups)

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        gid = batch.group_id_B.cpu()
        labels = [str(batch.prompts[g].meta.get(self.task_key, "")) for g in gid.tolist()]
        names = {s: i for i, s in enumerate(sorted(set(labels)))}
        task_id_B = torch.tensor([names[s] for s in labels], dtype=torch.long)
        adv_B = g2rpo_advantage(require_rewards(batch, "gaussian"), gid, task_id_B=task_id_B,
                                across_batch=self.across_batch, exclude_constant_groups=self.exclude_constant_groups)
        return adv_B, adv_metrics(adv_B)
