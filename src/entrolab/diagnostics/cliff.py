"""Policy-cliff diagnostics: sensitivity of the trained policy to a small reward perturbation.

Paper: "The Policy Cliff" (Xu, arXiv 2507.20150); specs/preference-and-reward-models.md §17.1. The
map reward → optimal policy is discontinuous where the optimal set is not unique (many equally
rewarded answers), so a reward perturbation of size δ can move the policy by O(1) instead of O(δ).
Measured here [DERIVED]: train twice from one seed, once with rewards perturbed by δ, and compare
the two answer distributions per prompt by total variation, per unit δ; the size of the
near-optimal answer set says how degenerate the optimum is. Softmax (entropy-regularised) policies
are Lipschitz: TV(softmax(r/τ), softmax((r+δ)/τ)) ≤ (max δ − min δ)/(4τ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def normalise(counts: Mapping[str, float]) -> dict[str, float]:
    """Counts (or weights) → probabilities; raises on negative or all-zero input."""
    if any(v < 0 for v in counts.values()):
        raise ValueError("counts must be >= 0")
    total = float(sum(counts.values()))
    if total <= 0:
        raise ValueError("counts sum to zero: no distribution")
    return {k: v / total for k, v in counts.items()}


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """TV(p, q) = ½ Σ_a |p(a) − q(a)| over the union of outcomes (missing = probability 0)."""
    return 0.5 * sum(abs(p.get(a, 0.0) - q.get(a, 0.0)) for a in set(p) | set(q))


def near_optimal_set(rewards: Mapping[str, float], *, tol: float = 1e-6) -> dict[str, float | int]:
    """Size of {a : r(a) ≥ max r − tol} and the gap between the best and the second-best reward.

    Args:
        rewards: answer → (unperturbed) reward.
        tol: how far below the best reward still counts as optimal.
    Returns: ``size`` and ``top2_gap`` (NaN with a single answer; 0 with tied optima).
    """
    if not rewards:
        raise ValueError("near_optimal_set needs at least one answer")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    values = sorted(rewards.values(), reverse=True)
    return {
        "size": sum(1 for v in values if v >= values[0] - tol),
        "top2_gap": values[0] - values[1] if len(values) > 1 else math.nan,
    }


def policy_cliff(
    reference: Mapping[str, Mapping[str, float]],
    perturbed: Mapping[str, Mapping[str, float]],
    *,
    delta: float,
    rewards: Mapping[str, Mapping[str, float]] | None = None,
    tol: float = 1e-6,
) -> dict[str, float | int | None]:
    """TV distance per unit δ between two runs' answer distributions, over their shared prompts.

    Args:
        reference: prompt id → answer counts of the run trained on the unperturbed reward.
        perturbed: the same for the run trained with rewards perturbed by δ (same seed).
        delta: size of the perturbation (e.g. ‖δ‖∞), > 0.
        rewards: optional prompt id → answer → unperturbed reward, for the near-optimal-set size.
        tol: tolerance of the near-optimal set.
    Returns: ``tv_mean`` (mean over prompts), ``tv_max``, ``tv_per_delta`` (tv_mean / δ),
        ``num_prompts`` and, with rewards, ``near_optimal_size_mean``.
    """
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    common = sorted(set(reference) & set(perturbed))
    if not common:
        raise ValueError("the two runs share no prompt id")
    tvs = [total_variation(normalise(reference[p]), normalise(perturbed[p])) for p in common]
    out: dict[str, float | int | None] = {
        "num_prompts": len(common),
        "tv_mean": sum(tvs) / len(tvs),
        "tv_max": max(tvs),
        "tv_per_delta": sum(tvs) / len(tvs) / delta,
    }
    if rewards is not None:
        sizes = [near_optimal_set(rewards[p], tol=tol)["size"] for p in common if rewards.get(p)]
        out["near_optimal_size_mean"] = sum(sizes) / len(sizes) if sizes else None
    return out


def softmax_tv(r_Y: torch.Tensor, delta_Y: torch.Tensor, *, tau: float) -> float:
    """TV between softmax(r/τ) and softmax((r + δ)/τ), the entropy-regularised policies (§17.1).

    Bounded by (max δ − min δ)/(4τ): the Lipschitz side of the cliff (tested).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    p = torch.softmax(r_Y.double() / tau, -1)
    q = torch.softmax((r_Y.double() + delta_Y.double()) / tau, -1)
    return float(0.5 * (p - q).abs().sum())


def answer_rewards(samples: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Mean reward per answer from (answer, reward) pairs (the answer-level reward of a prompt)."""
    sums: dict[str, list[float]] = {}
    for a, r in samples:
        sums.setdefault(a, []).append(r)
    return {a: sum(v) / len(v) for a, v in sums.items()}
