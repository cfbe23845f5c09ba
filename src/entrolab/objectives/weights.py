"""Token weights: high-entropy minority tokens (80/20) and perplexity/position shaping."""

from __future__ import annotations

import math

import torch

from entrolab.objectives._util import as_bool_mask, expand_adv, frac, zero_invalid
from entrolab.registry import TOKEN_WEIGHTS
from entrolab.types import Metrics, PolicyInputs, RolloutBatch


# --------------------------------------------------------------------------- 80/20
def top_entropy_mask(entropy_BT: torch.Tensor, mask_BT: torch.Tensor, *, rho: float = 0.2) -> torch.Tensor:
    """Top-k valid tokens by entropy, k = max(1, ⌈ρ·N⌉) over the whole tensor (Wang et al. 2025).

    Ties are broken by position (stable sort), so the mask is deterministic. Returns bool [B, T].
    """
    n = int(mask_BT.sum())
    out = torch.zeros(entropy_BT.numel(), dtype=torch.bool)
    if n == 0:
        return out.view(entropy_BT.shape).to(entropy_BT.device)
    k = min(n, max(1, math.ceil(rho * n - 1e-9)))
    scores = torch.where(mask_BT, entropy_BT.detach(), torch.full_like(entropy_BT, -torch.inf)).flatten()
    top = torch.sort(scores.float().cpu(), descending=True, stable=True).indices[:k]
    out[top] = True
    return out.view(entropy_BT.shape).to(entropy_BT.device) & mask_BT


@TOKEN_WEIGHTS.register(
    "top_entropy_quantile",
    paper="Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for LLM Reasoning",
    arxiv="2506.01939",
)
class TopEntropyQuantile:
    """Keep the policy loss only on the top-ρ fraction of tokens by current entropy (the 80/20 rule).

    Scope: all valid tokens of the micro-batch (verl's original; TRL gathers over all ranks).
    Normaliser: with ``renormalize=True`` (default, the paper's verl code) the selected tokens
    are weighted N/N_sel, so ``token_mean`` divides by the number of *selected* tokens; with
    ``renormalize=False`` (TRL) the weight is 0/1 and the denominator stays all valid tokens,
    making the loss about ρ times smaller.

    Args:
        rho: fraction of tokens kept (paper 0.2; 1.0 keeps everything).
        renormalize: see above.
    Metrics: ``weight/entropy_selected_frac``, ``weight/entropy_threshold`` (smallest selected H).
    """

    def __init__(self, *, rho: float = 0.2, renormalize: bool = True):
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        self.rho, self.renormalize = float(rho), bool(renormalize)

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        mask_BT = as_bool_mask(inp.mask_BT)
        sel_BT = top_entropy_mask(inp.entropy_BT, mask_BT, rho=self.rho)
        w = sel_BT.to(inp.logp_BT.dtype)
        n_sel = int(sel_BT.sum())
        if self.renormalize and n_sel:
            w = w * (int(mask_BT.sum()) / n_sel)
        thr = float(inp.entropy_BT.detach()[sel_BT].min()) if n_sel else 0.0
        return w, {"weight/entropy_selected_frac": frac(sel_BT, mask_BT), "weight/entropy_threshold": thr}


# --------------------------------------------------------------------------- PPL / position
def group_minmax_signed(x_B: torch.Tensor, group_id_B: torch.Tensor, valid_B: torch.Tensor) -> torch.Tensor:
    """Map x to [−1, 1] by min-max within each group (over valid sequences); 0 where a group is flat."""
    z = torch.zeros_like(x_B)
    for g in torch.unique(group_id_B[valid_B]):
        rows = (group_id_B == g) & valid_B
        lo, hi = x_B[rows].min(), x_B[rows].max()
        if float(hi - lo) > 1e-12:
            z[rows] = 2 * (x_B[rows] - lo) / (hi - lo) - 1
    return z


def lppl_group_z(old_logp_BT: torch.Tensor, mask_BT: torch.Tensor, group_id_B: torch.Tensor) -> torch.Tensor:
    """z_i ∈ [−1, 1]: min-max of the log-perplexity lppl_i = −mean_t ℓ_old over the rows of i's group
    that are passed in (low perplexity → −1; 0 where a group is flat). Give the whole rollout batch."""
    len_B = mask_BT.sum(-1)
    lppl_B = -zero_invalid(old_logp_BT.detach(), mask_BT).sum(-1) / len_B.clamp(min=1)
    return group_minmax_signed(lppl_B, group_id_B, len_B > 0)


def perplexity_position_weights(
    z_B: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    ppl_alpha: float = 0.1,
    position_gamma: float = 0.1,
) -> torch.Tensor:
    """w_{i,t} = (1 − α·z_i)·(1 + γ·(2u_t − 1)), the configurable form documented for 2508.02260.

    z_i from :func:`lppl_group_z` (low perplexity → −1 → larger weight); u_t = (t + ½)/|o_i| ∈ (0, 1)
    is the relative position (late tokens → larger weight; the position factor averages exactly 1
    over each sequence). Returns w_BT (0 on pads).
    """
    len_B = mask_BT.sum(-1)
    dtype = z_B.dtype if z_B.is_floating_point() else torch.float32
    t_T = torch.arange(mask_BT.shape[1], device=mask_BT.device, dtype=dtype)
    u_BT = (t_T[None, :] + 0.5) / len_B.clamp(min=1)[:, None].to(dtype)
    w_BT = (1 - ppl_alpha * z_B.to(mask_BT.device, dtype))[:, None] * (1 + position_gamma * (2 * u_BT - 1))
    return zero_invalid(w_BT, mask_BT)


#: The per-row extra ``PerplexityPosition.prepare_batch`` stores: z_i over the whole rollout batch.
PPL_Z_KEY = "ppl_pos_z_B"


@TOKEN_WEIGHTS.register(
    "perplexity_position",
    paper="Decomposing the Entropy-Performance Exchange: The Missing Keys to Unlocking Effective Reinforcement Learning",
    arxiv="2508.02260",
)
class PerplexityPosition:
    """PPL- and position-based advantage shaping as a token weight (configurable form, UNVERIFIED).

    The paper has no released code and the spec has no verified formula; this implements the
    documented multiplicative form w = (1 − α·z_ppl)·(1 + γ·(2u − 1)): low-perplexity responses
    and late tokens get larger advantage magnitude. A positive weight times the PPO loss equals
    PPO with the advantage scaled by it, so this is the paper's "advantage shaping".

    Scope: z is the min-max within each *whole* group of the rollout batch, computed once per step
    from the behaviour log-probs by ``prepare_batch`` (the trainer's batch-statistics hook) and
    read back from ``PolicyInputs.extras["ppl_pos_z_B"]``, so a response's weight does not depend
    on which group-mates share its mini- or micro-batch. Called without that extra (a direct call),
    the rows handed in are the batch.

    Args:
        ppl_alpha: α in [0, 1); 0 disables the perplexity factor.
        position_gamma: γ in [0, 1); 0 disables the position factor.
    Metrics: ``weight/ppl_pos_mean``, ``weight/ppl_pos_min``, ``weight/ppl_pos_max``.
    """

    #: Reads the behaviour log-probs batch.old_logp_BT (prepare_batch) before the update.
    requires = frozenset({"old_stats"})

    def __init__(self, *, ppl_alpha: float = 0.1, position_gamma: float = 0.1):
        for name, v in (("ppl_alpha", ppl_alpha), ("position_gamma", position_gamma)):
            if not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1) so weights stay positive, got {v}")
        self.ppl_alpha, self.position_gamma = float(ppl_alpha), float(position_gamma)
        # z_ppl is a min-max within each group: 0 for a group of one, so only the position factor is left.
        self.advised_group_size = 2 if self.ppl_alpha > 0 else 1

    def prepare_batch(self, batch: RolloutBatch) -> tuple[dict[str, torch.Tensor], Metrics]:
        """z_B over every group of the whole rollout batch, from its behaviour log-probs."""
        if batch.old_logp_BT is None:
            raise ValueError("perplexity_position needs batch.old_logp_BT (behaviour log-probs) before the update")
        mask_BT = as_bool_mask(batch.mask_BT).to(batch.old_logp_BT.device)
        return {PPL_Z_KEY: lppl_group_z(batch.old_logp_BT, mask_BT, batch.group_id_B.to(mask_BT.device))}, {}

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        mask_BT = as_bool_mask(inp.mask_BT)
        expand_adv(inp.adv_BT, inp.logp_BT)  # shape check only
        z_B = inp.extras.get(PPL_Z_KEY)
        if z_B is None:
            z_B = lppl_group_z(inp.old_logp_BT, mask_BT, inp.group_id_B)
        w_BT = perplexity_position_weights(z_B, mask_BT, ppl_alpha=self.ppl_alpha,
                                           position_gamma=self.position_gamma)
        valid = w_BT[mask_BT]
        stats = (float(valid.mean()), float(valid.min()), float(valid.max())) if valid.numel() else (0.0, 0.0, 0.0)
        return w_BT.to(inp.logp_BT.dtype), {
            "weight/ppl_pos_mean": stats[0], "weight/ppl_pos_min": stats[1], "weight/ppl_pos_max": stats[2],
        }
