"""EPO on multi-turn episodes: one historical entropy H̄_τ, and one band, per turn index."""

from __future__ import annotations

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.registry import REGULARIZERS

PARAMS = {"entropy_coef": 0.01, "smooth_coef": 1.0, "penalty": 0.1, "phase_weighting": False}


def first_step(reg, make_inputs):
    """Turn 0 tokens H = 1, 1; an observation token (turn −1, masked); turn 1 tokens H = 2, 2.
    No history yet: loss = −0.01·H. After it: H̄_0 = 1, H̄_1 = 2 (overall H̄ = 1.5)."""
    inp = make_inputs([[0.0] * 5], [1.0], [[1, 1, 0, 1, 1]], entropy_BT=[[1.0, 1.0, 7.0, 2.0, 2.0]],
                      turn_id_BT=torch.tensor([[0, 0, -1, 1, 1]]))
    loss, _ = reg(inp)
    assert loss.tolist()[0] == pytest.approx([-0.01, -0.01, 0.0, -0.02, -0.02])
    reg.on_step_end({})


def test_per_turn_band_hand_values(make_inputs):
    """Step 2, turn ids [0, 1, 2, −1] with H = [0.2, 3.5, 5, ·]. Bands: τ0 [0.5, 1.5] → distance 0.3;
    τ1 [1, 3] → 0.5; τ2 has no history → no band. Band coefficient 0.01·1·0.1 = 0.001:
      loss = [−0.002 + 0.0003, −0.035 + 0.0005, −0.05, 0] = [−0.0017, −0.0345, −0.05, 0],
      dloss/dH = [−0.01 − 0.001, −0.01 + 0.001, −0.01, 0].
    (One overall H̄ = 1.5 — the single-turn rule — gives the band [0.75, 2.25] and distances
    [0.55, 1.25, 2.75] instead.)"""
    reg = REGULARIZERS.build("epo", PARAMS)
    first_step(reg, make_inputs)
    assert reg.turn_hist_sum == [1.0, 2.0] and reg.turn_hist_count == [1, 1] and reg.history_mean == 1.5
    inp = make_inputs([[0.0] * 4], [1.0], [[1, 1, 1, 0]], entropy_BT=[[0.2, 3.5, 5.0, 0.0]],
                      turn_id_BT=torch.tensor([[0, 1, 2, -1]]))
    loss, m = reg(inp)
    assert loss.tolist()[0] == pytest.approx([-0.0017, -0.0345, -0.05, 0.0])
    loss.sum().backward()
    assert inp.entropy_BT.grad.tolist()[0] == pytest.approx([-0.011, -0.009, -0.01, 0.0])
    assert m["entropy/epo_in_band_frac"] == 0.0 and m["entropy/epo_penalty"] == pytest.approx(0.4)
    reg.on_step_end({})  # turn 2 gets its first history entry; turns 0/1 their second
    assert reg.turn_hist_count == [2, 2, 1] and reg.turn_hist_sum == pytest.approx([1.2, 5.5, 5.0])


def test_turn_history_skips_turns_a_step_lacks(make_inputs):
    """A step whose episodes have only turn 0 adds to H̄_0 only (no zero padding for turn 1):
    H̄_0 = (1 + 3)/2 = 2, H̄_1 stays 2."""
    reg = REGULARIZERS.build("epo", PARAMS)
    first_step(reg, make_inputs)
    reg(make_inputs([[0.0] * 2], [1.0], entropy_BT=[[3.0, 3.0]], turn_id_BT=torch.tensor([[0, 0]])))
    reg.on_step_end({})
    assert reg.turn_hist_count == [2, 1] and reg.turn_hist_sum == pytest.approx([4.0, 2.0])


def test_all_turn_zero_equals_single_turn(make_inputs):
    """Reference identity: with every token in turn 0, H̄_0 is the overall H̄, so the loss equals the
    single-turn one (the batch without turn_id_BT) bit for bit."""
    a, b = REGULARIZERS.build("epo", PARAMS), REGULARIZERS.build("epo", PARAMS)
    zeros = torch.zeros(1, 3, dtype=torch.long)
    for ent in ([[1.0, 1.2, 0.8]], [[0.2, 1.0, 2.0]]):
        la, ma = a(make_inputs([[0.0] * 3], [1.0], entropy_BT=ent))
        lb, mb = b(make_inputs([[0.0] * 3], [1.0], entropy_BT=ent, turn_id_BT=zeros))
        assert torch.equal(la, lb) and ma == mb
        a.on_step_end({})
        b.on_step_end({})


def test_turn_state_restores(make_inputs):
    reg = REGULARIZERS.build("epo", PARAMS)
    first_step(reg, make_inputs)
    other = REGULARIZERS.build("epo", PARAMS)
    other.load_state_dict(reg.state_dict())
    inp = dict(entropy_BT=[[0.2, 3.5]], turn_id_BT=torch.tensor([[0, 1]]))
    assert torch.equal(reg(make_inputs([[0.0] * 2], [1.0], **inp))[0], other(make_inputs([[0.0] * 2], [1.0], **inp))[0])
    old_format = {k: v for k, v in reg.state_dict().items() if not k.startswith("turn")}
    REGULARIZERS.build("epo", PARAMS).load_state_dict(old_format)  # checkpoints from before per-turn histories


def test_per_turn_history_over_micro_batches_and_steps(make_inputs):
    """β_H .01, β_s 2, λ .1, κ = (.4, 1.5), phase weights on (E = 10). Step 0 in two micro-batches:
    turn ids [0, 1] with H [1, 2], then [0, −1] with H [3, ·] → H̄_0 = (1 + 3)/2 = 2, H̄_1 = 2. Step 1:
    H = [4, 4] → H̄_0 = H̄_1 = (2 + 4)/2 = 3. Step 3 (w = 1 − .2(1 − e^(−6/5))): turn 0 H = 1 is .2 below
    .4·3, turn 1 H = 5 is .5 above 1.5·3: loss = −.01·H + .01·2·.1·w·[.2, .5]. A state saved mid-step
    (before on_step_end) restores the step's partial per-turn sums too."""
    import math

    reg = REGULARIZERS.build("epo", {"entropy_coef": 0.01, "smooth_coef": 2.0, "penalty": 0.1, "kappa_low": 0.4,
                                     "kappa_high": 1.5, "phase_horizon": 10})
    reg(make_inputs([[0.0] * 2], [1.0], entropy_BT=[[1.0, 2.0]], turn_id_BT=torch.tensor([[0, 1]])))
    reg(make_inputs([[0.0] * 2], [1.0], [[1, 0]], entropy_BT=[[3.0, 9.0]], turn_id_BT=torch.tensor([[0, -1]])))
    reg.on_step_end({})
    assert reg.turn_hist_sum == [2.0, 2.0] and reg.turn_hist_count == [1, 1]
    reg(make_inputs([[0.0] * 2], [1.0], entropy_BT=[[4.0, 4.0]], turn_id_BT=torch.tensor([[0, 1]])))
    reg.on_step_end({})
    inp = make_inputs([[0.0] * 2], [1.0], entropy_BT=[[1.0, 5.0]], turn_id_BT=torch.tensor([[0, 1]]))
    inp.step = 3
    loss, _ = reg(inp)
    w = 1 - 0.2 * (1 - math.exp(-6 / 5))
    assert loss.tolist()[0] == pytest.approx([-0.01 + 0.002 * w * 0.2, -0.05 + 0.002 * w * 0.5])
    other = REGULARIZERS.build("epo")
    other.load_state_dict(reg.state_dict())
    for r in (reg, other):
        r.on_step_end({})
    assert other.state_dict() == reg.state_dict() and reg.turn_hist_sum == pytest.approx([7.0, 11.0])
