"""Unbiased pass@k (Chen et al. 2021), pass@k curves and bootstrap confidence bands.

Paper: "Evaluating Large Language Models Trained on Code" (Chen et al., arXiv:2107.03374), Eq. 1:

    pass@k = E_problems[ 1 − C(n−c, k) / C(n, k) ]

for n ≥ k samples per problem of which c are correct. The ratio of binomials is evaluated in the
product form C(n−c, k)/C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i) (value 1 − 0 = 1 when n − c < k), which
never overflows. We deliberately never use 1 − (1 − c/n)^k (biased) and, unlike some third-party
copies, never return 0 for k > n: that is a ValueError.

Inputs accept python ints, lists, numpy arrays or CPU tensors; ``_P`` means one entry per prompt.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np


def _check(n: int, c: int, k: int) -> None:
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples per prompt, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n correct samples, got c={c} with n={n}")
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if k > n:
        raise ValueError(
            f"pass@k is undefined for k={k} > n={n} samples per prompt; "
            f"draw at least {k} samples or use k <= {n}"
        )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt from n samples with c correct (Chen et al. 2021, Eq. 1).

    Args:
        n: samples drawn for the prompt (n ≥ 1).
        c: how many of them are correct (0 ≤ c ≤ n).
        k: budget (1 ≤ k ≤ n).

    Returns:
        1 − C(n−c, k)/C(n, k), computed as 1 − Π_{i=n−c+1}^{n}(1 − k/i).

    Raises:
        ValueError: for k > n or any out-of-range argument (the message names it).
    """
    n, c, k = int(n), int(c), int(k)
    _check(n, c, k)
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def default_ks(n: int) -> list[int]:
    """The budgets 1, 2, 4, …, up to n, plus n itself when n is not a power of two."""
    n = int(n)
    if n < 1:
        raise ValueError(f"default_ks needs n >= 1, got n={n}")
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def _as_counts(n_P: Any, c_P: Any) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(c_P).reshape(-1)
    n = np.asarray(n_P).reshape(-1)
    if n.size == 1 and c.size != 1:  # one n shared by every prompt
        n = np.full(c.shape, n.item())
    if n.shape != c.shape:
        raise ValueError(f"n_P and c_P must have one entry per prompt, got {n.size} and {c.size}")
    if c.size == 0:
        raise ValueError("pass@k needs at least one prompt, got none")
    if not (np.all(n == np.round(n)) and np.all(c == np.round(c))):
        raise ValueError("n_P and c_P must be integer counts")
    n, c = n.astype(np.int64), c.astype(np.int64)
    if n.min() < 1:
        raise ValueError(f"every prompt needs n >= 1 samples, got min n={int(n.min())}")
    bad = np.flatnonzero((c < 0) | (c > n))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"prompt {i}: c={int(c[i])} correct is outside [0, n={int(n[i])}]")
    return n, c


def pass_at_k_per_prompt(n_P: Any, c_P: Any, k: int) -> np.ndarray:
    """Unbiased pass@k of every prompt, vectorised; float64 array [P].

    For each distinct n the log-factors log(1 − k/i), i = n, n−1, …, k+1, are summed from the top
    (i = n downwards), so prompt p needs the sum of its top c_p terms: one cumulative sum serves
    all prompts, and few-correct prompts (where 1 − Π is small) add only a few terms, keeping
    precision; ``-expm1`` avoids cancellation in 1 − Π. Equals :func:`pass_at_k` elementwise.

    Args:
        n_P: samples per prompt, [P] or one int shared by all prompts.
        c_P: correct samples per prompt, [P].
        k: budget, 1 ≤ k ≤ min(n_P).
    """
    n, c = _as_counts(n_P, c_P)
    k = int(k)
    _check(int(n.min()), 0, k)
    out = np.ones(c.shape, dtype=np.float64)
    for n_val in np.unique(n):
        sel = n == n_val
        i_desc = np.arange(n_val, k, -1, dtype=np.float64)  # n, n-1, ..., k+1
        top_sums = np.concatenate([[0.0], np.cumsum(np.log1p(-k / i_desc))])
        c_sel = c[sel]
        vals = np.ones(c_sel.shape, dtype=np.float64)
        ok = (n_val - c_sel) >= k  # otherwise pass@k = 1 exactly
        vals[ok] = -np.expm1(top_sums[c_sel[ok]]) + 0.0  # + 0.0 turns -0.0 into 0.0
        out[sel] = vals
    return out


def pass_at_k_curve(n_P: Any, c_P: Any, ks: Iterable[int] | None = None) -> dict[int, float]:
    """Mean unbiased pass@k over prompts for each budget k (Chen et al. 2021, Eq. 1).

    Args:
        n_P: samples per prompt, [P] or one int.
        c_P: correct samples per prompt, [P].
        ks: budgets; default :func:`default_ks` of the smallest n.

    Returns:
        ``{k: mean over prompts of pass@k}`` with int keys in the order of ``ks``.
    """
    n, c = _as_counts(n_P, c_P)
    ks = default_ks(int(n.min())) if ks is None else [int(k) for k in ks]
    return {k: float(pass_at_k_per_prompt(n, c, k).mean()) for k in ks}


def bootstrap_passk(n_P: Any, c_P: Any, ks: Sequence[int] | None = None, *, n_boot: int = 1000,
                    alpha: float = 0.05, seed: int = 0) -> dict[int, tuple[float, float]]:
    """Percentile-bootstrap confidence band of mean pass@k, resampling prompts with replacement.

    The per-prompt estimator is computed once; each of ``n_boot`` replicates draws P prompt indices
    with replacement (numpy ``default_rng(seed)``, so the result is reproducible) and averages them.
    The band is the [alpha/2, 1 − alpha/2] quantile range of the replicate means. It covers prompt
    sampling only, not the sampling of the n completions within a prompt.

    Args:
        n_P: samples per prompt, [P] or one int.
        c_P: correct samples per prompt, [P].
        ks: budgets; default :func:`default_ks` of the smallest n.
        n_boot: bootstrap replicates (≥ 1).
        alpha: 1 − confidence level, in (0, 1).
        seed: seed of the resampling RNG.

    Returns:
        ``{k: (lo, hi)}``.
    """
    if n_boot < 1:
        raise ValueError(f"bootstrap_passk needs n_boot >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"bootstrap_passk needs 0 < alpha < 1, got {alpha}")
    n, c = _as_counts(n_P, c_P)
    ks = default_ks(int(n.min())) if ks is None else [int(k) for k in ks]
    vals_KP = np.stack([pass_at_k_per_prompt(n, c, k) for k in ks])
    rng = np.random.default_rng(seed)
    idx_RP = rng.integers(0, c.size, size=(int(n_boot), c.size))
    means_KR = vals_KP[:, idx_RP].mean(axis=-1)
    lo_K = np.quantile(means_KR, alpha / 2, axis=-1)
    hi_K = np.quantile(means_KR, 1 - alpha / 2, axis=-1)
    return {k: (float(lo), float(hi)) for k, lo, hi in zip(ks, lo_K, hi_K)}
