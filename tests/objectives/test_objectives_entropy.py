"""Entropy bonus: fixed coefficient, adaptive controller steps, state save/restore."""

from __future__ import annotations

import pytest

import entrolab.objectives  # noqa: F401
from entrolab.registry import REGULARIZERS


def test_fixed_bonus_values_and_gradient(make_inputs):
    """coef 0.1, H = [2, 4, (pad)]: loss -0.1*H = [-0.2, -0.4, 0]; d/dH = -0.1 on valid tokens."""
    inp = make_inputs([[0.0, 0.0, 0.0]], [0.0], [[1, 1, 0]], entropy_BT=[[2.0, 4.0, 9.0]])
    reg = REGULARIZERS.build("entropy_bonus", {"coef": 0.1})
    loss, m = reg(inp)
    assert loss.tolist()[0] == pytest.approx([-0.2, -0.4, 0.0])
    loss.sum().backward()
    assert inp.entropy_BT.grad.tolist()[0] == pytest.approx([-0.1, -0.1, 0.0])
    assert m == {"entropy/coef": 0.1, "entropy/bonus_active": 1.0, "entropy/measured": 3.0}


def test_adaptive_controller(make_inputs):
    """target 1.0, coef 0.01, delta 0.005:
    step 0: no measurement yet -> no bonus; measured 0.5 <= 1 -> coef 0.015, bonus on.
    step 1: bonus 0.015 applied; measured (over two micro-batches) (2*1.2 + 2*1.6)/4 = 1.4 > 1
            -> coef 0.010 and bonus off.
    """
    reg = REGULARIZERS.build("entropy_bonus", {"coef": 0.01, "target": 1.0, "coef_delta": 0.005})
    loss, m = reg(make_inputs([[0.0, 0.0]], [0.0], entropy_BT=[[0.5, 0.5]]))
    assert m["entropy/coef"] == 0.0 and loss.abs().sum().item() == 0.0
    reg.on_step_end({})
    assert reg.coef == pytest.approx(0.015) and reg.active
    _, m = reg(make_inputs([[0.0, 0.0]], [0.0], entropy_BT=[[1.2, 1.2]]))
    assert m["entropy/coef"] == pytest.approx(0.015)
    reg(make_inputs([[0.0, 0.0]], [0.0], entropy_BT=[[1.6, 1.6]]))
    saved = reg.state_dict()
    reg.on_step_end({})
    assert reg.last_entropy == pytest.approx(1.4) and reg.coef == pytest.approx(0.01) and not reg.active
    # restoring the mid-step state replays the same update
    other = REGULARIZERS.build("entropy_bonus", {"coef": 0.5, "target": 1.0, "coef_delta": 0.005})
    other.load_state_dict(saved)
    other.on_step_end({})
    assert other.state_dict() == reg.state_dict()


def test_adaptive_coef_is_bounded(make_inputs):
    reg = REGULARIZERS.build("entropy_bonus", {"coef": 0.0, "target": 5.0, "coef_delta": 0.3, "coef_max": 0.5})
    for _ in range(4):
        reg(make_inputs([[0.0]], [0.0], entropy_BT=[[1.0]]))
        reg.on_step_end({})
    assert reg.coef == 0.5


def test_bad_bounds():
    from entrolab.registry import ConfigError

    with pytest.raises(ConfigError, match="coef_min"):
        REGULARIZERS.build("entropy_bonus", {"coef_min": 0.5, "coef_max": 0.1})
