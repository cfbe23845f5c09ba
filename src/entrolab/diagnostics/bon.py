"""Best-of-N versus KL-constrained RL (the exponentially tilted policy), per prompt.

Papers: "Asymptotics of Language Model Alignment" (Yang et al., arXiv 2404.01730) and "Theoretical
Guarantees on the Best-of-n Alignment Policy" (Beirami et al., arXiv 2401.01879).

* Without reward ties, KL(π_BoN ‖ p) = log N − (N−1)/N exactly; with ties (discrete answers,
  binary verifier rewards) that value is only an upper bound. :func:`bon_distribution` gives the
  exact best-of-N distribution on a discrete space (ties broken uniformly at random among the
  drawn maximisers), so :func:`bon_kl_exact` is the exact KL.
* The KL-constrained optimum is the tilt φ_λ ∝ p·e^{λr}; from samples y_i ∼ p, self-normalised
  importance sampling estimates E_φ[r] and KL(φ‖p) = λ·E_φ[r] − log mean_i e^{λ r_i}. The effective
  sample size is reported because the estimate degrades when the weights concentrate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def bon_kl_bound(N: int) -> float:
    """log N − (N−1)/N: the exact KL of best-of-N without ties, an upper bound with ties."""
    if N < 1:
        raise ValueError(f"N must be >= 1, got {N}")
    return math.log(N) - (N - 1) / N


def bon_distribution(p_Y: torch.Tensor, r_Y: torch.Tensor, N: int) -> torch.Tensor:
    """Exact distribution of the best-of-N output on a finite space, ties broken uniformly.

    With reward levels ℓ and F(ℓ) = P_p(r(Y) ≤ ℓ), the maximum of N draws has level ℓ with
    probability F(ℓ)^N − F(ℓ⁻)^N; given the level, the chosen draw is uniform among the drawn
    maximisers, each distributed as p conditioned on the level. So
    π_BoN(y) = p(y)/P(ℓ) · (F(ℓ)^N − F(ℓ⁻)^N) with ℓ = r(y) and P(ℓ) = F(ℓ) − F(ℓ⁻).

    Args:
        p_Y: [Y] reference probabilities (normalised; zeros allowed).
        r_Y: [Y] rewards.
        N: number of draws.
    Returns: [Y] float64 best-of-N probabilities.
    """
    if N < 1:
        raise ValueError(f"N must be >= 1, got {N}")
    p = p_Y.double()
    if p.shape != r_Y.shape or p.dim() != 1:
        raise ValueError("p_Y and r_Y must be 1-D of one length")
    if (p < 0).any() or abs(float(p.sum()) - 1) > 1e-6:
        raise ValueError("p_Y must be a probability vector (>= 0, summing to 1)")
    p = p / p.sum()  # float32 inputs sum to 1 only to ~1e-7
    r = r_Y.double()
    out = torch.zeros_like(p)
    levels = torch.unique(r[p > 0])  # sorted ascending
    below = 0.0
    for level in levels.tolist():
        at = r == level
        mass = float(p[at].sum())
        top = below + mass
        out[at] = p[at] / mass * (top**N - below**N)
        below = top
    return out


def kl_divergence(q_Y: torch.Tensor, p_Y: torch.Tensor) -> float:
    """KL(q ‖ p) = Σ q log(q/p) over q > 0 (inf where q > 0 = p); never negative.

    KL ≥ 0 (Gibbs), but when q equals p up to rounding (best-of-1, or a prompt whose samples all tie)
    the float sum can come out as −1e-16; we return 0 then, so callers can require kl ≥ 0.
    """
    q, p = q_Y.double(), p_Y.double()
    on = q > 0
    if (p[on] <= 0).any():
        return math.inf
    return max(0.0, float((q[on] * (q[on].log() - p[on].log())).sum()))


def bon_kl_exact(p_Y: torch.Tensor, r_Y: torch.Tensor, N: int) -> float:
    """Exact KL(π_BoN ‖ p) on a finite space (ties allowed); ≤ :func:`bon_kl_bound` (N)."""
    return kl_divergence(bon_distribution(p_Y, r_Y, N), p_Y)


def bon_expected_reward(rewards: Sequence[float], n: int) -> float:
    """Unbiased estimate of E[max of n draws] from N ≥ n samples (order statistics).

    With the samples sorted ascending s_(1) ≤ … ≤ s_(N), every n-subset's maximum is s_(i) for
    C(i−1, n−1) subsets, so the mean over all C(N, n) subsets is Σ_{i=n}^{N} C(i−1,n−1)/C(N,n)·s_(i).
    Computed with log-binomials to avoid overflow.
    """
    N = len(rewards)
    if not 1 <= n <= N:
        raise ValueError(f"best-of-n needs 1 <= n <= N = {N} samples, got n = {n}")
    s = sorted(float(x) for x in rewards)
    log_total = math.lgamma(N + 1) - math.lgamma(n + 1) - math.lgamma(N - n + 1)
    acc = 0.0
    for i in range(n, N + 1):
        log_w = math.lgamma(i) - math.lgamma(n) - math.lgamma(i - n + 1) - log_total
        acc += math.exp(log_w) * s[i - 1]
    return acc


def _levels(rewards: Sequence[float]) -> tuple[list[float], list[int]]:
    """Distinct reward values (ascending) and their sample counts: the tilt only depends on these."""
    counts: dict[float, int] = {}
    for x in rewards:
        counts[float(x)] = counts.get(float(x), 0) + 1
    if not counts:
        raise ValueError("the tilt needs at least one sample")
    values = sorted(counts)
    return values, [counts[v] for v in values]


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _tilt(values: list[float], counts: list[int], lam: float) -> dict[str, float]:
    # Plain floats: a handful of levels, evaluated ~50 times per bisection (tensor overhead dominates).
    n = sum(counts)
    if math.isinf(lam):
        return {"reward": values[-1], "kl": -math.log(counts[-1] / n), "ess": float(counts[-1])}
    logw = [lam * v + math.log(c) for v, c in zip(values, counts)]  # one weight per level × multiplicity
    log_z = _logsumexp(logw)
    reward = sum(math.exp(lw - log_z) * v for lw, v in zip(logw, values))
    # Per-sample ESS (Σ_i w_i)² / Σ_i w_i²: a level of c samples adds c·e^{2λr} to Σw².
    ess = math.exp(2 * log_z - _logsumexp([2 * lam * v + math.log(c) for v, c in zip(values, counts)]))
    return {"reward": reward, "kl": max(0.0, lam * reward - (log_z - math.log(n))), "ess": ess}


def tilted_estimates(rewards: Sequence[float], lam: float) -> dict[str, float]:
    """Self-normalised IS estimates for the tilt φ_λ ∝ p·e^{λr} from samples of p.

    Returns ``reward`` (Σ r_i w_i / Σ w_i with w_i = e^{λ r_i}), ``kl`` (λ·reward − log mean w)
    and ``ess`` ((Σw)²/Σw², between 1 and the sample count). λ = inf is the limit: all weight on
    the maximal reward. Computed over the distinct reward levels, so it is cheap for verifier rewards.
    """
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    return _tilt(*_levels(rewards), lam)


def tilted_at_kl(rewards: Sequence[float], kl: float, *, tol: float = 1e-9, max_iter: int = 200) -> dict[str, float]:
    """The tilt whose estimated KL equals ``kl`` (bisection on λ; the estimate rises with λ).

    The estimated KL is capped at −log(fraction of samples with the maximal reward), reached as
    λ → ∞; a larger target returns that limit (``lambda`` = inf, ``capped`` = 1).
    """
    if kl < 0:
        raise ValueError(f"kl must be >= 0, got {kl}")
    values, counts = _levels(rewards)
    cap = _tilt(values, counts, math.inf)
    if kl >= cap["kl"] - tol:
        return {**cap, "lambda": math.inf, "capped": 1.0}
    lo, hi = 0.0, 1.0
    while _tilt(values, counts, hi)["kl"] < kl:
        hi *= 2.0
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if _tilt(values, counts, mid)["kl"] < kl:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol * max(1.0, hi):
            break
    return {**_tilt(values, counts, hi), "lambda": hi, "capped": 0.0}
