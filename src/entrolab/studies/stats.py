"""Per-prompt outcomes of a run and paired differences from a baseline with bootstrap intervals.

Every study run is evaluated on the same test prompts, and a method's seed s shares the base
model, the training prompt order and the initial RNG state with the baseline's seed s. The
difference method − baseline is therefore *paired* twice: by seed and by evaluation prompt. The
interval is a two-way paired bootstrap: each replicate resamples seeds and prompts with
replacement (independently) and averages d[s, p] = x_method[s, p] − x_baseline[s, p] over the
drawn cells; the 95 % interval is the 2.5 and 97.5 percentiles of the replicates. Resampling
both factors covers both sources of noise — which training run (seed) and which test problems
(prompts) — where a t interval over seed means would ignore the finite prompt set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from entrolab.diagnostics.passk import pass_at_k_per_prompt
from entrolab.evaluation import answer_entropy

#: Per-prompt metrics: name → (how it aggregates over prompts: "mean" or "sum", label on the page).
METRICS: dict[str, tuple[str, str]] = {
    "pass@1": ("mean", "pass@1"),
    "pass@kmax": ("mean", "pass@k_max"),
    "answer_entropy": ("mean", "answer H"),
    "distinct_correct": ("mean", "distinct correct"),
    "expanded": ("sum", "expanded"),
    "shrunk": ("sum", "shrunk"),
}


def _correct_answers(rec: dict[str, Any]) -> set[str]:
    return {a for a, c in rec["correct_answers"].items() if c > 0}


def per_prompt(result: dict[str, Any], base: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each metric of :data:`METRICS` for every prompt of one evaluation, prompts sorted by id.

    ``pass@kmax`` is the unbiased pass@n at the largest budget (n = samples per prompt);
    ``expanded`` / ``shrunk`` are the answer-level support changes against ``base`` (correct
    canonical answers only the trained / only the base model found on that prompt, the
    Invisible Leash classification of ``diagnostics.support``).

    Raises: ValueError when the two evaluations do not cover the same prompts.
    """
    recs = sorted(result["prompts"], key=lambda r: str(r["id"]))
    base_by_id = {str(r["id"]): r for r in base["prompts"]}
    ids = [str(r["id"]) for r in recs]
    if sorted(ids) != sorted(base_by_id):
        raise ValueError("the evaluation and the base evaluation cover different prompts; "
                         "they must use the same eval settings")
    n_P = np.array([int(r["n"]) for r in recs])
    c_P = np.array([int(r["correct"]) for r in recs])
    kmax = int(n_P.min())
    found = [_correct_answers(r) for r in recs]
    base_found = [_correct_answers(base_by_id[i]) for i in ids]
    return {
        "pass@1": c_P / n_P,
        "pass@kmax": pass_at_k_per_prompt(n_P, c_P, kmax),
        "answer_entropy": np.array([answer_entropy(r["answers"]) for r in recs]),
        "distinct_correct": np.array([float(len(f)) for f in found]),
        "expanded": np.array([float(len(f - b)) for f, b in zip(found, base_found)]),
        "shrunk": np.array([float(len(b - f)) for f, b in zip(found, base_found)]),
    }


@dataclass(frozen=True)
class PairedDiff:
    """Mean paired difference method − baseline and its 95 % two-way bootstrap interval."""

    diff: float
    lo: float
    hi: float
    seeds: int
    prompts: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def paired_bootstrap(x_SP: np.ndarray, y_SP: np.ndarray, *, n_boot: int = 4000, seed: int = 0,
                     scale: float = 1.0, level: float = 0.95) -> PairedDiff:
    """Two-way (seeds × prompts) paired bootstrap of the mean of d = x − y.

    Args:
        x_SP: [S, P] the method's per-prompt values, one row per seed.
        y_SP: [S, P] the baseline's, same seeds (rows) and prompts (columns) in the same order.
        n_boot: bootstrap replicates; ``seed`` fixes them (the same data give the same interval).
        scale: multiplies the mean (P for counts reported as totals over the prompts).
        level: coverage of the percentile interval.

    Returns: ``PairedDiff(diff, lo, hi, seeds, prompts)`` with ``diff`` = scale · mean(d).
    """
    x, y = np.asarray(x_SP, dtype=np.float64), np.asarray(y_SP, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or min(x.shape) < 1:
        raise ValueError(f"paired_bootstrap needs two [S, P] arrays of the same shape, got {x.shape} and {y.shape}")
    d = x - y
    S, P = d.shape
    rng = np.random.default_rng(seed)
    # A replicate's mean is Σ_s Σ_p n_s m_p d[s, p] / (S P) with n, m the multiplicities of the
    # drawn seeds and prompts, so one matrix product serves all replicates.
    n_BS = np.stack([np.bincount(r, minlength=S) for r in rng.integers(0, S, size=(n_boot, S))])
    m_BP = np.stack([np.bincount(r, minlength=P) for r in rng.integers(0, P, size=(n_boot, P))])
    reps = ((n_BS @ d) * m_BP).sum(axis=1) / (S * P) * scale
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return PairedDiff(float(d.mean() * scale), float(lo), float(hi), S, P)
