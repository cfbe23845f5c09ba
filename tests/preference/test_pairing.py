"""Issue 12, engineer B item 2: pair rules (verifier, score margin, best-vs-worst, HERON), hand-checked."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from entrolab.preference.pairing import (
    best_vs_worst,
    distinct,
    heron_compare,
    heron_pairs,
    margin_pairs,
    scaled_margins,
    verifier_pairs,
    win_rates,
)


def test_item2_distinct_keeps_first_copies():
    assert distinct(["a", "b", "a", "c", "b"]) == [0, 1, 3]
    assert distinct([]) == []


def test_item2_margin_pairs_hand_values():
    """scores 0.1 0.9 0.5 0.7 0.3 (indices 0..4).

    desc = 1(.9) 3(.7) 2(.5) 4(.3) 0(.1); asc = 0 4 2 3 1; n//2 = 2 candidate pairs:
    (1, 0) gap 0.8, (3, 4) gap 0.4. Margin 0.5 keeps only the first; margin 0.8 none (strict >).
    """
    s = [0.1, 0.9, 0.5, 0.7, 0.3]
    assert margin_pairs(s) == [(1, 0), (3, 4)]
    assert margin_pairs(s, margin=0.5) == [(1, 0)]
    assert margin_pairs(s, margin=0.8) == []
    assert margin_pairs(s, max_pairs=1) == [(1, 0)]
    assert margin_pairs([1.0]) == [] and margin_pairs([]) == []


def test_item2_margin_pairs_ties_take_earlier_index_and_never_reuse_a_response():
    """scores 1 1 1 0: desc 0 1 2 3, asc 3 0 1 2 → (0, 3) gap 1, then (1, 0) gap 0 stops."""
    assert margin_pairs([1.0, 1.0, 1.0, 0.0]) == [(0, 3)]
    assert margin_pairs([1.0, 1.0, 0.0, 0.0]) == [(0, 2), (1, 3)]
    rng = random.Random(0)
    for _ in range(300):  # brute-force property: disjoint, each gap > margin, gaps non-increasing
        s = [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in range(rng.randint(0, 9))]
        m = rng.choice([0.0, 0.4, 1.0])
        pairs = margin_pairs(s, margin=m)
        used = [i for p in pairs for i in p]
        assert len(used) == len(set(used))
        gaps = [s[a] - s[b] for a, b in pairs]
        assert all(g > m for g in gaps) and gaps == sorted(gaps, reverse=True)
        # the first pair is always the best-vs-worst pair
        assert (pairs[:1] or [None])[0] == best_vs_worst(s, margin=m)


def test_item2_margin_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match="^margin_pairs: score 1 must be a finite number"):
        margin_pairs([0.0, float("nan")])
    with pytest.raises(ValueError, match="score 0 must be a finite number, got True"):
        margin_pairs([True, 0.0])
    with pytest.raises(ValueError, match="max_pairs must be an integer >= 1 or None, got True"):
        margin_pairs([0.0, 1.0], max_pairs=True)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        margin_pairs([0.0, 1.0], margin=-0.1)
    with pytest.raises(ValueError, match="max_pairs must be an integer >= 1"):
        margin_pairs([0.0, 1.0], max_pairs=0)


def test_item2_best_vs_worst_hand_values():
    assert best_vs_worst([0.2, 0.9, 0.1, 0.9]) == (1, 2)  # tie for best: earlier index
    assert best_vs_worst([0.2, 0.9, 0.1], margin=0.8) is None  # gap 0.8 is not > 0.8
    assert best_vs_worst([0.5, 0.5]) is None and best_vs_worst([1.0]) is None


def test_item2_verifier_pairs_kth_correct_with_kth_incorrect():
    """correct = F T T F T F F: correct at 1 2 4, incorrect at 0 3 5 6 → (1,0) (2,3) (4,5)."""
    c = [False, True, True, False, True, False, False]
    assert verifier_pairs(c) == [(1, 0), (2, 3), (4, 5)]
    assert verifier_pairs(c, max_pairs=2) == [(1, 0), (2, 3)]
    assert verifier_pairs(c) == margin_pairs([1.0 if x else 0.0 for x in c])  # the identity docs state
    assert verifier_pairs([True, True]) == [] and verifier_pairs([False] * 3) == []
    with pytest.raises(ValueError, match="entry 0 must be a bool"):
        verifier_pairs([1, 0])


def test_item2_heron_compare_falls_to_the_next_level_only_within_the_margin():
    m = [0.5, 0.0, 1.0]
    assert heron_compare([1.0, 0.0, 0.0], [0.0, 9.0, 9.0], margins=m) == (1, 0)  # 1 > 0 + 0.5
    assert heron_compare([0.4, 0.0, 0.0], [0.0, 1.0, 0.0], margins=m) == (-1, 1)  # level 0 within 0.5
    assert heron_compare([0.0, 1.0, 5.0], [0.0, 1.0, 4.5], margins=m) == (0, -1)  # 5 > 4.5 + 1 is false
    assert heron_compare([0.0, 1.0, 5.0], [0.0, 1.0, 3.5], margins=m) == (1, 2)
    with pytest.raises(ValueError, match="2 and 3 factors for 3 margins"):
        heron_compare([0, 0], [0, 0, 0], margins=m)


def test_item2_heron_pairs_hand_values():
    """Factors (correct, format, −length), margins (0, 0, 1):

    r0 = (0, 1, −5), r1 = (1, 1, −9), r2 = (1, 1, −3), r3 = (0, 0, −2), r4 = (0, 1, −5.5).
    Decided pairs (level, gap): 1≻0 (0,1) 2≻0 (0,1) 1≻3 (0,1) 2≻3 (0,1) 1≻4 (0,1) 2≻4 (0,1)
    2≻1 (2, 6) 0≻3 (1, 1) 4≻3 (1, 1); 0 vs 4: −5 vs −5.5 within margin 1 → undecided.
    Greedy by (level, −gap, i, j): (0,1)→ pair 1≻0; (0,2)→ pair 2≻0 uses 0: skip;
    (1,3)→ 1 used: skip; (2,3)→ pair 2≻3; (1,4), (2,4) used; level-1 pairs 0≻3, 4≻3 use 0 or 3.
    """
    f = [(0, 1, -5), (1, 1, -9), (1, 1, -3), (0, 0, -2), (0, 1, -5.5)]
    assert heron_pairs(f, margins=[0, 0, 1]) == [(1, 0, 0), (2, 3, 0)]
    assert heron_pairs(f, margins=[0, 0, 1], max_pairs=1) == [(1, 0, 0)]
    # Without the top factor, the format level decides first: 0≻3 (gap 1), then 2 vs 1 on length.
    g = [x[1:] for x in f]
    assert heron_pairs(g, margins=[0, 1]) == [(0, 3, 0), (2, 1, 1)]


def test_item2_heron_pairs_match_brute_force_definition():
    """Every returned pair is decided with the stated winner, pairs are disjoint, and with one factor
    and margin 0 the first pair is best-vs-worst."""
    rng = random.Random(1)
    for _ in range(200):
        K, F = rng.randint(0, 6), rng.randint(1, 3)
        f = [tuple(float(rng.randint(0, 2)) for _ in range(F)) for _ in range(K)]
        m = [rng.choice([0.0, 0.5, 1.0]) for _ in range(F)]
        pairs = heron_pairs(f, margins=m)
        used = [i for a, b, _ in pairs for i in (a, b)]
        assert len(used) == len(set(used))
        for a, b, level in pairs:
            assert heron_compare(f[a], f[b], margins=m) == (1, level)
        # maximal: no two unused responses are still decidable
        free = [i for i in range(K) if i not in used]
        assert all(heron_compare(f[i], f[j], margins=m)[0] == 0 for i, j in itertools.combinations(free, 2))
        if F == 1 and m == [0.0] and K >= 2:
            bw = best_vs_worst([x[0] for x in f])
            assert (pairs[0][:2] if pairs else None) == bw


def test_item2_heron_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match="response 1 has 1 factors, expected 2"):
        heron_pairs([(0, 1), (1,)], margins=[0, 0])
    with pytest.raises(ValueError, match="margins must be finite numbers >= 0"):
        heron_pairs([(0, 1)], margins=[0, -1])
    with pytest.raises(ValueError, match="^heron_pairs response 0: score 0 must be a finite number"):
        heron_pairs([(float("inf"), 1.0)], margins=[0, 0])
    with pytest.raises(ValueError, match="max_pairs must be an integer >= 1"):
        heron_pairs([(0, 1)], margins=[0, 0], max_pairs=0)


def test_item2_scaled_margins_are_sigma_times_population_std():
    """Factor 0 values 0 1 1 0: pstdev 0.5; factor 1 values 2 4 6 8: pstdev √5."""
    f = [(0, 2), (1, 4), (1, 6), (0, 8)]
    got = scaled_margins(f, sigmas=[1.0, 0.5])
    assert got == pytest.approx([0.5, 0.5 * 5 ** 0.5])
    assert got[1] == pytest.approx(0.5 * statistics.pstdev([2, 4, 6, 8]))
    assert scaled_margins(f, sigmas=[0, 1]) == pytest.approx([0.0, 5 ** 0.5])  # σ = 0 is allowed: no margin
    with pytest.raises(ValueError, match="expected 2 \\(one per sigma\\)"):
        scaled_margins([(0,)], sigmas=[1, 1])
    with pytest.raises(ValueError, match="^scaled_margins needs at least one response$"):
        scaled_margins([], sigmas=[1])
    for bad in ([-1.0, 1.0], [float("inf"), 1.0]):
        with pytest.raises(ValueError, match=r"heron sigmas must be finite numbers >= 0, got \["):
            scaled_margins(f, sigmas=bad)


def test_item2_win_rates_average_both_orders_hand_values():
    """Three responses; the judge prefers the first-shown one by 0.2 (position bias) on top of a truth
    P(0≻1) = 0.8, P(0≻2) = 0.9, P(1≻2) = 0.6. Averaging both orders removes the bias:
    p_01 = ½[(0.8+0.1) + 1 − (0.2+0.1)] = 0.8; r_0 = (0.8 + 0.9)/2 = 0.85, r_1 = (0.2 + 0.6)/2 = 0.4,
    r_2 = (0.1 + 0.4)/2 = 0.25."""
    truth = {(0, 1): 0.8, (0, 2): 0.9, (1, 2): 0.6}

    def prefer(i, j):
        t = truth[(i, j)] if (i, j) in truth else 1.0 - truth[(j, i)]
        return t + 0.1 if t + 0.1 <= 1 else t  # first position favoured (never pushes past 1 here)

    assert win_rates(3, prefer) == pytest.approx([0.85, 0.4, 0.25])
    assert best_vs_worst(win_rates(3, prefer), margin=0.5) == (0, 2)
    assert win_rates(1, prefer) == [0.5]
    with pytest.raises(ValueError, match=r"gave 1.5 for responses \(0, 1\)"):
        win_rates(2, lambda i, j: 1.5)
    with pytest.raises(ValueError, match=r"gave True for responses \(0, 1\)"):
        win_rates(2, lambda i, j: True)
    for bad in (0, True):
        with pytest.raises(ValueError, match=f"^win_rates needs n >= 1 responses, got {bad}$"):
            win_rates(bad, prefer)


def test_item2_win_rates_of_a_strict_ranking():
    """A judge sure that the earlier response wins (P ∈ {0, 1}): r = 1, ½, 0 for three responses."""
    assert win_rates(3, lambda i, j: 1.0 if i < j else 0.0) == [1.0, 0.5, 0.0]
