"""Rules that turn several scored responses to one prompt into preference pairs (pure functions)."""

from __future__ import annotations


def best_vs_worst(scores: list[float], *, margin: float = 0.0) -> tuple[int, int] | None:
    """(best, worst) indices when their score gap exceeds ``margin``, else None.

    DNO's large-margin filter (Rosset et al. 2024, arXiv:2404.03715, Alg. 2 step 4): one pair per
    prompt, the highest- against the lowest-scored response; ties keep the earliest index.
    """
    if len(scores) < 2:
        return None
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return (best, worst) if scores[best] - scores[worst] > margin else None
