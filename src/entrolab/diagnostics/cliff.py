"""Policy-cliff diagnostics: sensitivity of the trained policy to a small reward perturbation.

Paper: "The Policy Cliff" (Xu, arXiv 2507.20150). The
map reward → optimal policy is discontinuous where the optimal set is not unique (many equally
rewarded answers), so a reward perturbation of size δ can move the policy by O(1) instead of O(δ).
Measured here [DERIVED]: train twice from one seed, once with rewards perturbed by δ, and compare
the two answer distributions per prompt by total variation, per unit δ; the size of the
near-optimal answer set says how degenerate the optimum is. Softmax (entropy-regularised) policies
are Lipschitz: TV(softmax(r/τ), softmax((r+δ)/τ)) ≤ (max δ − min δ)/(4τ).

The TV is measured between two *finite samples* (e.g. 64 answers per prompt), so it is > 0 even
for one and the same policy. ``tv_noise_floor`` estimates that floor per prompt by a parametric
bootstrap under the null "both runs are one policy" (two independent samples of the two runs' sizes
from their pooled answer distribution); ``policy_cliff`` reports it next to the measured TV.
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


def _sample_size(counts: Mapping[str, float], which: str) -> int:
    n = float(sum(counts.values()))
    if any(v < 0 for v in counts.values()) or n < 1 or any(abs(v - round(v)) > 1e-9 for v in counts.values()):
        raise ValueError(f"tv_noise_floor: {which} must be non-negative integer counts with a positive total, "
                         f"got {dict(counts)}")
    return int(round(n))


def tv_noise_floor(a: Mapping[str, float], b: Mapping[str, float], *, draws: int = 400, seed: int = 0) -> float:
    """Expected TV between two independent samples of sizes n_a, n_b drawn from ONE distribution.

    The distribution is the pooled empirical one of ``a`` and ``b`` (the maximum-likelihood answer
    distribution under the null "both runs are the same policy"); the expectation is estimated with
    ``draws`` seeded multinomial draws (parametric bootstrap). A TV at or below this value cannot be
    told apart from sampling noise. Hand values: one answer → 0; two equally likely answers → 1/2 for
    n = 1 each and 3/8 for n = 2 each.

    Args:
        a, b: answer → count (integers) of the two runs for one prompt.
        draws: bootstrap draws (the estimate's standard error is ≤ 0.5/√draws).
        seed: seed of the draws (the result is deterministic).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    n_a, n_b = _sample_size(a, "a"), _sample_size(b, "b")
    keys = sorted(set(a) | set(b))
    pooled = torch.tensor([float(a.get(k, 0.0)) + float(b.get(k, 0.0)) for k in keys], dtype=torch.float64)
    if len(keys) == 1:
        return 0.0
    g = torch.Generator().manual_seed(seed)
    p = (pooled / pooled.sum()).expand(draws, -1)

    def counts(n: int) -> torch.Tensor:
        idx = torch.multinomial(p, n, replacement=True, generator=g)
        return torch.zeros(draws, len(keys), dtype=torch.float64).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))

    ca, cb = counts(n_a), counts(n_b)
    return float((0.5 * (ca / n_a - cb / n_b).abs().sum(-1)).mean())


def policy_cliff(
    reference: Mapping[str, Mapping[str, float]],
    perturbed: Mapping[str, Mapping[str, float]],
    *,
    delta: float,
    rewards: Mapping[str, Mapping[str, float]] | None = None,
    tol: float = 1e-6,
    floor_draws: int = 400,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """TV distance per unit δ between two runs' answer distributions, over their shared prompts.

    Args:
        reference: prompt id → answer counts of the run trained on the unperturbed reward.
        perturbed: the same for the run trained with rewards perturbed by δ (same seed).
        delta: size of the perturbation (e.g. ‖δ‖∞), > 0.
        rewards: optional prompt id → answer → unperturbed reward, for the near-optimal-set size.
        tol: tolerance of the near-optimal set.
        floor_draws, seed: bootstrap of the sampling-noise floor (``tv_noise_floor``; needs integer
            counts — with non-integer weights the floor is None).
    Returns: ``tv_mean`` (mean over prompts), ``tv_max``, ``tv_per_delta`` (tv_mean / δ),
        ``tv_floor_mean`` (mean over prompts of the noise floor: the TV expected if both runs were one
        policy), ``tv_above_floor`` (tv_mean − tv_floor_mean), ``num_prompts`` and, with rewards,
        ``near_optimal_size_mean``.
    """
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    common = sorted(set(reference) & set(perturbed))
    if not common:
        raise ValueError("the two runs share no prompt id")
    tvs = [total_variation(normalise(reference[p]), normalise(perturbed[p])) for p in common]
    integer = all(abs(v - round(v)) < 1e-9 for c in (reference, perturbed) for p in common for v in c[p].values())
    floors = ([tv_noise_floor(reference[p], perturbed[p], draws=floor_draws, seed=seed + i)
               for i, p in enumerate(common)] if integer else None)
    tv_mean = sum(tvs) / len(tvs)
    out: dict[str, float | int | None] = {
        "num_prompts": len(common),
        "tv_mean": tv_mean,
        "tv_max": max(tvs),
        "tv_per_delta": tv_mean / delta,
        "tv_floor_mean": None if floors is None else sum(floors) / len(floors),
        "tv_above_floor": None if floors is None else tv_mean - sum(floors) / len(floors),
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
