"""Entropy-discriminator clipping: Clip_B and Clip_V token masks.

Wang et al., "On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models",
arXiv 2602.03392. Raising the logit of token k by ε changes the entropy by −ε·S_k + O(ε²) with
the *entropy discriminator* S_k = p_k (H + log p_k). A score-function step with coefficient ηA on
the sampled token k gives ΔH ≈ −ηA (S_k − E_{j~π}[S_j]), E_π[S] = Σ_j p_j² (H + log p_j).
Both rules drop only tokens with non-positive advantage whose penalty would cut entropy:

* Clip_B: with μ_S, σ_S the mean and population std of S over the valid tokens of the
  **whole rollout batch** (as upstream, which computes them in the advantage function), a token
  with A < 0 is kept iff S − μ_S ≥ −μ·σ_S (all kept if σ_S < 1e-12). The trainer calls
  ``ClipB.prepare_batch`` once per step before the update; S uses the behaviour log-probs and
  entropies (``old_logp_BT``, ``entropy_BT``), i.e. the policy the batch was sampled from, as
  upstream's pre-update recomputation.
* Clip_V: D = E_π[S] − S (so ΔH ≈ ηA·D); σ_D its population std (not centred, as upstream); a
  token with A ≤ 0 is kept iff D ≤ μ·σ_D. If more than ``max_frac`` of the valid tokens would be
  dropped, only the ⌊max_frac·N⌋ (≥ 1) violators with the largest D are dropped.

Upstream edits the response mask, so dropped tokens also leave the token-mean denominator.
``renormalize=True`` reproduces that for ``token_mean``: kept tokens are weighted N / N_kept.
Clip_B counts N and N_kept over the whole rollout batch (exact when the mini-batch is the batch;
otherwise the mini-batch's own kept share differs from the batch's by sampling noise only), Clip_V
over the micro-batch. ``renormalize=False`` keeps the denominator. Clip_V's inputs p, H are the
current policy's, detached (upstream recomputes them on-policy).
"""

from __future__ import annotations

import torch

from entrolab.objectives._util import as_bool_mask, expand_adv, frac, masked_mean, zero_invalid
from entrolab.registry import TOKEN_WEIGHTS
from entrolab.types import Metrics, PolicyInputs, RolloutBatch


def entropy_discriminator(logp_BT: torch.Tensor, entropy_BT: torch.Tensor) -> torch.Tensor:
    """S = p·(H + log p) for the sampled token (detached)."""
    logp_BT, entropy_BT = logp_BT.detach(), entropy_BT.detach()
    return logp_BT.exp() * (entropy_BT + logp_BT)


def expected_discriminator(logits_BTV: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_{j~π}[S_j] = Σ_j p_j² (H + log p_j), H) per position from logits [B, T, V] (detached)."""
    dtype = torch.promote_types(logits_BTV.dtype, torch.float32)  # at least float32
    logp = torch.log_softmax(logits_BTV.detach().to(dtype), dim=-1)
    p = logp.exp()
    h = -(p * logp).sum(-1)
    return (p.square() * (h[..., None] + logp)).sum(-1), h


def clip_b_keep(s_BT, adv_BT, mask_BT, *, mu: float = 2.5) -> torch.Tensor:
    """Clip_B keep mask (bool [B, T], False on pads)."""
    mean = masked_mean(s_BT, mask_BT)
    std = masked_mean((s_BT - mean).square(), mask_BT).sqrt()
    if float(std) < 1e-12:
        return mask_BT.clone()
    keep = (adv_BT >= 0) | (s_BT - mean >= -mu * std)
    return keep & mask_BT


def clip_v_keep(d_BT, adv_BT, mask_BT, *, mu: float = 8.5, max_frac: float = 1e-4) -> torch.Tensor:
    """Clip_V keep mask with the max_frac cap (bool [B, T], False on pads)."""
    mean = masked_mean(d_BT, mask_BT)
    std = masked_mean((d_BT - mean).square(), mask_BT).sqrt()
    violate = mask_BT & (adv_BT <= 0) & (d_BT > mu * std)
    n_valid, n_violate = int(mask_BT.sum()), int(violate.sum())
    cap = max(1, int(max_frac * n_valid))
    if n_violate > max_frac * n_valid and n_violate > cap:
        scores = torch.where(violate, d_BT, torch.full_like(d_BT, -torch.inf)).flatten()
        top = torch.sort(scores.float().cpu(), descending=True, stable=True).indices[:cap]
        capped = torch.zeros(d_BT.numel(), dtype=torch.bool)
        capped[top] = True
        violate = capped.view(d_BT.shape).to(d_BT.device)
    return mask_BT & ~violate


def keep_weights(keep_BT: torch.Tensor, mask_BT: torch.Tensor, *, renormalize: bool) -> torch.Tensor:
    """0/1 weights, or N / N_kept on kept tokens when ``renormalize`` (selected-token denominator)."""
    w = keep_BT.to(torch.float32)
    if renormalize:
        n_keep = int(keep_BT.sum())
        if n_keep:
            w = w * (int(mask_BT.sum()) / n_keep)
    return w


def _clip_metrics(prefix: str, keep_BT, adv_BT, mask_BT) -> Metrics:
    dropped = mask_BT & ~keep_BT
    return {
        f"weight/{prefix}_frac": frac(dropped, mask_BT),
        f"weight/{prefix}_frac_neg": frac(dropped & (adv_BT < 0), mask_BT),
    }


#: The per-row extra ``ClipB.prepare_batch`` stores: the token weights decided on the whole batch.
CLIP_B_WEIGHT_KEY = "clip_b_weight_BT"


def clip_b_weights(logp_BT, entropy_BT, adv_BT, mask_BT, *, mu: float = 2.5, renormalize: bool = True
                   ) -> tuple[torch.Tensor, Metrics]:
    """Clip_B weights over every valid token passed in (give the whole rollout batch), with μ_S, σ_S.

    Returns ``(weight_BT, {"weight/clip_b_s_mean": μ_S, "weight/clip_b_s_std": σ_S})``; the weight
    is 0 on dropped tokens and pads, N/N_kept (or 1 without ``renormalize``) on kept ones.
    """
    mask_BT = as_bool_mask(mask_BT)
    adv_BT = zero_invalid(adv_BT.detach(), mask_BT)
    s_BT = zero_invalid(entropy_discriminator(logp_BT, entropy_BT), mask_BT)
    keep_BT = clip_b_keep(s_BT, adv_BT, mask_BT, mu=mu)
    mean = masked_mean(s_BT, mask_BT)
    std = masked_mean((s_BT - mean).square(), mask_BT).sqrt()
    return (keep_weights(keep_BT, mask_BT, renormalize=renormalize),
            {"weight/clip_b_s_mean": float(mean), "weight/clip_b_s_std": float(std)})


@TOKEN_WEIGHTS.register("clip_b", paper="On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models",
                        arxiv="2602.03392")
class ClipB:
    """Clip_B: drop negative-advantage tokens whose discriminator S is far below the batch mean.

    Scope: μ_S, σ_S, the keep decision and the N/N_kept renormalisation are over the whole rollout
    batch, computed once per step by ``prepare_batch`` (the trainer's batch-statistics hook) from
    the behaviour log-probs and entropies, and read back from ``PolicyInputs.extras["clip_b_weight_BT"]``:
    a token's weight does not depend on the mini-/micro-batch split. Called without that extra (a
    direct call), the rows handed in are the batch and S uses their current (detached) log-probs
    and entropies.

    Args:
        mu: threshold in standard deviations (upstream default 2.5).
        renormalize: kept tokens weighted N/N_kept (upstream's mask edit) or 1.
    Metrics: ``weight/clip_b_frac`` (dropped fraction of valid tokens), ``weight/clip_b_frac_neg``,
    ``weight/clip_b_s_mean`` and ``weight/clip_b_s_std`` (μ_S, σ_S; from ``prepare_batch``).
    """

    #: Reads the behaviour log-probs and entropies (prepare_batch) before the update.
    requires = frozenset({"old_stats"})

    def __init__(self, *, mu: float = 2.5, renormalize: bool = True):
        if mu < 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        self.mu, self.renormalize = float(mu), bool(renormalize)

    def prepare_batch(self, batch: RolloutBatch) -> tuple[dict[str, torch.Tensor], Metrics]:
        """Clip_B weights of the whole rollout batch from its behaviour statistics (upstream scope)."""
        if batch.old_logp_BT is None or batch.entropy_BT is None or batch.adv_BT is None:
            raise ValueError("clip_b needs batch.old_logp_BT, entropy_BT and adv_BT before the update")
        dev = batch.old_logp_BT.device
        w_BT, metrics = clip_b_weights(batch.old_logp_BT, batch.entropy_BT.to(dev), batch.adv_BT.to(dev),
                                       batch.mask_BT.to(dev), mu=self.mu, renormalize=self.renormalize)
        return {CLIP_B_WEIGHT_KEY: w_BT}, metrics

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        mask_BT = as_bool_mask(inp.mask_BT)
        adv_BT = zero_invalid(expand_adv(inp.adv_BT, inp.logp_BT).detach(), mask_BT)
        w_BT = inp.extras.get(CLIP_B_WEIGHT_KEY)
        metrics: Metrics = {}
        if w_BT is None:
            w_BT, metrics = clip_b_weights(inp.logp_BT, inp.entropy_BT, adv_BT, mask_BT, mu=self.mu,
                                           renormalize=self.renormalize)
        w_BT = zero_invalid(w_BT.to(inp.logp_BT.device), mask_BT)
        keep_BT = (w_BT > 0) & mask_BT
        return w_BT.to(inp.logp_BT.dtype), {**_clip_metrics("clip_b", keep_BT, adv_BT, mask_BT), **metrics}


@TOKEN_WEIGHTS.register("clip_v", paper="On the Entropy Dynamics in Reinforcement Fine-Tuning of Large Language Models",
                        arxiv="2602.03392")
class ClipV:
    """Clip_V: drop non-positive-advantage tokens whose vocabulary-centred discriminator D is large.

    Needs the full distribution (``requires = {"logits"}``) for E_π[S].

    Args:
        mu: threshold in standard deviations of D (upstream ``default_args``: 8.5; its
            constructor default is 2.0).
        max_frac: at most this fraction of valid tokens is dropped (upstream 1e-4).
        renormalize: kept tokens weighted N/N_kept (upstream's mask edit) or 1.
    Metrics: ``weight/clip_v_frac``, ``weight/clip_v_frac_neg``, ``weight/clip_v_d_std``.
    """

    requires = frozenset({"logits"})

    def __init__(self, *, mu: float = 8.5, max_frac: float = 1e-4, renormalize: bool = True):
        if mu < 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        if not 0 <= max_frac <= 1:
            raise ValueError(f"max_frac must be in [0, 1], got {max_frac}")
        self.mu, self.max_frac, self.renormalize = float(mu), float(max_frac), bool(renormalize)

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        if inp.logits_BTV is None:
            raise ValueError("clip_v needs logits_BTV (requires={'logits'}); the trainer did not provide it")
        mask_BT = as_bool_mask(inp.mask_BT)
        adv_BT = zero_invalid(expand_adv(inp.adv_BT, inp.logp_BT).detach(), mask_BT)
        nec_BT, h_BT = expected_discriminator(inp.logits_BTV)
        s_BT = entropy_discriminator(inp.logp_BT.to(h_BT.dtype), h_BT)
        d_BT = zero_invalid(nec_BT - s_BT, mask_BT)
        keep_BT = clip_v_keep(d_BT, adv_BT, mask_BT, mu=self.mu, max_frac=self.max_frac)
        std = masked_mean((d_BT - masked_mean(d_BT, mask_BT)).square(), mask_BT).sqrt()
        metrics = {**_clip_metrics("clip_v", keep_BT, adv_BT, mask_BT), "weight/clip_v_d_std": float(std)}
        return keep_weights(keep_BT, mask_BT, renormalize=self.renormalize).to(inp.logp_BT.dtype), metrics
