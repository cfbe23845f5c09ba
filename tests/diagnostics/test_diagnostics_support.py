"""Invisible-Leash support change, empirical-support threshold, solution coverage; pass@k curves,
bootstrap bands and the crossover k."""

import math

import pytest

from entrolab.diagnostics.curves import crossover_k, passk_curves
from entrolab.diagnostics.support import empirical_support_epsilon, solution_coverage, support_change, support_metrics


def test_epsilon_matches_the_paper_value():
    """k = 8192, ζ = 0.05: ε = 1 − 0.05^{1/8192} ≈ 3.66e-4 (quoted in the notes); ≈ ln(20)/k."""
    eps = empirical_support_epsilon(8192, zeta=0.05)
    assert eps == pytest.approx(3.6563e-4, rel=1e-3)
    assert (1 - eps) ** 8192 == pytest.approx(0.05)
    with pytest.raises(ValueError, match="k must be >= 1"):
        empirical_support_epsilon(0)


BASE = {"p1": {"a", "b"}, "p2": {"c"}, "p3": set(), "p4": set(), "p5": {"e"}}
TRAINED = {"p1": {"a", "x"}, "p2": set(), "p3": {"d", "f"}, "p4": set(), "p6": {"z"}}


def test_support_counts_on_a_constructed_example():
    """Common prompts p1..p4 (p5, p6 are each in one model only and are ignored).

    Answers: p1 a preserved, b shrunk, x expanded; p2 c shrunk; p3 d, f expanded -> P=1, E=3, S=2.
    SRR = 1/(1+2) = 1/3, NDR = 3/(1+3) = 3/4, SDS = 2·(1/3)(3/4)/(1/3 + 3/4) = 6/13,
    NSCR = (3 − 2)/6 = 1/6.
    Problems: p1 preserved, p2 shrunk, p3 expanded, p4 out of support (p4 has zero correct samples).
    """
    ans = support_change(BASE, TRAINED, level="answer")
    assert (ans.preserved, ans.expanded, ans.shrunk) == (1, 3, 2)
    assert (ans.srr, ans.ndr, ans.sds, ans.nscr) == pytest.approx((1 / 3, 3 / 4, 6 / 13, 1 / 6))
    prob = support_change(BASE, TRAINED, level="problem")
    assert (prob.preserved, prob.expanded, prob.shrunk, prob.out_of_support) == (1, 1, 1, 1)


def test_support_metrics_zero_denominators_are_null():
    """All prompts with zero correct samples: every ratio is undefined -> None in JSON."""
    m = support_metrics(0, 0, 0, 3)
    assert m.to_dict() == {"preserved": 0, "expanded": 0, "shrunk": 0, "out_of_support": 3,
                           "srr": None, "ndr": None, "sds": None, "nscr": None}
    assert support_metrics(2, 0, 1).sds == 0.0  # NDR = 0 -> harmonic mean 0


def test_support_needs_common_prompts():
    with pytest.raises(ValueError, match="share no prompt"):
        support_change({"a": set()}, {"b": set()})


def test_solution_coverage():
    """Solutions {s1, s2, s3, s4}; 10 samples: s1 ×6, s2 ×1, plus 'q' (correct but unlisted) ×1.

    coverage 2/4, mass s1 0.6, s2 0.1, others 0, mass on solutions 0.7, unlisted ['q'].
    """
    out = solution_coverage({"s1": 6, "s2": 1, "q": 1}, 10, ["s1", "s2", "s3", "s4"])
    assert out["coverage"] == 0.5 and out["found"] == 2 and out["num_solutions"] == 4
    assert out["mass"] == {"s1": 0.6, "s2": 0.1, "s3": 0.0, "s4": 0.0}
    assert out["mass_on_solutions"] == pytest.approx(0.7) and out["unlisted"] == ["q"]
    with pytest.raises(ValueError, match="sum to 11 > n = 10"):
        solution_coverage({"s1": 11}, 10, ["s1"])


def test_passk_curves_bands_reproducible_and_bracket_the_mean():
    counts = {"base": ([8] * 6, [0, 1, 2, 3, 8, 0]), "rl": ([8] * 6, [8, 8, 0, 0, 8, 6])}
    a = passk_curves(counts, n_boot=300, seed=7)
    b = passk_curves(counts, n_boot=300, seed=7)
    assert a == b
    assert a["base"]["ks"] == [1, 2, 4, 8]
    for c in a.values():
        assert all(lo <= m <= hi for lo, m, hi in zip(c["lo"], c["pass_at_k"], c["hi"]))
    # pass@1 is the mean of c/n: base (0+1+2+3+8+0)/48.
    assert a["base"]["pass_at_k"][0] == pytest.approx(14 / 48)
    assert passk_curves(counts, n_boot=300, seed=8) != a


def test_passk_curves_refuse_k_above_n():
    with pytest.raises(ValueError, match="k = 16 exceeds n = 8"):
        passk_curves({"m": ([8, 8], [1, 2])}, ks=[1, 16], n_boot=10)


def test_zero_correct_prompts_give_zero_passk():
    out = passk_curves({"m": ([4, 4], [0, 0])}, n_boot=20)
    assert out["m"]["pass_at_k"] == [0.0, 0.0, 0.0] and out["m"]["hi"] == [0.0, 0.0, 0.0]


def test_crossover_cases():
    """gap = trained − base = (0.2, 0.1, −0.1): crossing between k = 2 and 4 at log2 k = 1.5 -> 2^1.5."""
    out = crossover_k([1, 2, 4], [0.3, 0.5, 0.8], [0.5, 0.6, 0.7])
    assert out["status"] == "crosses" and out["k"] == 4
    assert out["k_interp"] == pytest.approx(2 ** 1.5)
    assert crossover_k([1, 2], [0.5, 0.6], [0.4, 0.9])["status"] == "trained_never_above"
    never = crossover_k([1, 2], [0.1, 0.2], [0.5, 0.6])
    assert never["status"] == "no_crossover" and never["gap_at_kmax"] == pytest.approx(0.4)
    meets = crossover_k([1, 2], [0.1, 1.0], [0.5, 1.0])  # both saturate: base only ties
    assert meets["status"] == "meets" and meets["k"] == 2 and math.isclose(meets["k_interp"], 2.0)
