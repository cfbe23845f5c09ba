"""SAFE: phase detector, reward PID, phase thresholds, differentiable gated KL penalty."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.safe import RewardPID, detect_phase, kl_k1_with_k2_gradient
from entrolab.registry import REGULARIZERS
from entrolab.types import PolicyInputs


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
    """logp - ref = 10 on 2 tokens: k (k1 value) = 10, k_s' = 0.9*0 + 0.1*10 = 1.0; warmup
    threshold clip(0.3*1.5) = 0.45; H = 1 -> gate max(0.5, 2/1.1) = 1.818; P = 0.1*1.818*0.55^2.
    P is one 0-dim loss. Its gradient goes through the k2 mean ½·mean(δ²): d/dlogp_t = δ_t/2 = 5,
    so dP/dlogp_t = 0.1*g*2*0.55*0.1*5 per token."""
    inp = make_inputs([[0.0, 0.0]], [0.0], ref_logp_BT=[[-10.0, -10.0]], entropy_BT=[[1.0, 1.0]])
    reg = REGULARIZERS.build("safe_kl")
    loss, m = reg(inp)
    gate = 2 / 1.1
    assert m["kl/safe_threshold"] == pytest.approx(0.45) and m["kl/safe_gate"] == pytest.approx(gate)
    assert m["kl/safe_smoothed"] == pytest.approx(1.0)
    assert m["kl/safe_penalty"] == pytest.approx(0.1 * gate * 0.55**2) and m["kl/safe_active"] == 1.0
    assert loss.dim() == 0 and loss.item() == pytest.approx(0.1 * gate * 0.55**2)
    loss.backward()
    assert inp.logp_BT.grad.tolist()[0] == pytest.approx([0.1 * gate * 2 * 0.55 * 0.1 * 5.0] * 2)


def _six_way(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_(True)
    z_ref = torch.randn(6, generator=g, dtype=torch.float64)
    return z, torch.log_softmax(z_ref, -1)


def _exact_kl(z, ref_logp_V):
    logp_V = torch.log_softmax(z, -1)
    return (logp_V.exp() * (logp_V - ref_logp_V)).sum()


def test_item1_estimator_expected_gradient_is_exact_kl_gradient():
    """A 6-way policy π = softmax(z) and reference π_ref. Enumerating the 6 outcomes o, weighted
    by π(o) (no sampling): Σ_o π(o)·∇_z est(o) must equal ∇_z KL(π ‖ π_ref) by autograd, and
    Σ_o π(o)·est(o) must equal KL (the value is k1, unbiased). The k1 mean the old code
    differentiated has Σ_o π(o)·∇_z δ(o) = Σ_o ∇π(o) = 0: no pull toward π_ref."""
    z, ref_logp_V = _six_way()
    exact_grad = torch.autograd.grad(_exact_kl(z, ref_logp_V), z)[0]
    mask = torch.ones(1, 1, dtype=torch.bool)
    pi = torch.softmax(z, -1).detach()
    grad, value, k1_grad = torch.zeros(6, dtype=torch.float64), 0.0, torch.zeros(6, dtype=torch.float64)
    for o in range(6):
        logp = torch.log_softmax(z, -1)[o].reshape(1, 1)
        est = kl_k1_with_k2_gradient(logp, ref_logp_V[o].reshape(1, 1), mask)
        grad += pi[o] * torch.autograd.grad(est, z)[0]
        value += float(pi[o]) * est.item()
        k1_grad += pi[o] * torch.autograd.grad(torch.log_softmax(z, -1)[o] - ref_logp_V[o], z)[0]
    torch.testing.assert_close(grad, exact_grad, rtol=1e-12, atol=1e-12)
    assert value == pytest.approx(_exact_kl(z, ref_logp_V).item(), rel=1e-12)
    assert exact_grad.abs().max() > 0.05 and k1_grad.abs().max() < 1e-12


def test_item1_penalty_gradient_is_exact_kl_gradient():
    """The whole regularizer on a batch whose tokens are *exactly* distributed as π: one context
    with π = [.4, .2, .1, .1, .1, .1] and 10 tokens with counts [4, 2, 1, 1, 1, 1], reference
    π_ref = [.05, .15, .2, .2, .2, .2]. Then the k1 mean is KL(π ‖ π_ref) =
    .4 ln 8 + .2 ln(4/3) + 4(.1 ln .5) = 0.61198 and the batch's gradient is its expectation. With
    kl_ema = 0 (k_s' = k), warmup τ = 0.45, gate g = max(.5, 2/(H + .1)) with H = H(π):
    ∇_z P = 0.1·g·2·(KL − 0.45)·∇_z KL(π ‖ π_ref). (Old code: the k1 gradient, exactly 0 here.)"""
    pi = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.1, 0.1], dtype=torch.float64)
    ref = torch.tensor([0.05, 0.15, 0.2, 0.2, 0.2, 0.2], dtype=torch.float64)
    z = pi.log().clone().requires_grad_(True)
    ids = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 3, 4, 5]])
    logp_V = torch.log_softmax(z, -1)
    ent = -(logp_V.exp() * logp_V).sum()
    inp = PolicyInputs(
        logp_BT=logp_V[ids], old_logp_BT=logp_V[ids].detach(), adv_BT=torch.zeros(1, 10, dtype=torch.float64),
        mask_BT=torch.ones(1, 10, dtype=torch.bool), entropy_BT=ent.expand(1, 10),
        rewards_B=torch.zeros(1), group_id_B=torch.zeros(1, dtype=torch.long), ref_logp_BT=ref.log()[ids])
    reg = REGULARIZERS.build("safe_kl", {"kl_ema": 0.0})
    loss, m = reg(inp)
    kl = 0.4 * math.log(8) + 0.2 * math.log(4 / 3) + 0.4 * math.log(0.5)
    h = -(0.4 * math.log(0.4) + 0.2 * math.log(0.2) + 0.4 * math.log(0.1))
    gate = max(0.5, 2.0 / (h + 0.1))
    assert m["kl/safe_smoothed"] == pytest.approx(kl) and m["kl/safe_gate"] == pytest.approx(gate)
    assert loss.item() == pytest.approx(0.1 * gate * (kl - 0.45) ** 2)
    (grad,) = torch.autograd.grad(loss, z)
    (kl_grad,) = torch.autograd.grad(_exact_kl(z, ref.log()), z)
    torch.testing.assert_close(grad, 0.1 * gate * 2 * (kl - 0.45) * kl_grad, rtol=1e-6, atol=1e-12)  # the gate is computed in float32
    # the pull is toward π_ref: a small gradient step lowers the exact KL
    assert _exact_kl(z.detach() - 0.1 * grad, ref.log()) < _exact_kl(z.detach(), ref.log())


@pytest.mark.parametrize("phase,threshold", [("warmup", 0.45), ("climbing", 0.36), ("converged", 0.30),
                                             ("plateau", 0.24)])
def test_mutant_phase_threshold_multipliers(phase, threshold):
    """τ = clip((τ_0 + u)·φ, 0.1, 0.6) with τ_0 = 0.3, u = 0: φ = 1.5 / 1.2 / 1.0 / 0.8 by phase."""
    reg = REGULARIZERS.build("safe_kl")
    state = reg.state_dict()
    reg.load_state_dict({**state, "phase": phase})
    assert reg.threshold == pytest.approx(threshold)


def test_threshold_clip_bounds():
    """u = +0.5 in CLIMBING: (0.8)·1.2 = 0.96 -> 0.6; u = -0.25: 0.05·1.2 = 0.06 -> 0.1;
    u = 0.1: 0.4·1.2 = 0.48 (inside the clip)."""
    reg = REGULARIZERS.build("safe_kl")
    reg.phase = "climbing"
    for u, tau in ((0.5, 0.6), (-0.25, 0.1), (0.1, 0.48)):
        reg.pid.output = u
        assert reg.threshold == pytest.approx(tau)


def test_climbing_phase_reached_through_steps(make_inputs):
    """100 steps, mean reward 0.1 then 0.3 (window 50): the phase is CLIMBING (φ = 1.2, metric
    phase 1) and τ = clip((0.3 + u)·1.2, 0.1, 0.6) with u the PID after the same reward sequence."""
    reg = REGULARIZERS.build("safe_kl")
    pid = RewardPID()
    for r in [0.1] * 50 + [0.3] * 50:
        reg(make_inputs([[0.0]], [0.0], ref_logp_BT=[[0.0]], rewards_B=[r]))
        reg.on_step_end({})
        pid.update(r)
    assert reg.phase == "climbing"
    _, m = reg(make_inputs([[0.0]], [0.0], ref_logp_BT=[[0.0]], rewards_B=[0.3]))
    assert m["kl/safe_phase"] == 1.0
    assert m["kl/safe_threshold"] == pytest.approx(min(0.6, max(0.1, (0.3 + pid.output) * 1.2)))
    assert 0.1 < m["kl/safe_threshold"] < 0.6  # inside the clip, so φ matters


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
