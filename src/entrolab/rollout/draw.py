"""Choosing the next token from logits: temperature, nucleus (top-p) truncation, greedy.

Pure functions over tensors. Sampling uses the inverse CDF with one uniform number per row, drawn
by the caller from its ``torch.Generator``: that makes the randomness explicit (one number per
sequence per step), device-independent (a CPU generator can drive a CUDA model) and
bit-for-bit repeatable on CPU.
"""

from __future__ import annotations

import torch


def logp_and_entropy(logits_bV: torch.Tensor, *, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax of ``logits / temperature`` and its full-vocabulary entropy, in float32.

    Args:
        logits_bV: next-token logits, one row per sequence.
        temperature: sampling temperature τ > 0; the distribution is softmax(logits / τ).

    Returns:
        ``(logp_bV, entropy_b)`` with H = −Σ_v p_v log p_v (tokens with p = 0, e.g. logits of
        −inf, contribute 0 instead of NaN).
    """
    logp_bV, _, entropy_b = _logp_p_entropy(logits_bV, temperature)
    return logp_bV, entropy_b


def _logp_p_entropy(logits_bV: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """``logp_and_entropy`` plus the probabilities ``exp(logp)``, so a sampler need not recompute them.

    Each full-vocabulary pass counts on a GPU (a [512, 151936] float32 tensor is 311 MB): dividing by
    τ = 1 is skipped (x / 1 == x exactly) and the entropy's zero branch is a scalar, not a tensor.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z_bV = logits_bV.float()
    if temperature != 1.0:
        z_bV = z_bV / temperature
    logp_bV = torch.log_softmax(z_bV, dim=-1)
    p_bV = logp_bV.exp()
    entropy_b = -torch.where(p_bV > 0, p_bV * logp_bV, 0.0).sum(-1)
    return logp_bV, p_bV, entropy_b


def _last_positive(p_bV: torch.Tensor) -> torch.Tensor:
    """Index of the last entry with p > 0 in each row: the first nonzero of the reversed row (argmax
    returns the first maximum), on one-byte flags rather than an int64 cumulative sum (8× the bytes)."""
    return p_bV.shape[-1] - 1 - (p_bV > 0).flip(-1).to(torch.uint8).argmax(-1)


def inverse_cdf(p_bV: torch.Tensor, u_b: torch.Tensor) -> torch.Tensor:
    """Draw one index per row from the (unnormalised, non-negative) weights ``p_bV``.

    Index j is chosen when cdf[j-1] ≤ u·cdf[V-1] < cdf[j]; with ``right=True`` a zero-weight
    index can never satisfy the strict inequality, and the final clamp guards against the
    rounding case u·total == total.

    Args:
        p_bV: non-negative weights with a positive sum per row.
        u_b: uniforms in [0, 1), one per row.
    """
    cdf_bV = p_bV.cumsum(-1)
    x_b1 = (u_b.to(cdf_bV) * cdf_bV[:, -1]).unsqueeze(-1)
    idx_b = torch.searchsorted(cdf_bV, x_b1, right=True).squeeze(-1)
    return torch.minimum(idx_b, _last_positive(p_bV))


def top_p_draw(p_bV: torch.Tensor, u_b: torch.Tensor, *, top_p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", §3.1).

    Keeps the smallest set of most likely tokens whose mass reaches ``top_p`` (a token is kept when
    the mass strictly before it, in descending order, is below ``top_p``; the top token always
    is), renormalises, and draws with ``inverse_cdf``. ``top_p → 0`` is greedy decoding.

    Args:
        p_bV: probabilities, one row per sequence.
        u_b: uniforms in [0, 1), one per row.
        top_p: nucleus mass in (0, 1].
    """
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    sorted_bV, order_bV = p_bV.sort(dim=-1, descending=True, stable=True)
    cdf_bV = sorted_bV.cumsum(-1)
    keep_b = ((cdf_bV - sorted_bV) < top_p * cdf_bV[:, -1:]).sum(-1)
    last_b = torch.minimum(keep_b, (sorted_bV > 0).sum(-1)).clamp(min=1) - 1
    mass_b1 = cdf_bV.gather(-1, last_b.unsqueeze(-1))
    x_b1 = u_b.to(cdf_bV).unsqueeze(-1) * mass_b1
    pos_b = torch.searchsorted(cdf_bV, x_b1, right=True).squeeze(-1)
    pos_b = torch.minimum(pos_b, last_b)
    return order_bV.gather(-1, pos_b.unsqueeze(-1)).squeeze(-1)


def next_token(
    logits_bV: torch.Tensor,
    u_b: torch.Tensor | None,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick the next token of each row and report its behaviour statistics.

    The returned log-prob and entropy are those of the full temperature-scaled distribution
    softmax(logits / τ), *not* of the top-p-truncated one: this is what the trainer recomputes
    (``models.forward.completion_stats``), so on-policy importance ratios are exactly 1, as in
    verl and TRL.

    Args:
        logits_bV: next-token logits.
        u_b: uniforms in [0, 1) (ignored, may be None, when ``greedy``).
        temperature: τ > 0.
        top_p: nucleus mass in (0, 1]; 1 samples from the full distribution.
        greedy: take the argmax instead of sampling.

    Returns:
        ``(token_b, logp_b, entropy_b)``.
    """
    logp_bV, p_bV, entropy_b = _logp_p_entropy(logits_bV, temperature)
    if greedy:
        token_b = logp_bV.argmax(-1)
    elif u_b is None:
        raise ValueError("sampling needs uniforms u_b (pass greedy=True for argmax decoding)")
    elif top_p < 1.0:
        token_b = top_p_draw(p_bV, u_b, top_p=top_p)
    else:
        token_b = inverse_cdf(p_bV, u_b)
    logp_b = logp_bV.gather(-1, token_b.unsqueeze(-1)).squeeze(-1)
    return token_b, logp_b, entropy_b
