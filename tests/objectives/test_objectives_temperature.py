"""AEPO / DCPO building blocks: temperature switch, side-batch selection, advantage mixing."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.objectives.temperature import (
    TemperatureSwitch,
    aepo_select,
    dcpo_alpha,
    dcpo_mix_advantages,
    nll_entropy_proxy,
    temperature_ratio,
)


def test_temperature_switch_and_state():
    ts = TemperatureSwitch(target=0.5)
    assert ts.temperature == 1.2  # H = 0 before any measurement (upstream)
    assert ts.update(0.7) == 0.8
    assert ts.update(0.5) == 1.2  # <= target -> heat up
    other = TemperatureSwitch(target=0.5)
    other.load_state_dict(ts.state_dict())
    assert other.temperature == ts.temperature


def test_nll_proxy():
    assert nll_entropy_proxy(torch.tensor([[-1.0, -3.0, 9.0]]), torch.tensor([[1, 1, 0]], dtype=torch.bool)) == 2.0


def test_aepo_select():
    adv = torch.tensor([0.5, 0.01, -1.0, 1.2, 0.06])
    idx, a = aepo_select(adv, max_samples=60)
    assert idx.tolist() == [0, 3, 4] and a.tolist() == [1.0, 1.0, 1.0]
    idx, _ = aepo_select(adv, max_samples=2)
    assert idx.tolist() == [0, 3]
    idx, _ = aepo_select(adv, max_samples=60, above_target=True)  # halved: floor(3/2) = 1
    assert idx.tolist() == [0]
    idx, a = aepo_select(torch.tensor([-1.0, 0.0]))  # nothing qualifies: empty, no crash
    assert idx.numel() == 0 and a.numel() == 0


def test_dcpo_alpha_hand_and_guard():
    """H = 0.3, target 0.5: alpha0 = min(0.2, 0.1) = 0.1; p_correct 0.25 -> alpha1 = 0.4 -> 0.4/1.4."""
    assert dcpo_alpha(0.3, target=0.5, p_correct=0.25) == pytest.approx(0.4 / 1.4)
    assert dcpo_alpha(0.45, target=0.5, p_correct=0.5) == pytest.approx(0.1 / 1.1)
    assert dcpo_alpha(0.3, target=0.5, p_correct=0.0) == 0.0  # upstream: division by zero -> NaN


def test_dcpo_mix_hand():
    """A = [1, -1] per sequence, correct = [T, F] (p_correct 0.5), H = 0.45 -> alpha = 0.1/1.1.
    rho: log ratios [ln 2, 0] for the correct row. A~ = (1-a)A + a*b*rho; pads 0."""
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    logp = torch.log(torch.tensor([[0.2, 0.5], [0.3, 0.3]]))
    logp_T = logp + torch.tensor([[math.log(2.0), 0.0], [0.5, 0.5]])
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    rho = temperature_ratio(logp_T, logp, mask)
    assert rho.tolist()[0] == pytest.approx([2.0, 1.0])
    mixed, alpha = dcpo_mix_advantages(adv, torch.tensor([True, False]), rho, mask, entropy=0.45, target=0.5)
    a = 0.1 / 1.1
    assert alpha == pytest.approx(a)
    assert mixed.tolist()[0] == pytest.approx([(1 - a) + 2 * a, (1 - a) + a])
    assert mixed.tolist()[1] == pytest.approx([-(1 - a), 0.0])
    none_correct, alpha0 = dcpo_mix_advantages(adv, torch.tensor([False, False]), rho, mask, entropy=0.0)
    assert alpha0 == 0.0 and torch.isfinite(none_correct).all()
