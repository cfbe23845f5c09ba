"""Paired bootstrap and per-prompt outcomes (entrolab.studies.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from entrolab.diagnostics.support import support_change
from entrolab.evaluation import summarize
from entrolab.studies.stats import PairedDiff, paired_bootstrap, per_prompt


def _naive_replicates(d, n_boot, seed):
    """The two-way bootstrap written out: draw seeds, draw prompts, average the drawn cells."""
    rng = np.random.default_rng(seed)
    S, P = d.shape
    seeds = rng.integers(0, S, size=(n_boot, S))
    prompts = rng.integers(0, P, size=(n_boot, P))
    return np.array([d[np.ix_(seeds[b], prompts[b])].mean() for b in range(n_boot)])


def test_bootstrap_replicates_equal_explicit_resampling():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 7)), rng.normal(size=(4, 7))
    reps = _naive_replicates(x - y, 500, seed=11)
    got = paired_bootstrap(x, y, n_boot=500, seed=11)
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert got.diff == pytest.approx((x - y).mean(), abs=1e-12)
    assert (got.lo, got.hi) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert (got.seeds, got.prompts) == (4, 7)


def test_constant_difference_has_a_degenerate_interval():
    y = np.arange(12.0).reshape(3, 4)
    d = paired_bootstrap(y + 0.25, y)
    assert (d.diff, d.lo, d.hi) == (pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.25))
    assert d.excludes_zero


def test_pairing_removes_shared_variation():
    """Large seed/prompt effects shared by both methods cancel in the paired difference."""
    rng = np.random.default_rng(0)
    shared = 10 * rng.normal(size=(5, 64))
    noise = 0.01 * rng.normal(size=(5, 64))
    d = paired_bootstrap(shared + 0.1 + noise, shared)
    assert d.excludes_zero and d.lo > 0.09 and d.hi < 0.11


def test_interval_covers_zero_for_a_zero_mean_difference():
    """d = ±1 alternating over prompts, identical over seeds: mean 0, interval straddles 0."""
    d = np.tile(np.array([1.0, -1.0] * 16), (3, 1))
    out = paired_bootstrap(d, np.zeros_like(d))
    assert out.diff == 0 and out.lo < 0 < out.hi and not out.excludes_zero


def test_scale_turns_a_mean_into_a_total():
    x = np.array([[1.0, 0.0, 2.0]])
    out = paired_bootstrap(x, np.zeros_like(x), scale=3.0)
    assert out.diff == pytest.approx(3.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap(np.zeros((2, 3)), np.zeros((3, 2)))


def test_excludes_zero_boundaries():
    assert PairedDiff(0.1, 0.01, 0.2, 1, 1).excludes_zero
    assert PairedDiff(-0.1, -0.2, -0.01, 1, 1).excludes_zero
    assert not PairedDiff(0.1, 0.0, 0.2, 1, 1).excludes_zero


def _rec(pid, n, answers, correct_answers):
    return {"id": pid, "text": "", "n": n, "correct": sum(correct_answers.values()), "answers": answers,
            "correct_answers": correct_answers, "solutions": None, "token_entropy": None, "len_mean": 1.0,
            "greedy": None}


def test_per_prompt_values_average_to_the_eval_summary():
    """Means over prompts of the per-prompt values are the summary numbers the pages also show."""
    prompts = [_rec("b", 4, {"1+2": 3, "<none>": 1}, {"1+2": 3}),
               _rec("a", 4, {"x": 2, "y": 1, "z": 1}, {"x": 2, "y": 1}),
               _rec("c", 4, {"w": 4}, {})]
    result = {"prompts": prompts}
    base = {"prompts": [_rec("a", 4, {"x": 1, "q": 3}, {"x": 1, "q": 3}), _rec("b", 4, {"v": 4}, {}),
                        _rec("c", 4, {"w": 4}, {})]}
    pp = per_prompt(result, base)
    s = summarize(prompts, ks=[1, 4])
    assert pp["pass@1"].mean() == pytest.approx(s["pass@1"])
    assert pp["pass@kmax"].mean() == pytest.approx(s["pass@4"])
    assert pp["answer_entropy"].mean() == pytest.approx(s["answer_entropy"])
    assert pp["distinct_correct"].mean() == pytest.approx(s["distinct_correct_mean"])
    # prompts sorted by id: a, b, c. a: trained {x, y} vs base {x, q}: expanded y, shrunk q.
    assert pp["expanded"].tolist() == [1.0, 1.0, 0.0] and pp["shrunk"].tolist() == [1.0, 0.0, 0.0]
    ch = support_change({"a": {"x", "q"}, "b": set(), "c": set()}, {"a": {"x", "y"}, "b": {"1+2"}, "c": set()})
    assert (ch.expanded, ch.shrunk) == (pp["expanded"].sum(), pp["shrunk"].sum())


def test_per_prompt_refuses_different_prompt_sets():
    with pytest.raises(ValueError, match="different prompts"):
        per_prompt({"prompts": [_rec("a", 2, {"x": 2}, {})]}, {"prompts": [_rec("b", 2, {"x": 2}, {})]})
