"""Support change between a base and a trained model ("The Invisible Leash", arXiv 2507.14843).

Per prompt, a model's empirical support is the set of correct
canonical answers it produced in its k samples: an answer of probability ≥ ε is then missed with
probability at most ζ, where ε = 1 − ζ^{1/k}. Comparing base and trained sets classifies every
(prompt, correct answer) as preserved, expanded (only the trained model finds it) or shrunk (only
the base model finds it). The same classification at problem level uses "solved at least once".

Metrics (P, E, S the counts): SRR = P/(P+S), NDR = E/(P+E), SDS = harmonic mean of SRR and NDR,
NSCR = (E − S)/(P + E + S). A ratio whose denominator is zero is NaN (reported as null).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass


def empirical_support_epsilon(k: int, *, zeta: float = 0.05) -> float:
    """ε such that an answer with probability ε is missed by k samples with probability ζ.

    Invisible Leash §12: (1 − ε)^k = ζ, so ε = 1 − ζ^{1/k} ≈ ln(1/ζ)/k (k = 8192, ζ = 0.05 gives
    ε ≈ 3.66e-4).
    """
    if k < 1:
        raise ValueError(f"sampling budget k must be >= 1, got {k}")
    if not 0 < zeta < 1:
        raise ValueError(f"zeta must be in (0, 1), got {zeta}")
    return 1.0 - zeta ** (1.0 / k)


@dataclass
class SupportChange:
    """Counts and ratios of the support comparison (one level: answers or problems)."""

    preserved: int
    expanded: int
    shrunk: int
    out_of_support: int  # problem level only: solved by neither (answers found by neither are unknown)
    srr: float
    ndr: float
    sds: float
    nscr: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def support_metrics(preserved: int, expanded: int, shrunk: int, out_of_support: int = 0) -> SupportChange:
    """SRR, NDR, SDS and NSCR from the counts (Invisible Leash §12)."""
    if min(preserved, expanded, shrunk, out_of_support) < 0:
        raise ValueError("support counts must be >= 0")
    P, E, S = preserved, expanded, shrunk
    srr = P / (P + S) if P + S else math.nan
    ndr = E / (P + E) if P + E else math.nan
    if math.isnan(srr) or math.isnan(ndr):
        sds = math.nan
    else:
        sds = 2 * srr * ndr / (srr + ndr) if srr + ndr > 0 else 0.0
    nscr = (E - S) / (P + E + S) if P + E + S else math.nan
    return SupportChange(P, E, S, out_of_support, srr, ndr, sds, nscr)


def support_change(
    base: Mapping[str, Iterable[str]],
    trained: Mapping[str, Iterable[str]],
    *,
    level: str = "answer",
) -> SupportChange:
    """Classify base vs trained empirical supports over the prompts both models were sampled on.

    Args:
        base: prompt id → correct canonical answers the base model found (its empirical support).
        trained: the same for the trained model.
        level: ``"answer"`` counts (prompt, answer) pairs; ``"problem"`` counts prompts, a prompt
            being in a model's support when it found at least one correct answer.
    Raises: ValueError when the two models share no prompt.
    """
    if level not in ("answer", "problem"):
        raise ValueError(f"level must be 'answer' or 'problem', got {level!r}")
    common = sorted(set(base) & set(trained))
    if not common:
        raise ValueError("base and trained models share no prompt id: nothing to compare")
    P = E = S = O = 0
    for pid in common:
        b, t = set(base[pid]), set(trained[pid])
        if level == "problem":
            P += bool(b) and bool(t)
            E += not b and bool(t)
            S += bool(b) and not t
            O += not b and not t
        else:
            P += len(b & t)
            E += len(t - b)
            S += len(b - t)
    return support_metrics(P, E, S, O)


def solution_coverage(correct_counts: Mapping[str, int], n: int, solutions: Iterable[str]) -> dict:
    """Coverage of an enumerable solution set and the probability mass on each solution.

    Args:
        correct_counts: correct canonical answer → number of samples (out of ``n``) giving it.
        n: the number of samples drawn for the prompt.
        solutions: every correct canonical answer of the prompt (e.g. Countdown's enumeration).
    Returns: ``coverage`` (found solutions / all solutions), ``found``, ``num_solutions``,
        ``mass`` (solution → empirical probability count/n, 0 for unfound ones),
        ``mass_on_solutions`` (Σ mass) and ``unlisted`` (correct answers missing from the list,
        which signals a canonicalisation mismatch between verifier and enumerator).
    """
    sols = list(dict.fromkeys(solutions))
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if sum(correct_counts.values()) > n:
        raise ValueError(f"correct counts sum to {sum(correct_counts.values())} > n = {n}")
    mass = {s: correct_counts.get(s, 0) / n for s in sols}
    found = sum(1 for s in sols if correct_counts.get(s, 0) > 0)
    return {
        "coverage": found / len(sols) if sols else math.nan,
        "found": found,
        "num_solutions": len(sols),
        "mass": mass,
        "mass_on_solutions": sum(mass.values()),
        "unlisted": sorted(a for a, c in correct_counts.items() if c > 0 and a not in set(sols)),
    }
