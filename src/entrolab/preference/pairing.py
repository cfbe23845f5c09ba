"""Rules that turn several scored responses to one prompt into preference pairs (pure functions).

Every rule returns ``(chosen index, rejected index)`` pairs into the list it was given and uses each
response in **at most one pair**: pairs sharing a response are not independent and would weigh that
response more in the loss. The builder (``preference/build.py``) first keeps one copy of each
distinct completion (``distinct``), so no pair repeats a text and none has identical responses.
Ties are broken by the earlier index, so every rule is deterministic. Rules and the choices they
make are documented in docs/preferences.md.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Sequence


def distinct(texts: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of each distinct text, in order."""
    seen: set[str] = set()
    out = []
    for i, t in enumerate(texts):
        if t not in seen:
            seen.add(t)
            out.append(i)
    return out


def _check_scores(scores: Sequence[float], what: str) -> None:
    for i, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ValueError(f"{what}: score {i} must be a finite number, got {s!r}")


def _check_cap(max_pairs: int | None) -> None:
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be an integer >= 1 or None, got {max_pairs!r}")


def margin_pairs(scores: Sequence[float], *, margin: float = 0.0, max_pairs: int | None = None
                 ) -> list[tuple[int, int]]:
    """Score-margin rule: the i-th best response against the i-th worst, while their gap > ``margin``.

    With ``desc`` the indices by decreasing score and ``asc`` by increasing score (ties: earlier
    index first in both), pair i is ``(desc[i], asc[i])`` for i = 0, 1, … as long as
    ``score[desc[i]] − score[asc[i]] > margin`` (the gaps only shrink with i) and fewer than
    ``max_pairs`` pairs were taken. Because every kept gap is > 0, no response appears twice; the
    extremes are paired first (DNO's large-margin filter extended past one pair per prompt).
    ``max_pairs=1`` is ``best_vs_worst``.

    Args:
        scores: one finite score per response (higher = better).
        margin: ≥ 0; a pair needs a score gap strictly larger.
        max_pairs: cap on pairs (None = as many as the rule gives, at most len(scores) // 2).
    """
    _check_scores(scores, "margin_pairs")
    _check_cap(max_pairs)
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    n = len(scores)
    desc = sorted(range(n), key=lambda i: (-scores[i], i))
    asc = sorted(range(n), key=lambda i: (scores[i], i))
    out = []
    for b, w in zip(desc[: n // 2], asc[: n // 2]):
        if scores[b] - scores[w] <= margin or (max_pairs is not None and len(out) >= max_pairs):
            break
        out.append((b, w))
    return out


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


def verifier_pairs(correct: Sequence[bool], *, max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Verifier rule: correct against incorrect responses of one prompt, in sampling order.

    The k-th correct response is paired with the k-th incorrect one (k = 0, 1, …), giving
    ``min(#correct, #incorrect)`` disjoint pairs (capped by ``max_pairs``); a prompt whose responses
    are all correct or all incorrect gives none. Sampling order is random, so which correct and
    which incorrect response meet is not biased by their content (length, answer). Equal to
    ``margin_pairs`` on 1/0 scores with margin 0.
    """
    for i, c in enumerate(correct):
        if not isinstance(c, bool):
            raise ValueError(f"verifier_pairs: entry {i} must be a bool, got {c!r}")
    return margin_pairs([1.0 if c else 0.0 for c in correct], margin=0.0, max_pairs=max_pairs)


def heron_compare(a: Sequence[float], b: Sequence[float], *, margins: Sequence[float]) -> tuple[int, int]:
    """HERON's hierarchical comparison of two responses' reward factors (arXiv:2309.02632, Sec. 3).

    Factors are listed from the most to the least important (higher = better; negate costs). At
    level l: if ``a[l] > b[l] + margins[l]`` a wins, if ``b[l] > a[l] + margins[l]`` b wins, else
    the next level decides. Returns ``(+1, l)`` (a ≻ b decided at level l), ``(−1, l)`` (b ≻ a) or
    ``(0, −1)`` when no level decides (the pair gets no label and is dropped).
    """
    if not (len(a) == len(b) == len(margins)):
        raise ValueError(f"heron_compare: {len(a)} and {len(b)} factors for {len(margins)} margins")
    for level, (x, y, d) in enumerate(zip(a, b, margins)):
        if x > y + d:
            return 1, level
        if y > x + d:
            return -1, level
    return 0, -1


def heron_pairs(factors: Sequence[Sequence[float]], *, margins: Sequence[float],
                max_pairs: int | None = None) -> list[tuple[int, int, int]]:
    """HERON rule: disjoint ``(chosen, rejected, level)`` pairs of one prompt's responses.

    Every two responses are compared with ``heron_compare``; undecided ones are dropped. Decided
    pairs are taken greedily, each response at most once, in the order: decided at a more
    important level first (a decision on the top factor is the most trustworthy), then larger gap
    on the deciding factor, then lower indices; at most ``max_pairs``.

    Args:
        factors: [K][F] reward factors of K responses, most important factor first, finite.
        margins: [F] margins δ_l ≥ 0 (see ``scaled_margins`` for the paper's σ_l · std form).
    """
    F = len(margins)
    for d in margins:
        if not (isinstance(d, (int, float)) and math.isfinite(d) and d >= 0):
            raise ValueError(f"heron margins must be finite numbers >= 0, got {list(margins)}")
    for i, row in enumerate(factors):
        if len(row) != F:
            raise ValueError(f"heron_pairs: response {i} has {len(row)} factors, expected {F} (one per margin)")
        _check_scores(row, f"heron_pairs response {i}")
    _check_cap(max_pairs)
    decided = []
    for i in range(len(factors)):
        for j in range(i + 1, len(factors)):
            sign, level = heron_compare(factors[i], factors[j], margins=margins)
            if sign:
                win, lose = (i, j) if sign > 0 else (j, i)
                gap = factors[win][level] - factors[lose][level]
                decided.append((level, -gap, i, j, win, lose))
    used: set[int] = set()
    out = []
    for level, _, _, _, win, lose in sorted(decided):
        if max_pairs is not None and len(out) >= max_pairs:
            break
        if win not in used and lose not in used:
            used.update((win, lose))
            out.append((win, lose, level))
    return out


def scaled_margins(factors: Sequence[Sequence[float]], *, sigmas: Sequence[float]) -> list[float]:
    """HERON's data-scaled margins δ_l = σ_l · std_l, std_l the population std of factor l over ``factors``.

    The authors' code uses the std over the current batch of trajectories; the builder passes every
    response it scored (one fixed batch). Each level has its own σ_l (the authors' robotics code
    reuses σ_1 for levels 3 and 4, a bug we do not copy).
    """
    if not factors:
        raise ValueError("scaled_margins needs at least one response")
    F = len(sigmas)
    for i, row in enumerate(factors):
        if len(row) != F:
            raise ValueError(f"scaled_margins: response {i} has {len(row)} factors, expected {F} (one per sigma)")
    if any(not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0) for s in sigmas):
        raise ValueError(f"heron sigmas must be finite numbers >= 0, got {list(sigmas)}")
    return [float(s) * statistics.pstdev([row[level] for row in factors]) for level, s in enumerate(sigmas)]


def win_rates(n: int, prefer: Callable[[int, int], float]) -> list[float]:
    """Each response's mean win-rate against the others of its prompt, from a pairwise judge.

    DNO's self-play reward r(y_i) = E_{y'}[P(y_i ≻ y')] (Rosset et al., arXiv:2404.03715, Alg. 1),
    estimated over the other n − 1 samples. ``prefer(i, j)`` is the judge's P(i ≻ j) ∈ [0, 1] with i
    shown first; both orders are asked and averaged, p_ij = ½[prefer(i, j) + 1 − prefer(j, i)],
    because LM judges favour one position. r_i = (1/(n−1)) Σ_{j≠i} p_ij; n = 1 gives [0.5].
    ``best_vs_worst(win_rates(...), margin=δ)`` is then DNO's large-margin pair.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"win_rates needs n >= 1 responses, got {n!r}")
    p = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                v = prefer(i, j)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                    raise ValueError(f"pairwise judge gave {v!r} for responses ({i}, {j}); expected P in [0, 1]")
                p[i][j] = float(v)
    if n == 1:
        return [0.5]
    return [sum(0.5 * (p[i][j] + 1.0 - p[j][i]) for j in range(n) if j != i) / (n - 1) for i in range(n)]
