"""SPEAR's auxiliary tool-call reward: the cosine curriculum at its stage boundaries and the capped bonus."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.registry import REWARDS
from entrolab.rewards.tool_call import tool_call_bonus, tool_reward_weight


def test_tool_reward_weight_stage_boundaries():
    """T = 200: λ = (1 + cos(πt/T))/2 is 1 at t = 0, (1 + √2/2)/2 at t = 50, 0.5 at t = 100, 0 at
    t = 200 and after; constant 1, none 0; T = 0 means no tool stage at all."""
    assert tool_reward_weight(0) == 1.0
    assert tool_reward_weight(50) == pytest.approx((1 + math.sqrt(2) / 2) / 2)
    assert tool_reward_weight(100) == pytest.approx(0.5)
    assert tool_reward_weight(200) == 0.0 and tool_reward_weight(10_000) == 0.0
    assert tool_reward_weight(5, decay_steps=10) == pytest.approx(0.5)
    assert tool_reward_weight(0, decay_steps=0) == 0.0
    assert tool_reward_weight(500, schedule="constant") == 1.0 and tool_reward_weight(0, schedule="none") == 0.0
    with pytest.raises(ValueError, match="schedule"):
        tool_reward_weight(0, schedule="linear")


def test_tool_call_bonus_is_capped():
    """min(cap, 0.1·n): n = 0, 3, 10, 25 → 0, 0.3, 1, 1; cap 0.5 → 0.5 for n = 10."""
    assert tool_call_bonus(torch.tensor([0, 3, 10, 25])).tolist() == pytest.approx([0.0, 0.3, 1.0, 1.0])
    assert tool_call_bonus(torch.tensor([10]), cap=0.5).tolist() == [0.5]


def test_term_reads_tool_calls_and_step(make_batch):
    """Step 100 of T = 200 (λ = 0.5): n = [0, 2, 20] → 0.5·[0, 0.2, 1] = [0, 0.1, 0.5]."""
    b = make_batch([0.0, 1.0, 1.0])
    b.extras["tool_calls_B"] = torch.tensor([0, 2, 20])
    b.step = 100
    vals, m = REWARDS.build("tool_call", {})(b, None)
    assert vals.tolist() == pytest.approx([0.0, 0.1, 0.5])
    assert m == {"reward/tool_call_weight": pytest.approx(0.5), "reward/tool_calls_mean": pytest.approx(22 / 3)}


def test_missing_or_misshapen_tool_calls_is_a_clear_error(make_batch):
    b = make_batch([0.0, 1.0])
    r = REWARDS.build("tool_call", {})
    with pytest.raises(ValueError, match="tool_calls_B"):
        r(b, None)
    b.extras["tool_calls_B"] = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        r(b, None)
    with pytest.raises(ValueError, match="per_call"):
        REWARDS.build("tool_call", {"per_call": -1.0})


def test_term_parameters_reach_the_math(make_batch):
    """per_call .25, cap .6, T = 10 at step 5 (λ = .5): n = [1, 2, 3] → .5·[.25, .5, .6]; schedule
    constant: λ = 1 at any step; T = 1 at step 0 is still the full weight. An empty batch logs 0."""
    b = make_batch([0.0, 1.0, 1.0])
    b.extras["tool_calls_B"] = torch.tensor([1, 2, 3])
    b.step = 5
    vals, m = REWARDS.build("tool_call", {"per_call": 0.25, "cap": 0.6, "decay_steps": 10})(b, None)
    assert vals.tolist() == pytest.approx([0.125, 0.25, 0.3]) and m["reward/tool_call_weight"] == 0.5
    vals, _ = REWARDS.build("tool_call", {"schedule": "constant"})(b, None)
    assert vals.tolist() == pytest.approx([0.1, 0.2, 0.3])
    b.step = 0
    assert REWARDS.build("tool_call", {"decay_steps": 1})(b, None)[1]["reward/tool_call_weight"] == 1.0
    empty = b.select(torch.tensor([], dtype=torch.long))
    vals, m = REWARDS.build("tool_call", {})(empty, None)
    assert vals.numel() == 0 and m["reward/tool_calls_mean"] == 0.0
    REWARDS.build("tool_call", {"per_call": 0.0, "cap": 0.0})  # zero is allowed
    assert REWARDS.build("tool_call", {"schedule": "none"})(b, None)[0].tolist() == [0.0, 0.0, 0.0]
    for bad in ({"cap": -0.5}, {"per_call": -0.5}):
        with pytest.raises(ValueError, match="must be >= 0"):
            REWARDS.build("tool_call", bad)
