"""EPO: phase weights, the differentiable band penalty, history state."""

from __future__ import annotations

import math

import pytest

import entrolab.objectives  # noqa: F401
from entrolab.objectives.epo import epo_phase_weight
from entrolab.registry import REGULARIZERS


def test_phase_weight_values():
    """E = 150: w(0) = 1; w(75) = 1 - 0.2(1 - e^-2) = 0.8271; w(76) = 0.8 e^(-3/75); w(150) = 0.8 e^-3."""
    assert epo_phase_weight(0) == 1.0
    assert epo_phase_weight(75) == pytest.approx(1 - 0.2 * (1 - math.exp(-2)))
    assert epo_phase_weight(76) == pytest.approx(0.8 * math.exp(-3 / 75))
    assert epo_phase_weight(150) == pytest.approx(0.8 * math.exp(-3))
    assert epo_phase_weight(10, horizon=20) == pytest.approx(1 - 0.2 * (1 - math.exp(-2)))


def test_bonus_only_before_history_then_band(make_inputs):
    """Step 0 (no history): loss = -0.01*H. After a step with mean entropy 1.0, band [0.5, 1.5]:
    H = [0.2, 1.0, 2.0] -> band distance [0.3, 0, 0.5]; with smooth 1, lambda 0.1, phase off:
    loss = -0.01 H + 0.1 * dist = [0.028, -0.01, 0.03]; gradient -0.01 + 0.1 * [-1, 0, +1]."""
    reg = REGULARIZERS.build("epo", {"entropy_coef": 0.01, "penalty": 0.1, "phase_weighting": False})
    inp = make_inputs([[0.0] * 3], [1.0], entropy_BT=[[1.0, 1.0, 1.0]])
    loss, m = reg(inp)
    assert loss.tolist()[0] == pytest.approx([-0.01] * 3) and m["entropy/epo_history_mean"] == 0.0
    reg.on_step_end({})
    inp = make_inputs([[0.0] * 3], [1.0], entropy_BT=[[0.2, 1.0, 2.0]])
    loss, m = reg(inp)
    assert loss.tolist()[0] == pytest.approx([-0.002 + 0.03, -0.01, -0.02 + 0.05])
    loss.sum().backward()
    assert inp.entropy_BT.grad.tolist()[0] == pytest.approx([-0.11, -0.01, 0.09])
    assert m["entropy/epo_in_band_frac"] == pytest.approx(1 / 3)
    assert m["entropy/epo_history_mean"] == 1.0


def test_history_is_mean_of_step_means_and_restores(make_inputs):
    reg = REGULARIZERS.build("epo")
    for h in (1.0, 3.0):
        reg(make_inputs([[0.0] * 2], [0.0], entropy_BT=[[h, h]]))
        reg.on_step_end({})
    assert reg.history_mean == 2.0
    other = REGULARIZERS.build("epo")
    other.load_state_dict(reg.state_dict())
    assert other.history_mean == 2.0
