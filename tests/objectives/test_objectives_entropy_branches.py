"""Entropy bonus branches a mutation run found unchecked (docs/quality.md): defaults, the adaptive
controller's bounds and tie, the step accumulator, validation messages, state with no entropy yet."""

from __future__ import annotations

import pytest

import entrolab.objectives  # noqa: F401
from entrolab.objectives.entropy import adaptive_coef_update
from entrolab.registry import REGULARIZERS


def test_adaptive_update_tie_and_default_bounds():
    """Entropy exactly at the target raises c (≤); the default bounds are [0, 1]."""
    assert adaptive_coef_update(0.5, 1.0, target=1.0, delta=0.1) == pytest.approx(0.6)
    assert adaptive_coef_update(0.95, 0.0, target=1.0, delta=0.1) == 1.0
    assert adaptive_coef_update(0.05, 2.0, target=1.0, delta=0.1) == 0.0


def test_entropy_bonus_defaults_and_adaptive_bounds(make_inputs):
    """Default c = 0.001: loss −0.001·H per token. Adaptive, target 0.5, one step at H = 2 (above target):
    c = max(coef_min, 0.3 − 0.5) = coef_min = 0.2, with the accumulator starting empty
    (measured entropy exactly 2, not biased by a stale sum or count); a second step at H = 0 (below):
    c = min(coef_max, 0.2 + 0.5) = coef_max = 0.6; default Δ = 0.005 otherwise."""
    inp = make_inputs([[0.0, 0.0]], [1.0], entropy_BT=[[2.0, 2.0]])
    loss, m = REGULARIZERS.build("entropy_bonus")(inp)
    assert loss.tolist()[0] == pytest.approx([-0.002, -0.002]) and m["entropy/coef"] == 0.001
    reg = REGULARIZERS.build("entropy_bonus", {"coef": 0.3, "target": 0.5, "coef_delta": 0.5,
                                               "coef_min": 0.2, "coef_max": 0.6})
    reg(inp)
    reg.on_step_end()
    assert reg.last_entropy == 2.0 and reg.coef == pytest.approx(0.2)
    reg(make_inputs([[0.0, 0.0]], [1.0], entropy_BT=[[0.0, 0.0]]))
    reg.on_step_end()
    assert reg.coef == pytest.approx(0.6)
    d = REGULARIZERS.build("entropy_bonus", {"coef": 0.5, "target": 1.0})
    d(inp)
    d.on_step_end()
    assert d.coef == pytest.approx(0.495)
    e = REGULARIZERS.build("entropy_bonus", {"coef": 0.9995, "target": 1.0})  # default coef_max 1
    e(make_inputs([[0.0]], [1.0], entropy_BT=[[0.0]]))
    e.on_step_end()
    assert e.coef == 1.0


def test_entropy_bonus_validation_and_state():
    REGULARIZERS.build("entropy_bonus", {"coef": 0.0, "coef_delta": 0.0, "target": 0.0,
                                         "coef_min": 0.3, "coef_max": 0.3})
    for key in ("coef", "coef_delta", "target"):
        with pytest.raises(ValueError, match=f": {key} must be >= 0, got -1"):
            REGULARIZERS.build("entropy_bonus", {key: -1.0})
    reg = REGULARIZERS.build("entropy_bonus", {"target": 1.0})
    reg.load_state_dict({"coef": 0.2, "last_entropy": None, "sum": 0.0, "count": 0})
    assert reg.last_entropy is None and not reg.active
    reg.load_state_dict({"coef": 0.2, "last_entropy": float("nan"), "sum": 0.0, "count": 0})
    assert reg.last_entropy is None
    reg.load_state_dict({"coef": 0.2, "last_entropy": 0.5, "sum": 0.0, "count": 0})
    assert reg.last_entropy == 0.5 and reg.active


def test_entropy_bonus_all_padding_measures_zero(make_inputs):
    _, m = REGULARIZERS.build("entropy_bonus")(make_inputs([[0.0]], [1.0], [[0]], entropy_BT=[[3.0]]))
    assert m["entropy/measured"] == 0.0
