"""Tests for the unbiased pass@k estimator (Chen et al. 2021) and its bootstrap band."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch

from entrolab.diagnostics.passk import (
    bootstrap_passk,
    default_ks,
    pass_at_k,
    pass_at_k_curve,
    pass_at_k_per_prompt,
)


def brute_force(n: int, c: int, k: int) -> Fraction:
    """Fraction of the k-subsets of n samples (the first c correct) that hold a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_equals_brute_force_enumeration(n):
    """Reference identity: the estimator is the exact probability that a uniformly drawn k-subset
    of the n samples contains a correct one, for every c and k (DESIGN.md §5.2)."""
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = float(brute_force(n, c, k))
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
            assert pass_at_k_per_prompt([n], [c], k)[0] == pytest.approx(exact, abs=1e-12)


def test_hand_values():
    """n=10, c=3, k=2: 1 − C(7,2)/C(10,2) = 1 − 21/45 = 24/45.
    n=5, c=1, k=1: 1/5 (pass@1 = c/n).  n=4, c=2, k=3: n−c=2 < 3 so every 3-subset hits: 1."""
    assert pass_at_k(10, 3, 2) == pytest.approx(24 / 45, abs=1e-15)
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2, abs=1e-15)
    assert pass_at_k(4, 2, 3) == 1.0


def test_not_the_biased_formula():
    """The biased 1 − (1 − c/n)^k gives 1 − 0.49 = 0.51 for n=10, c=3, k=2; the unbiased value is 24/45."""
    assert abs(pass_at_k(10, 3, 2) - 0.51) > 0.02


def test_edge_cases_c0_cn():
    for n in (1, 7, 64, 1000):
        for k in default_ks(n):
            assert pass_at_k(n, 0, k) == 0.0
            assert pass_at_k(n, n, k) == 1.0
    vals = pass_at_k_per_prompt(64, [0, 64], 8)
    assert vals.tolist() == [0.0, 1.0]
    assert not np.signbit(vals[0])  # a clean 0.0, not -0.0


def test_k_greater_than_n_raises():
    with pytest.raises(ValueError, match=r"k=8 > n=4"):
        pass_at_k(4, 1, 8)
    with pytest.raises(ValueError, match=r"k=8 > n=4"):
        pass_at_k_curve([8, 4], [1, 1], ks=[8])


@pytest.mark.parametrize("args", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 1, 0)])
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_vectorised_matches_scalar_large_n():
    """The cumulative-log form agrees with the direct product for large n and mixed n."""
    rng = np.random.default_rng(0)
    n_P = rng.choice([256, 1000, 1024], size=60)
    c_P = np.array([rng.integers(0, n + 1) for n in n_P])
    c_P[:3] = [0, 1, 2]
    for k in (1, 3, 16, 255, 256):
        vec = pass_at_k_per_prompt(n_P, c_P, k)
        ref = np.array([pass_at_k(n, c, k) for n, c in zip(n_P, c_P)])
        np.testing.assert_allclose(vec, ref, rtol=1e-10, atol=1e-13)


def test_curve_mean_over_prompts_and_inputs():
    """Two prompts with n=4, c=(1, 2): pass@1 = (1/4 + 2/4)/2 = 3/8;
    pass@2 = (1 − C(3,2)/C(4,2) + 1 − C(2,2)/C(4,2))/2 = (1/2 + 5/6)/2 = 2/3; pass@4 = 1."""
    for c in ([1, 2], np.array([1, 2]), torch.tensor([1, 2])):
        curve = pass_at_k_curve(4, c)
        assert list(curve) == [1, 2, 4]
        assert curve[1] == pytest.approx(3 / 8)
        assert curve[2] == pytest.approx(2 / 3)
        assert curve[4] == pytest.approx(1.0)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(10) == [1, 2, 4, 8, 10]
    with pytest.raises(ValueError):
        default_ks(0)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="one entry per prompt"):
        pass_at_k_curve([4, 4, 4], [1, 2])
    with pytest.raises(ValueError, match="prompt 1"):
        pass_at_k_curve(4, [1, 5])


def test_bootstrap_reproducible_and_contains_point():
    rng = np.random.default_rng(1)
    c_P = rng.integers(0, 17, size=40)
    ks = [1, 2, 4, 8, 16]
    a = bootstrap_passk(16, c_P, ks, n_boot=300, seed=7)
    b = bootstrap_passk(16, c_P, ks, n_boot=300, seed=7)
    c = bootstrap_passk(16, c_P, ks, n_boot=300, seed=8)
    assert a == b
    assert a != c
    point = pass_at_k_curve(16, c_P, ks)
    for k in ks:
        lo, hi = a[k]
        assert lo <= point[k] <= hi
        assert lo < hi  # prompts differ, so the band has width


def test_bootstrap_band_narrows_with_alpha():
    c_P = np.arange(0, 9)
    wide = bootstrap_passk(8, c_P, [1], alpha=0.01, n_boot=500)
    narrow = bootstrap_passk(8, c_P, [1], alpha=0.5, n_boot=500)
    assert wide[1][0] <= narrow[1][0] and narrow[1][1] <= wide[1][1]
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_passk(8, c_P, [1], alpha=1.5)
