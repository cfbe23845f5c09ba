"""SAFE: phase detector, reward PID, differentiable gated KL penalty."""

from __future__ import annotations

import pytest

import entrolab.objectives  # noqa: F401
from entrolab.objectives.safe import RewardPID, detect_phase
from entrolab.registry import REGULARIZERS


def test_detect_phase():
    assert detect_phase([0.5] * 49) == "warmup"
    assert detect_phase([0.1] * 50 + [0.3] * 50) == "climbing"
    assert detect_phase([0.8] * 100) == "converged"
    assert detect_phase([0.3] * 100) == "plateau"


def test_pid_hand():
    """First reward 1.0 initialises the EMA (u = 0). Then r = 0: ema 0.95, v = -0.05,
    e = -0.051, integral -0.051, u = 0.3e + 0.01(-0.051) + 0.05(e - 0) = -0.0183600."""
    pid = RewardPID()
    assert pid.update(1.0) == 0.0
    e = -0.05 - 0.001
    assert pid.update(0.0) == pytest.approx(0.3 * e + 0.01 * e + 0.05 * e)


def test_penalty_active_and_differentiable(make_inputs):
    """logp - ref = 10 on 2 tokens: k = 10, k_s' = 0.9*0 + 0.1*10 = 1.0; warmup threshold
    clip(0.3*1.5) = 0.45; H = 1 -> gate max(0.5, 2/1.1) = 1.818; P = 0.1*1.818*0.55^2 = 0.0550.
    dP/dlogp_t = 0.1*g*2*0.55*0.1*(1/2) per token (through the token mean)."""
    inp = make_inputs([[0.0, 0.0]], [0.0], ref_logp_BT=[[-10.0, -10.0]], entropy_BT=[[1.0, 1.0]])
    reg = REGULARIZERS.build("safe_kl")
    loss, m = reg(inp)
    gate = 2 / 1.1
    assert m["kl/safe_threshold"] == pytest.approx(0.45) and m["kl/safe_gate"] == pytest.approx(gate)
    assert m["kl/safe_penalty"] == pytest.approx(0.1 * gate * 0.55**2) and m["kl/safe_active"] == 1.0
    assert loss.tolist()[0] == pytest.approx([0.1 * gate * 0.55**2] * 2)
    loss[0, 0].backward()  # one token's copy of the penalty
    assert inp.logp_BT.grad.tolist()[0] == pytest.approx([0.1 * gate * 2 * 0.55 * 0.1 * 0.5] * 2)


def test_inactive_below_threshold_and_state(make_inputs):
    inp = make_inputs([[0.0, 0.0]], [0.0], ref_logp_BT=[[-0.1, -0.1]], rewards_B=[1.0])
    reg = REGULARIZERS.build("safe_kl")
    loss, m = reg(inp)
    assert m["kl/safe_active"] == 0.0 and loss.abs().sum().item() == 0.0
    reg.on_step_end({})
    assert reg.kl_smoothed == pytest.approx(0.01) and reg.rewards_history == [1.0]
    other = REGULARIZERS.build("safe_kl")
    other.load_state_dict(reg.state_dict())
    assert other.state_dict() == reg.state_dict()
