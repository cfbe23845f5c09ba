"""COPO: answer entropy, global/local blend, gate modes."""

import math

import pytest
import torch

from entrolab.advantages.baselines import grpo_advantage
from entrolab.advantages.copo import answer_entropy_bits
from entrolab.registry import ADVANTAGES


def test_answer_entropy_bits():
    assert answer_entropy_bits(["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert answer_entropy_bits(["a"] * 4) == 0.0
    assert answer_entropy_bits([None, None, "x", "y"]) == pytest.approx(1.5)  # None is one class


def batch(make_batch):
    """p0: r=[1,1], same answer (H=0); p1: r=[1,0], different answers (H=1 bit)."""
    return make_batch([1.0, 1.0, 1.0, 0.0], [0, 0, 1, 1], answers=["4", "4", "4", "5"])


def test_soft_gate_hand_values(make_batch):
    """w = σ(5(H − 1)): p0 σ(−5) = .006693, p1 .5. R_glob = pass rate [1, .5] ⇒ A_glob = ±.5/(std .35355)
    = ±.70711. p0: (1 − .006693)·.70711 = .70238; p1: .5·(−.70711) + .5·(±.70711) = [0, −.70711]."""
    adv, m = ADVANTAGES.build("copo", {"gate": "soft"})(batch(make_batch))
    assert torch.allclose(adv, torch.tensor([0.70238, 0.70238, 0.0, -0.70711]), atol=1e-4)
    assert m["copo/gate_mean"] == pytest.approx((2 / (1 + math.exp(5)) + 1.0) / 4, abs=1e-6)


def test_gate_modes(make_batch):
    b = batch(make_batch)
    glob, _ = ADVANTAGES.build("copo", {"gate": "global"})(b)
    assert torch.allclose(glob, torch.tensor([0.70711, 0.70711, -0.70711, -0.70711]), atol=1e-4)
    loc, _ = ADVANTAGES.build("copo", {"gate": "local"})(b)
    assert torch.allclose(loc, grpo_advantage(b.rewards_B, b.group_id_B))
    zero, _ = ADVANTAGES.build("copo")(b)  # soft_with_zero: the wrong answer (row 3) is global only
    assert zero[3].item() == pytest.approx(-0.70711, abs=1e-4) and zero[2].item() == pytest.approx(0.0, abs=1e-4)


def test_single_prompt_global_is_zero(make_batch):
    b = make_batch([1.0, 1.0], [0, 0], answers=["4", "4"])
    adv, _ = ADVANTAGES.build("copo", {"gate": "global"})(b)
    assert adv.tolist() == [0.0, 0.0]
