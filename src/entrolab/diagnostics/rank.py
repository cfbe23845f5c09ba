"""Hidden-state effective rank (ER) and its dynamics (ERV, ERA) for one response, and over a run.

Paper: "Beyond the Exploration-Exploitation Trade-off: A Hidden State Approach for LLM Reasoning in
RLVR" (arXiv 2509.23808). ER is the exponential of the Shannon
entropy of the normalised singular values of the row-centred hidden-state matrix; ERV and ERA are
its first and second differences along growing prefixes of the response.

Deliberate differences from the released code (hf618/VERL ``metrics_utils.py``), none in the
prefixes: ER of a one-token response is 1 here (upstream 0; its centred matrix is zero, like any
matrix of equal rows, which upstream rates 1); a response with fewer than two prefix checkpoints
gets no ERV/ERA (None), and ERA with a single velocity increment is NaN, where upstream writes 0
for both (a 0 would pull a run's mean towards 0 for short responses). We compute it as a
diagnostic only (the upstream advantage bonus is disabled by its own default flags); ``advantages/effective_rank.py`` is our bonus, and it imports ``effective_rank`` and
``effective_rank_dynamics`` from here: one definition, one function, for the bonus and the diagnostic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def effective_rank(hidden_TD: torch.Tensor) -> float:
    """ER = exp(−Σ_k p_k log p_k) with p_k = σ_k / Σσ over the singular values of H − mean row.

    Args:
        hidden_TD: [T, D] hidden states of one response's tokens.
    Returns: ER in [1, min(T − 1, D)] (1.0 when all rows are equal, e.g. T = 1).
    """
    if hidden_TD.dim() != 2 or hidden_TD.shape[0] == 0:
        raise ValueError(f"hidden_TD must be a non-empty [T, D] matrix, got shape {tuple(hidden_TD.shape)}")
    h = hidden_TD.detach().double()
    h = h - h.mean(0, keepdim=True)
    sigma = torch.linalg.svdvals(h)
    total = float(sigma.sum())
    if total <= 1e-12 * max(1.0, float(hidden_TD.double().abs().max())):
        return 1.0  # all rows equal: a single direction at most, by convention rank 1
    p = sigma / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def effective_rank_dynamics(hidden_TD: torch.Tensor, *, stride: int = 40, max_len: int = 512) -> dict[str, float] | None:
    """ER, ERV and ERA of one response (prefixes as in the released code).

    On the last ``max_len`` rows h (the whole response when shorter), prefixes h[:t+1] at
    t = s, 2s, 3s, … < len(h) give ER_1, ER_2, …. The velocity increment is
    d_c = ER_c − mean(ER_1..ER_{c−1}) (deviation from the running mean of earlier checkpoints) and
    the acceleration increment d²_c = d_c − d_{c−1}; ERV = mean_c d_c, ERA = mean_c d²_c. ER is over
    the whole response. Responses shorter than 2s, or with fewer than two checkpoints, give None.

    Args:
        hidden_TD: [T, D] hidden states of the response tokens.
        stride: checkpoint spacing s (upstream default 40; 8 suits the testbed's ~40-token responses).
        max_len: longest window used for ERV/ERA (upstream default 512).
    Returns: ``{"er", "erv", "era"}`` (ERA is NaN with only two checkpoints), or None.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    er_full = effective_rank(hidden_TD)
    h = hidden_TD[-max_len:] if hidden_TD.shape[0] > max_len else hidden_TD
    T = h.shape[0]
    if T < 2 * stride:
        return None
    ers = [effective_rank(h[: t + 1]) for t in range(stride, T, stride)]
    if len(ers) < 2:
        return None
    d = [ers[c] - sum(ers[:c]) / c for c in range(1, len(ers))]
    d2 = [d[c] - d[c - 1] for c in range(1, len(d))]
    return {"er": er_full, "erv": sum(d) / len(d), "era": sum(d2) / len(d2) if d2 else math.nan}


def rank_over_run(steps: Sequence[int], per_step: Sequence[Sequence[float]]) -> list[dict[str, float]]:
    """Mean and population std of a per-response statistic (ER, ERV or ERA) at each step.

    Args:
        steps: recorded steps.
        per_step: for each step, the values of its responses (NaNs ignored).
    """
    if len(steps) != len(per_step):
        raise ValueError("steps and per_step must have the same length")
    out = []
    for step, values in zip(steps, per_step):
        xs = [v for v in values if v is not None and not math.isnan(v)]
        if not xs:
            continue
        m = sum(xs) / len(xs)
        out.append({"step": step, "mean": m, "std": math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)), "count": len(xs)})
    return out
