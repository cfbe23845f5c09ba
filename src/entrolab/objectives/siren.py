"""SIREN: selective, self-anchored entropy regularization.

"Rethinking Entropy Regularization in Large Reasoning Models", arXiv 2509.25133.

1. Top-p entropy per position (their Eq. for H^p): sort π = softmax(z) descending, keep the
   nucleus of ranks whose cumulative probability is *below* p (the token that crosses p is
   excluded, as the released code does), renormalise, H^p = −Σ π̃ log π̃. An empty nucleus
   (top-1 probability ≥ p) gives H^p = 0 with zero gradient. Gradient flows through π.
2. Peak-entropy mask, per **sequence**: τ_i = the ρ-quantile (linear interpolation) of the
   valid H^p of row i, M_{i,t} = [H^p_{i,t} > τ_i] (about the top 1−ρ of each response).
3. Ĥ = seq-mean-token-mean of H^p over M for the micro-batch (a sequence with no selected
   token contributes 0 and still counts). Anchor H_0 = Ĥ of the first call (the initial
   policy on the first batch), then frozen. Penalty β·(Ĥ − H_0)².

The penalty is one number per micro-batch, returned as a 0-dim loss: the policy update adds it
once, after the policy-loss aggregation, weighted by the micro-batch's sequence share (upstream:
``pg_loss + β·(Ĥ − H_0)²`` per micro-batch, scaled by the same share), so the aggregation mode
(``constant_norm`` in the paper's recipe) does not rescale β. Where we differ: upstream applies
the mask twice (zero then re-quantile), which can drop one borderline token; we apply it once.
Upstream's logged ``actor/entropy`` averages over pads; ``entropy/siren_topp`` here is over
valid tokens.
"""

from __future__ import annotations

import torch

from entrolab.objectives._util import as_bool_mask, check_positive, frac
from entrolab.registry import REGULARIZERS
from entrolab.types import Metrics, PolicyInputs


def top_p_entropy(logits_BTV: torch.Tensor, *, top_p: float = 0.8, top_k: int = 10000) -> torch.Tensor:
    """Entropy of the renormalised nucleus {ranks with cumulative probability < top_p} [B, T].

    Only the ``top_k`` most likely tokens are considered (upstream: 10000).
    """
    probs = torch.softmax(logits_BTV.float(), dim=-1)
    k = min(top_k, probs.shape[-1])
    vals, _ = torch.topk(probs, k, dim=-1, sorted=True)
    cum = vals.detach().cumsum(-1)
    keep = cum < top_p  # strict: the crossing token is excluded (released code)
    kept = vals * keep
    p_tilde = kept / (kept.sum(-1, keepdim=True) + 1e-12)
    return -(p_tilde * torch.log(p_tilde + 1e-12)).sum(-1)


def peak_entropy_mask(h_BT: torch.Tensor, mask_BT: torch.Tensor, *, mask_ratio: float = 0.8) -> torch.Tensor:
    """Per-sequence mask [H > τ_i], τ_i the ``mask_ratio`` quantile of the row's valid values."""
    h = h_BT.detach().float()
    masked = torch.where(mask_BT, h, torch.full_like(h, float("nan")))
    tau_B = torch.nanquantile(masked, mask_ratio, dim=-1, keepdim=True)  # NaN for empty rows
    return mask_BT & (h > tau_B)


def seq_mean_token_mean_local(x_BT: torch.Tensor, sel_BT: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_b mean_{t∈sel_b} x; empty rows contribute 0 (micro-batch scope)."""
    if x_BT.shape[0] == 0:
        return x_BT.sum()
    n_B = sel_BT.sum(-1)
    row_B = torch.where(sel_BT, x_BT, torch.zeros_like(x_BT)).sum(-1) / n_B.clamp(min=1)
    return row_B.mean()


@REGULARIZERS.register("siren", paper="Rethinking Entropy Regularization in Large Reasoning Models",
                       arxiv="2509.25133")
class Siren:
    """SIREN: β·(Ĥ − H_0)², Ĥ the masked top-p entropy, H_0 its value for the initial policy.

    Needs the full distribution with gradient (``requires = {"logits"}``). Returns a 0-dim loss
    (a batch-level penalty, added once after aggregation; docs/CONTRACTS.md).

    Args:
        beta: coefficient (paper 0.005).
        top_p: nucleus mass p (paper 0.8). top_k: tokens considered (10000).
        mask_ratio: per-sequence quantile ρ; tokens above it are regularised (paper 0.8).
        anchor: fix H_0 by hand; None = measured on the first call (paper).
    Metrics: ``entropy/siren_topp`` (Ĥ), ``entropy/siren_anchor`` (H_0), ``entropy/siren_sq_dev``
    ((Ĥ − H_0)²), ``entropy/siren_selected_frac`` (fraction of valid tokens in M).
    State: the anchor.
    """

    requires = frozenset({"logits"})

    def __init__(
        self,
        *,
        beta: float = 0.005,
        top_p: float = 0.8,
        top_k: int = 10000,
        mask_ratio: float = 0.8,
        anchor: float | None = None,
    ):
        check_positive("beta", beta, allow_zero=True)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.beta, self.top_p, self.top_k, self.mask_ratio = float(beta), float(top_p), int(top_k), float(mask_ratio)
        self.anchor = None if anchor is None else float(anchor)

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        if inp.logits_BTV is None:
            raise ValueError("siren needs logits_BTV (requires={'logits'}); the trainer did not provide it")
        if inp.logp_BT.requires_grad and not inp.logits_BTV.requires_grad:
            raise ValueError("siren needs logits_BTV that carry gradient (its penalty differentiates through them)")
        mask_BT = as_bool_mask(inp.mask_BT)
        # Padded positions get neutral logits so nothing non-finite there can reach the gradient.
        logits_BTV = torch.where(mask_BT[..., None], inp.logits_BTV, torch.zeros((), dtype=inp.logits_BTV.dtype))
        h_BT = top_p_entropy(logits_BTV, top_p=self.top_p, top_k=self.top_k)
        sel_BT = peak_entropy_mask(h_BT, mask_BT, mask_ratio=self.mask_ratio)
        h_hat = seq_mean_token_mean_local(h_BT, sel_BT)
        if self.anchor is None:
            self.anchor = float(h_hat.detach())
        sq_dev = (h_hat - self.anchor).square()
        return (self.beta * sq_dev).to(inp.logp_BT.dtype), {
            "entropy/siren_topp": float(h_hat.detach()),
            "entropy/siren_anchor": self.anchor,
            "entropy/siren_sq_dev": float(sq_dev.detach()),
            "entropy/siren_selected_frac": frac(sel_BT, mask_BT),
        }

    def state_dict(self) -> dict:
        return {"anchor": self.anchor}

    def load_state_dict(self, state: dict) -> None:
        self.anchor = None if state["anchor"] is None else float(state["anchor"])
