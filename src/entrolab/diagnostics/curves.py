"""pass@k curves with bootstrap bands for several models, and the crossover budget k.

Estimator: the unbiased pass@k of Chen et al. 2021 (``diagnostics.passk``). The
crossover k is where the base model's curve meets the RL model's from below: the evidence RLVR
papers (Yue et al. 2025; "The Invisible Leash", arXiv 2507.14843) use for "RL sharpens but does
not expand".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from entrolab.diagnostics.passk import bootstrap_passk, default_ks, pass_at_k_curve


def passk_curves(
    counts: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    *,
    ks: Sequence[int] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """Mean pass@k and a percentile-bootstrap band over prompts for each model.

    All models share one k grid (default 1, 2, 4, … up to the smallest n of any prompt of any
    model) so the curves are comparable. Every model is bootstrapped with the same ``seed``: when
    models share their prompt list, replicate r resamples the same prompts for all of them.

    Args:
        counts: model label → (n_P, c_P), samples and correct samples per prompt.
        ks: budgets; each must be ≤ every prompt's n (k > n raises ValueError naming both).
        n_boot, alpha, seed: bootstrap replicates, 1 − confidence level, RNG seed.
    Returns: label → ``{"ks", "pass_at_k", "lo", "hi"}`` (lists aligned with ks).
    """
    if not counts:
        raise ValueError("passk_curves needs at least one model")
    n_min = min(min(n_P) for n_P, _ in counts.values())
    grid = default_ks(n_min) if ks is None else [int(k) for k in ks]
    for label, (n_P, _) in counts.items():
        if max(grid) > min(n_P):
            raise ValueError(f"model '{label}': k = {max(grid)} exceeds n = {min(n_P)} samples of one of its prompts")
    out = {}
    for label, (n_P, c_P) in counts.items():
        mean = pass_at_k_curve(n_P, c_P, grid)
        band = bootstrap_passk(n_P, c_P, grid, n_boot=n_boot, alpha=alpha, seed=seed)
        out[label] = {
            "ks": list(grid),
            "pass_at_k": [mean[k] for k in grid],
            "lo": [band[k][0] for k in grid],
            "hi": [band[k][1] for k in grid],
        }
    return out


def crossover_k(ks: Sequence[int], base: Sequence[float], trained: Sequence[float], *, tol: float = 1e-12) -> dict[str, Any]:
    """The smallest budget k at which the base model's pass@k reaches the trained model's.

    Returns a dict with ``status``:
    * ``"crosses"``: trained is above base at the first k, and base ends up strictly above it;
    * ``"meets"``: trained is above base at the first k, and base only ties it later (typically
      both saturate at 1: no evidence either way about the support);
    * ``"trained_never_above"``: base ≥ trained already at the first k (no crossover to find);
    * ``"no_crossover"``: trained stays above base over the whole grid (``gap_at_kmax`` says by
      how much at the largest k).
    For ``crosses`` / ``meets``, ``k`` is the first grid point where base ≥ trained (within
    ``tol``) and ``k_interp`` the zero of (trained − base) interpolated linearly in log2 k between
    that grid point and the previous one.

    Args:
        ks: increasing budgets; base / trained: pass@k at those budgets.
    """
    if not (len(ks) == len(base) == len(trained)) or not ks:
        raise ValueError("ks, base and trained must be non-empty and of one length")
    if any(b <= a for a, b in zip(ks, ks[1:])):
        raise ValueError("ks must be strictly increasing")
    gap = [t - b for t, b in zip(trained, base)]
    if gap[0] <= tol:
        return {"status": "trained_never_above", "k": None, "k_interp": None}
    for i in range(1, len(ks)):
        if gap[i] <= tol:
            x0, x1 = math.log2(ks[i - 1]), math.log2(ks[i])
            frac = gap[i - 1] / (gap[i - 1] - min(gap[i], 0.0))
            status = "crosses" if any(g < -tol for g in gap[i:]) else "meets"
            return {"status": status, "k": int(ks[i]), "k_interp": 2 ** (x0 + frac * (x1 - x0))}
    return {"status": "no_crossover", "k": None, "k_interp": None, "gap_at_kmax": gap[-1]}
