"""EMPG on multi-turn episodes: the steps are the agent's turns (extras["turn_id_BT"])."""

from __future__ import annotations

import pytest
import torch

from entrolab.advantages.empg import empg_step_advantages, turn_step_ranges
from entrolab.registry import ADVANTAGES


def test_turn_step_ranges():
    """Turn ids [0, 0, −1, −1, 1, 2, 2, −1]: turns at 0:2, 4:5, 5:7; a row with no model token has none."""
    assert turn_step_ranges(torch.tensor([0, 0, -1, -1, 1, 2, 2, -1])) == [range(0, 2), range(4, 5), range(5, 7)]
    assert turn_step_ranges(torch.tensor([-1, -1])) == []
    with pytest.raises(ValueError, match="turn 0 of row 3 is not contiguous"):
        turn_step_ranges(torch.tensor([0, -1, 0]), row=3)


def test_steps_are_turns_hand_values(make_batch):
    """Row 0: turn 0 = tokens 0-1 (H .2, .4 → .3), observation token 2, turn 1 = token 3 (H 1.0);
    row 1: turn 0 = tokens 0-2 (H .5 each). Rewards [1, 0] in one group: GRPO A = ±.5/(std + eps)
    with the unbiased std √.5. The step values are empg_step_advantages(A, [[.3, 1], [.5]]) broadcast to each
    turn's tokens; the observation token gets 0. The text has a delimiter and a marker inside
    turn 0 of row 0: they do not split it (turns define the steps)."""
    ent = torch.tensor([[0.2, 0.4, 9.0, 1.0], [0.5, 0.5, 0.5, 0.0]])
    b = make_batch([1.0, 0.0], [0, 0], lengths=[4, 3], T=4, texts=["a,#b", "abc"], entropy_BT=ent)
    b.mask_BT[0, 2] = False  # the observation token: not the model's
    b.extras["turn_id_BT"] = torch.tensor([[0, 0, -1, 1], [0, 0, 0, -1]])
    adv_BT, m = ADVANTAGES.build("empg", {"marker": "#"})(b)
    a = 0.5 / (2 ** -0.5 + 1e-6)
    s0, s1 = empg_step_advantages(torch.tensor([a, -a]), [torch.tensor([0.3, 1.0]), torch.tensor([0.5])])
    expect = torch.tensor([[s0[0], s0[0], 0.0, s0[1]], [s1[0], s1[0], s1[0], 0.0]], dtype=torch.float32)
    assert torch.allclose(adv_BT, expect, atol=1e-6)
    assert m["empg/steps_mean"] == 1.5 and m["empg/approx_split_frac"] == 0.0


def test_turns_matching_the_single_turn_split_give_identical_advantages(make_batch):
    """Reference identity: when each turn is exactly one delimiter step ('ab,' | 'cd' + EOS), the
    turn-based advantages equal the single-turn ones bit for bit (and without turn_id_BT the
    single-turn path is what runs). Char-level: 5 characters + EOS."""
    gen = torch.Generator().manual_seed(0)
    ent = torch.rand(2, 6, generator=gen)
    b = make_batch([1.0, 0.0], [0, 0], lengths=[6, 6], T=6, texts=["ab,cd", "xy,zw"], entropy_BT=ent)
    single, _ = ADVANTAGES.build("empg", {"marker": "#", "delimiters": ","})(b)
    steps_single = 2  # 'ab,' | 'cd' + EOS
    b.extras["turn_id_BT"] = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    turns, m = ADVANTAGES.build("empg", {"marker": "#", "delimiters": ","})(b)
    assert m["empg/steps_mean"] == steps_single
    assert torch.equal(turns, single)


def test_non_contiguous_turn_names_the_row(make_batch):
    b = make_batch([1.0, 0.0], [0, 0], T=3)
    b.extras["turn_id_BT"] = torch.tensor([[0, 0, 1], [0, -1, 0]])
    with pytest.raises(ValueError, match="turn 0 of row 1 is not contiguous"):
        ADVANTAGES.build("empg")(b)
