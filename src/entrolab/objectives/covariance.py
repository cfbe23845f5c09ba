"""Clip-Cov and KL-Cov, and the covariance identity for the entropy change of a softmax policy.

Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
arXiv 2505.22617. For a softmax policy with logits z and a logit step Δz (Eq. 2-3),
    H(z + Δz) − H(z) ≈ −Cov_{a~π}(log π(a), Δz(a)),
so tokens with high log-prob *and* high advantage drive entropy down. Both methods compute the
per-token centred cross-product (their Eq. 10)
    C_{i,t} = (sg[ℓ_{i,t}] − mean ℓ) · (A_{i,t} − mean A)
with unweighted means over the valid tokens of the **micro-batch** (the scope upstream uses, per
rank), and act on a small fraction of tokens:

* Clip-Cov: among valid tokens that PPO did not already clip, with lb < C < ub (strict), detach
  k = max(1, ⌊ratio·N⌋) tokens (value and gradient zeroed; they stay in the normaliser).
* KL-Cov: the top-k tokens by C get +β·|ℓ − ℓ_old| on top of the *unclipped* −A·r.

``ratio`` is a **fraction** of tokens here (verl ``clip_cov_ratio`` / ``kl_cov_ratio``). The
original repository's ``k_percent`` is a percent: its 7B script's ``k_percent=0.2`` is
``ratio=0.002`` here, and 32B's ``0.02`` is ``0.0002``.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch

from entrolab.objectives._util import fmean, frac, masked_mean, zero_invalid
from entrolab.objectives.surrogates import check_clip, ppo_clip_loss, ratio_metrics, unpack
from entrolab.registry import SURROGATES
from entrolab.types import Metrics, PolicyInputs

Selection = Literal["random", "topk"]


# --------------------------------------------------------------------------- pure math
def entropy_of_logits(logits_V: torch.Tensor) -> torch.Tensor:
    """Full entropy −Σ π log π of softmax(logits) over the last axis."""
    logp = torch.log_softmax(logits_V, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def predicted_entropy_change(logits_V: torch.Tensor, dz_V: torch.Tensor) -> torch.Tensor:
    """First-order entropy change −Cov_{a~π}(log π(a), Δz(a)) (Cui et al. 2025, Lemma 1).

    Args:
        logits_V: logits [..., V]; dz_V: the logit step [..., V].
    Returns:
        the predicted ΔH [...] (exact to first order in Δz).
    """
    logp = torch.log_softmax(logits_V, dim=-1)
    p = logp.exp()
    centred_logp = logp - (p * logp).sum(-1, keepdim=True)
    centred_dz = dz_V - (p * dz_V).sum(-1, keepdim=True)
    return -(p * centred_logp * centred_dz).sum(-1)


def token_covariance(logp_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """C_{i,t} = (ℓ − mean ℓ)(A − mean A) over valid tokens (Cui et al. Eq. 10); detached, 0 on pads."""
    logp_BT, adv_BT = logp_BT.detach(), adv_BT.detach()
    cov_BT = (logp_BT - masked_mean(logp_BT, mask_BT)) * (adv_BT - masked_mean(adv_BT, mask_BT))
    return zero_invalid(cov_BT, mask_BT)


def num_selected(ratio: float, num_valid: int) -> int:
    """k = max(1, ⌊ratio·N⌋), except k = 0 when ratio = 0 or N = 0 (ratio 0 switches the method off;
    upstream's max(1, ·) would still touch one token)."""
    if ratio <= 0 or num_valid == 0:
        return 0
    return max(1, math.floor(ratio * num_valid))


def select_tokens(
    cov_BT: torch.Tensor,
    candidates_BT: torch.Tensor,
    k: int,
    *,
    selection: Selection = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick min(k, #candidates) candidate tokens: uniformly at random (Clip-Cov, paper) or the
    largest C (KL-Cov; ties broken by position, deterministic). Returns a bool [B, T] mask."""
    flat_idx = candidates_BT.flatten().nonzero().squeeze(-1)
    chosen = torch.zeros(cov_BT.numel(), dtype=torch.bool)
    n = min(k, int(flat_idx.numel()))
    if n > 0:
        if selection == "random":
            # draw on the generator's device (the trainer's generator lives on the training device)
            gen_device = generator.device if generator is not None else torch.device("cpu")
            perm = torch.randperm(int(flat_idx.numel()), generator=generator, device=gen_device)
            pick = flat_idx[perm[:n].to(flat_idx.device)]
        elif selection == "topk":
            order = torch.sort(cov_BT.flatten()[flat_idx].float().cpu(), descending=True, stable=True).indices
            pick = flat_idx[order[:n]]
        else:
            raise ValueError(f"selection must be 'random' or 'topk', got '{selection}'")
        chosen[pick.cpu()] = True
    return chosen.view(cov_BT.shape).to(cov_BT.device)


def _check_ratio(name: str, ratio: float) -> None:
    if not 0 <= ratio <= 1:
        raise ValueError(f"{name} is a fraction of tokens in [0, 1], got {ratio}")
    if ratio > 0.05:
        warnings.warn(
            f"{name}={ratio} selects over 5% of tokens; the papers use 2e-4 to 2e-3. "
            "If you copied the original repo's k_percent, divide it by 100.",
            stacklevel=3,
        )


def _check_selection(selection: str) -> None:
    if selection not in ("random", "topk"):
        raise ValueError(f"selection must be 'random' or 'topk', got '{selection}'")


# --------------------------------------------------------------------------- components
@SURROGATES.register("clip_cov", paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
                     arxiv="2505.22617")
class ClipCov:
    """Clip-Cov: PPO-clip, plus detaching a few tokens whose log-prob/advantage covariance is high.

    Args:
        ratio: fraction r of valid tokens to detach (paper 2e-4); 0 = plain ``ppo_clip``.
        cov_lb, cov_ub: the open covariance window (ω_lo, ω_hi) = (1, 5) in the paper.
        eps_low, eps_high: the PPO clip (the paper's scripts use 1.0 and 1.0: clip off).
        selection: ``random`` (paper: k uniform draws among candidates, seeded by the
            trainer's generator) or ``topk`` (deterministic: the k largest covariances).
    Metrics: ``policy/cov_detached_frac`` (fraction of valid tokens detached; upstream logs it
    as ``pg_clipfrac``), ``policy/cov_candidate_frac``, ``policy/cov_mean`` (mean C),
    ``policy/clipfrac_low``/``_high`` (PPO), ``policy/approx_kl``, ``policy/ratio_mean``.
    """

    def __init__(
        self,
        *,
        ratio: float = 2e-4,
        cov_lb: float = 1.0,
        cov_ub: float = 5.0,
        eps_low: float = 1.0,
        eps_high: float = 1.0,
        selection: Selection = "random",
    ):
        _check_ratio("ratio", ratio)
        _check_selection(selection)
        check_clip(eps_low, eps_high, None)
        if not cov_lb < cov_ub:
            raise ValueError(f"need cov_lb < cov_ub, got {cov_lb} and {cov_ub}")
        self.ratio, self.cov_lb, self.cov_ub = float(ratio), float(cov_lb), float(cov_ub)
        self.eps_low, self.eps_high, self.selection = float(eps_low), float(eps_high), selection

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        logp_BT, old_logp_BT, adv_BT, mask_BT = unpack(inp)
        loss_BT, aux = ppo_clip_loss(logp_BT, old_logp_BT, adv_BT, eps_low=self.eps_low, eps_high=self.eps_high)
        already_clipped_BT = aux["clip_low"] | aux["clip_high"]
        cov_BT = token_covariance(logp_BT, adv_BT, mask_BT)
        candidates_BT = mask_BT & ~already_clipped_BT & (cov_BT > self.cov_lb) & (cov_BT < self.cov_ub)
        k = num_selected(self.ratio, int(mask_BT.sum()))
        chosen_BT = select_tokens(cov_BT, candidates_BT, k, selection=self.selection, generator=inp.generator)
        # Zeroing with where (not ·0) drops value and gradient of the chosen tokens.
        loss_BT = torch.where(chosen_BT, torch.zeros_like(loss_BT), loss_BT)
        return zero_invalid(loss_BT, mask_BT), {
            "policy/cov_detached_frac": frac(chosen_BT, mask_BT),
            "policy/cov_candidate_frac": frac(candidates_BT, mask_BT),
            "policy/cov_mean": fmean(cov_BT, mask_BT),
            "policy/clipfrac_low": frac(aux["clip_low"], mask_BT),
            "policy/clipfrac_high": frac(aux["clip_high"], mask_BT),
            **ratio_metrics(logp_BT, old_logp_BT, mask_BT),
        }


@SURROGATES.register("kl_cov", paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
                     arxiv="2505.22617")
class KLCov:
    """KL-Cov: unclipped −A·r, plus β·|log π_θ − log π_old| on the top-k covariance tokens.

    Args:
        ratio: fraction k of valid tokens penalised (7B paper run: 2e-3; verl default 2e-4).
        beta: coefficient of the |Δlog π| penalty (paper and verl fallback: 1.0).
        selection: ``topk`` (paper and code) or ``random`` (k uniform draws among valid tokens
            with C > 0; an ablation).
    Metrics: ``policy/cov_selected_frac``, ``policy/cov_mean``, ``policy/abs_log_ratio``
    (mean |δ| over valid tokens; upstream logs it as ``ppo_kl``), ``policy/approx_kl`` (k3),
    ``policy/ratio_mean``.

    On the first mini-batch of a step δ = 0 and the gradient of |δ| is 0: KL-Cov then equals
    plain policy gradient; it acts from the second mini-batch or epoch on.
    """

    def __init__(self, *, ratio: float = 2e-3, beta: float = 1.0, selection: Selection = "topk"):
        _check_ratio("ratio", ratio)
        _check_selection(selection)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.ratio, self.beta, self.selection = float(ratio), float(beta), selection

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        logp_BT, old_logp_BT, adv_BT, mask_BT = unpack(inp)
        delta_BT = (logp_BT - old_logp_BT).clamp(-20.0, 20.0)
        pg_BT = -adv_BT * torch.exp(delta_BT)
        cov_BT = token_covariance(logp_BT, adv_BT, mask_BT)
        candidates_BT = mask_BT if self.selection == "topk" else mask_BT & (cov_BT > 0)
        k = num_selected(self.ratio, int(mask_BT.sum()))
        chosen_BT = select_tokens(cov_BT, candidates_BT, k, selection=self.selection, generator=inp.generator)
        loss_BT = torch.where(chosen_BT, pg_BT + self.beta * delta_BT.abs(), pg_BT)
        return zero_invalid(loss_BT, mask_BT), {
            "policy/cov_selected_frac": frac(chosen_BT, mask_BT),
            "policy/cov_mean": fmean(cov_BT, mask_BT),
            "policy/abs_log_ratio": fmean(delta_BT.abs(), mask_BT),
            **ratio_metrics(logp_BT, old_logp_BT, mask_BT),
        }
