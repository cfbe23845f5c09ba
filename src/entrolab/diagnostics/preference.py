"""Preference consistency across several reward functions ranking the same responses.

Paper: "Impossibility and Uncertainty Theorems in AI Value Alignment" (Eckersley, arXiv
1901.00064), a derived diagnostic. Treat K reward
functions (an ensemble, several judges, several shaped rewards) as a distribution over orderings
of one prompt's R responses:

* p_ij = share of functions preferring i to j (a tie counts one half);
* the majority relation i ≻ j when p_ij > ½; a *preference cycle* is a triangle i ≻ j ≻ k ≻ i.
  Each function alone is transitive, so cycles only appear in the aggregate (Condorcet): a non-zero
  cycle rate means no single scalar reward reproduces the majority;
* disagreement entropy: the mean over pairs of the binary entropy H(p_ij) in bits (0 = unanimous,
  1 = evenly split), and the share of pairs with p_ij in the uncertain band [0.3, 0.7].
"""

from __future__ import annotations

import math

import torch


def pairwise_preferences(scores_KR: torch.Tensor) -> torch.Tensor:
    """P_RR[i, j] = (1/K) Σ_k (1[s_k(i) > s_k(j)] + ½·1[s_k(i) = s_k(j)]).

    Args:
        scores_KR: [K, R] scores of R responses under K reward functions.
    Returns: [R, R] float64 with P + Pᵀ = 1 (diagonal ½).
    """
    if scores_KR.dim() != 2 or scores_KR.shape[0] < 1:
        raise ValueError(f"scores_KR must be [K, R] with K >= 1, got shape {tuple(scores_KR.shape)}")
    s = scores_KR.double()
    gt = (s[:, :, None] > s[:, None, :]).double()
    eq = (s[:, :, None] == s[:, None, :]).double()
    return (gt + 0.5 * eq).mean(0)


def preference_consistency(scores_KR: torch.Tensor, *, band: tuple[float, float] = (0.3, 0.7)) -> dict[str, float]:
    """Cycle rate of the majority relation and disagreement entropy for one prompt's responses.

    Directed 3-cycles of the strict majority graph D are trace(D³)/3; triangles whose three pairs
    all have a strict majority are trace(U³)/6 with U = D + Dᵀ. The cycle rate is their ratio
    (NaN when no such triangle exists).

    Args:
        scores_KR: [K, R] scores.
        band: the uncertain band of p_ij.
    Returns: ``cycle_rate``, ``cycles``, ``decisive_triangles``, ``disagreement_entropy_bits``,
        ``uncertain_frac`` and ``num_pairs``.
    """
    P = pairwise_preferences(scores_KR)
    R = P.shape[0]
    D = (P > 0.5).double()
    U = D + D.T
    cycles = round(float(torch.trace(D @ D @ D)) / 3)
    triangles = round(float(torch.trace(U @ U @ U)) / 6)
    iu = torch.triu_indices(R, R, offset=1)
    p = P[iu[0], iu[1]]
    H = torch.zeros_like(p)
    mixed = (p > 0) & (p < 1)
    pm = p[mixed]
    H[mixed] = -(pm * pm.log2() + (1 - pm) * (1 - pm).log2())
    return {
        "cycle_rate": cycles / triangles if triangles else math.nan,
        "cycles": cycles,
        "decisive_triangles": triangles,
        "disagreement_entropy_bits": float(H.mean()) if p.numel() else math.nan,
        "uncertain_frac": float(((p >= band[0]) & (p <= band[1])).double().mean()) if p.numel() else math.nan,
        "num_pairs": int(p.numel()),
    }
