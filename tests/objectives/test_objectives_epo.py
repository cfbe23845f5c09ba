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


def test_phase_weight_clamped_past_horizon_and_odd_horizon():
    """Upstream clamps e to [0, E] and splits at h = E // 2. E = 150: w(151) = w(1000) = w(150) =
    0.8 e^-3 (unclamped it would keep decaying: 0.8 e^(-3·76/75) at 151); w(-5) = w(0) = 1.
    E = 5: h = 2, w(2) = 1 - 0.2(1 - e^-2), w(3) = 0.8 e^(-3·1/3) = 0.8 e^-1, w(5) = 0.8 e^-3."""
    end = 0.8 * math.exp(-3)
    assert epo_phase_weight(151) == pytest.approx(end) and epo_phase_weight(1000) == pytest.approx(end)
    assert epo_phase_weight(-5) == 1.0
    assert epo_phase_weight(2, horizon=5) == pytest.approx(1 - 0.2 * (1 - math.exp(-2)))
    assert epo_phase_weight(3, horizon=5) == pytest.approx(0.8 * math.exp(-1))
    assert epo_phase_weight(5, horizon=5) == pytest.approx(end)


def test_item2_band_term_carries_entropy_coef(make_inputs):
    """The released loss is pg − β_H·(agg(H) − β_s·agg(P)), so the band term is β_H·β_s·w·λ·dist.
    β_H = 0.01, β_s = 2, λ = 0.1, phase off. Step 0 (no history): loss = -0.01·H = -0.01.
    After a step with mean entropy 1.0 the band is [0.5, 1.5]; H = [0.2, 1.0, 2.0] gives band
    distance [0.3, 0, 0.5] and band coefficient 0.01·2·0.1 = 0.002:
      loss = [-0.002 + 0.0006, -0.01, -0.02 + 0.001] = [-0.0014, -0.01, -0.019],
      dloss/dH = -0.01 + 0.002·[-1, 0, +1] = [-0.012, -0.01, -0.008].
    (Without β_H on the band — the old code — the coefficient was 0.2: loss [0.058, -0.01, 0.08].)"""
    reg = REGULARIZERS.build("epo", {"entropy_coef": 0.01, "smooth_coef": 2.0, "penalty": 0.1,
                                     "phase_weighting": False})
    inp = make_inputs([[0.0] * 3], [1.0], entropy_BT=[[1.0, 1.0, 1.0]])
    loss, m = reg(inp)
    assert loss.tolist()[0] == pytest.approx([-0.01] * 3) and m["entropy/epo_history_mean"] == 0.0
    reg.on_step_end({})
    inp = make_inputs([[0.0] * 3], [1.0], entropy_BT=[[0.2, 1.0, 2.0]])
    loss, m = reg(inp)
    assert loss.tolist()[0] == pytest.approx([-0.0014, -0.01, -0.019])
    loss.sum().backward()
    assert inp.entropy_BT.grad.tolist()[0] == pytest.approx([-0.012, -0.01, -0.008])
    assert m["entropy/epo_in_band_frac"] == pytest.approx(1 / 3)
    assert m["entropy/epo_history_mean"] == 1.0
    assert m["entropy/epo_penalty"] == pytest.approx(0.8 / 3)


def test_band_term_phase_weighted(make_inputs):
    """Phase weighting on, horizon 10, step 3 (h = 5): w = 1 - 0.2(1 - e^(-6/5)) = 0.86024.
    History 1.0 (band [0.5, 1.5]); H = [0.2, 2.0]: loss = -0.01·H + 0.01·1·0.1·w·[0.3, 0.5]."""
    reg = REGULARIZERS.build("epo", {"entropy_coef": 0.01, "penalty": 0.1, "phase_horizon": 10})
    reg(make_inputs([[0.0]], [1.0], entropy_BT=[[1.0]]))
    reg.on_step_end({})
    inp = make_inputs([[0.0] * 2], [1.0], entropy_BT=[[0.2, 2.0]])
    inp.step = 3
    loss, m = reg(inp)
    w = 1 - 0.2 * (1 - math.exp(-6 / 5))
    assert m["entropy/epo_phase_weight"] == pytest.approx(w)
    assert loss.tolist()[0] == pytest.approx([-0.002 + 0.001 * w * 0.3, -0.02 + 0.001 * w * 0.5])


def test_history_is_mean_of_step_means_and_restores(make_inputs):
    reg = REGULARIZERS.build("epo")
    for h in (1.0, 3.0):
        reg(make_inputs([[0.0] * 2], [0.0], entropy_BT=[[h, h]]))
        reg.on_step_end({})
    assert reg.history_mean == 2.0
    other = REGULARIZERS.build("epo")
    other.load_state_dict(reg.state_dict())
    assert other.history_mean == 2.0
