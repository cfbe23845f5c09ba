"""The entropy mechanism: log-prob/advantage covariance, predicted vs measured entropy change, and
the entropy–performance law.

Paper: "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models" (Cui et
al., arXiv 2505.22617).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch


def token_covariance(logp_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Per-token centred cross-products C = (ℓ − mean ℓ)(A − mean A) over the valid tokens.

    Entropy Mechanism, the token-level covariance of §1.1 (the quantity Clip-Cov / KL-Cov select
    on). Both means are unweighted means over all valid tokens of the tensor given (so the scope is
    whatever the caller passes: one step's rollout batch in :func:`diagnose`). The mean of C is the
    population covariance; there is no 1/(N−1) on purpose, matching the paper's code.

    Args:
        logp_BT: [B, T] log-probs of the sampled tokens (detached).
        adv_BT: [B, T] advantages, or [B] per-sequence advantages broadcast to every token.
        mask_BT: [B, T] bool, True = valid token.
    Returns: C_N, a 1-D float64 tensor over the N valid tokens (row-major order).
    """
    if adv_BT.dim() == 1:
        adv_BT = adv_BT[:, None].expand_as(logp_BT)
    if not (logp_BT.shape == adv_BT.shape == mask_BT.shape):
        raise ValueError(f"shapes differ: logp {tuple(logp_BT.shape)}, adv {tuple(adv_BT.shape)}, mask {tuple(mask_BT.shape)}")
    mask = mask_BT.bool()
    logp_N = logp_BT.detach().double()[mask]
    adv_N = adv_BT.detach().double()[mask]
    if logp_N.numel() == 0:
        return logp_N
    return (logp_N - logp_N.mean()) * (adv_N - adv_N.mean())


def entropy_change_first_order(logits_V: torch.Tensor, delta_logits_V: torch.Tensor) -> torch.Tensor:
    """First-order entropy change of a softmax policy under a logit change: −Cov_{a∼π}(log π_a, Δz_a).

    Entropy Mechanism §1.1: with dπ_a = π_a(dz_a − E_π[dz]) and dH = −Σ_a (log π_a + 1) dπ_a, the
    "+1" term vanishes and dH = −Cov_π(log π, dz). Exact to first order in Δz.

    Args:
        logits_V: [..., V] logits.
        delta_logits_V: [..., V] logit change.
    Returns: [...] predicted ΔH (nats).
    """
    logp = torch.log_softmax(logits_V.double(), dim=-1)
    p = logp.exp()
    dz = delta_logits_V.double()
    return -((p * logp * dz).sum(-1) - (p * logp).sum(-1) * (p * dz).sum(-1))


@dataclass
class EntropyChangeFit:
    """Measured step-to-step entropy change against the covariance prediction ΔH ≈ −η·Cov."""

    steps: list[int]
    measured_dH: list[float]
    covariance: list[float]
    eta_hat: float          # least-squares step size through the origin
    correlation: float      # Pearson correlation of measured ΔH with −Cov (NaN if undefined)
    sign_agreement: float   # fraction of steps where sign(ΔH) = sign(−Cov)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_entropy_change(steps: Sequence[int], entropy: Sequence[float], covariance: Sequence[float]) -> EntropyChangeFit:
    """Compare the measured entropy change between recorded steps with −Cov at the earlier step.

    Entropy Mechanism §1.1: under natural policy gradient ΔH ≈ −η·Cov(log π, A). The optimiser's
    effective η is unknown (Adam, several mini-batches), so we fit one η̂ by least squares
    through the origin, η̂ = −Σ ΔH·Cov / Σ Cov², and report the correlation and sign agreement. The
    change is taken between successive recorded steps; with sparse steps it spans several updates.

    Args:
        steps: recorded steps, increasing.
        entropy: token-mean entropy at each step.
        covariance: mean token covariance (mean of :func:`token_covariance`) at each step.
    """
    if not (len(steps) == len(entropy) == len(covariance)):
        raise ValueError("steps, entropy and covariance must have the same length")
    if len(steps) < 2:
        raise ValueError("need at least two steps to measure an entropy change")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("steps must be strictly increasing")
    dH = [entropy[i + 1] - entropy[i] for i in range(len(steps) - 1)]
    cov = [float(c) for c in covariance[:-1]]
    sxx = sum(c * c for c in cov)
    eta = -sum(d * c for d, c in zip(dH, cov)) / sxx if sxx > 0 else math.nan
    pred = [-c for c in cov]
    corr = _pearson(dH, pred)
    agree = sum((d > 0) == (p > 0) for d, p in zip(dH, pred) if d != 0 and p != 0)
    counted = sum(1 for d, p in zip(dH, pred) if d != 0 and p != 0)
    return EntropyChangeFit(list(steps[:-1]), dH, cov, eta, corr, agree / counted if counted else math.nan)


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


@dataclass
class LawFit:
    """R = −a·exp(H) + b fitted on the first ``n_fit`` points; the rest are held out."""

    a: float
    b: float
    ceiling: float            # predicted performance at H = 0: b − a
    n_fit: int
    rmse_fit: float
    rmse_holdout: float | None  # None when nothing is held out

    def predict(self, entropy: float) -> float:
        return -self.a * math.exp(entropy) + self.b

    def to_dict(self) -> dict:
        return asdict(self)


def fit_entropy_performance_law(entropy: Sequence[float], performance: Sequence[float], *, n_fit: int | None = None) -> LawFit:
    """Fit the entropy–performance law R = −a·exp(H) + b by least squares (Entropy Mechanism §1.6).

    The law is linear in x = exp(H), so the fit is ordinary linear regression of R on x (closed
    form, no optimiser): a = −slope, b = intercept. The predicted ceiling is R(H=0) = b − a.
    Points are in training order; the first ``n_fit`` (default: half, at least 2) are fitted and
    the later ones are held out to measure extrapolation error, as the paper does.

    Args:
        entropy: token-mean policy entropy per step (nats).
        performance: the performance R at the same steps (accuracy or mean reward).
        n_fit: number of leading points to fit.
    """
    if len(entropy) != len(performance):
        raise ValueError("entropy and performance must have the same length")
    total = len(entropy)
    n_fit = max(2, total // 2) if n_fit is None else n_fit
    if not 2 <= n_fit <= total:
        raise ValueError(f"n_fit must be in [2, {total}] (the number of points), got {n_fit}")
    x = [math.exp(h) for h in entropy[:n_fit]]
    y = list(performance[:n_fit])
    mx, my = sum(x) / n_fit, sum(y) / n_fit
    sxx = sum((v - mx) ** 2 for v in x)
    if sxx <= 0:
        raise ValueError("entropy is constant over the fitted steps: the law cannot be fitted")
    slope = sum((u - mx) * (v - my) for u, v in zip(x, y)) / sxx
    a, b = -slope, my - slope * mx
    fit = LawFit(a, b, b - a, n_fit, 0.0, None)
    fit.rmse_fit = _rmse([fit.predict(h) for h in entropy[:n_fit]], y)
    if n_fit < total:
        fit.rmse_holdout = _rmse([fit.predict(h) for h in entropy[n_fit:]], list(performance[n_fit:]))
    return fit


def _rmse(pred: Sequence[float], target: Sequence[float]) -> float:
    return math.sqrt(sum((p - t) ** 2 for p, t in zip(pred, target)) / len(pred))
