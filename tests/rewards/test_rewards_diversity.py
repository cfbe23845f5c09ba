"""Submodular coverage: marginal gains telescope, Shapley closed form = brute force, the group reward."""

import pytest
import torch

from entrolab.registry import REWARDS
from entrolab.rewards.diversity import brute_force_shapley, coverage, sequential_gains, shapley_gains

SETS = [frozenset({"a"}), frozenset({"a", "b"}), frozenset(), frozenset({"c", "a"}), frozenset({"b"})]


def test_sequential_gains_are_marginal_and_telescope():
    gains = sequential_gains(SETS)
    for i in range(len(SETS)):  # F(prefix ∪ {s}) − F(prefix), by definition
        assert gains[i] == coverage(SETS[: i + 1]) - coverage(SETS[:i])
    assert gains == [1.0, 1.0, 0.0, 1.0, 0.0] and sum(gains) == coverage(SETS)


def test_shapley_closed_form_matches_permutations():
    assert shapley_gains(SETS) == pytest.approx(brute_force_shapley(SETS))
    w = {"a": 2.0, "b": 0.5}
    assert sum(shapley_gains(SETS, w)) == pytest.approx(coverage(SETS, w))


def test_group_reward(make_batch):
    """Group 0 answers a✓, a✓, b✓, c✗: sequential [1, 0, 1, 0]; Shapley [.5, .5, 1, 0]. Group 1: a✓ alone → 1."""
    b = make_batch([1, 1, 1, 0, 1], [0, 0, 0, 0, 1], correct=[True, True, True, False, True],
                   answers=["a", "a", "b", "c", "a"])
    seq, m = REWARDS.build("diversity")(b, None)
    assert seq.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0] and m["reward/distinct_answers"] == 1.5
    sh, _ = REWARDS.build("diversity", {"credit": "shapley"})(b, None)
    assert sh.tolist() == [0.5, 0.5, 1.0, 0.0, 1.0]
    perm = torch.tensor([2, 3, 0, 1, 4])
    assert torch.equal(REWARDS.build("diversity", {"credit": "shapley"})(b.select(perm), None)[0], sh[perm])
    parsed, _ = REWARDS.build("diversity", {"correct_only": False})(b, None)
    assert parsed.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]
