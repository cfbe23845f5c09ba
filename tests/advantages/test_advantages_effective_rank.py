"""VERL effective rank: ER values, ERV/ERA by brute force, aux signal, bounded bonus, EMA state."""

import math

import pytest
import torch

from entrolab.advantages.baselines import grpo_advantage
from entrolab.advantages.effective_rank import (
    EffectiveRankBonus,
    aux_signal,
    bounded_bonus,
    effective_rank,
    rank_dynamics,
)


def test_effective_rank_hand_values():
    """Rows ±e1, ±e2: centred, singular values √2, √2 ⇒ p = (.5, .5) ⇒ ER = exp(log 2) = 2.
    Collinear rows ⇒ one singular value ⇒ ER = 1. Identical rows ⇒ no spread ⇒ 0 (our convention)."""
    h = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    assert effective_rank(h) == pytest.approx(2.0)
    assert effective_rank(torch.tensor([[1.0, 0], [2, 0], [3, 0]])) == pytest.approx(1.0)
    assert effective_rank(torch.ones(3, 4)) == 0.0


def test_rank_dynamics_brute_force():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(20, 6, generator=gen)
    erv, era = rank_dynamics(h, stride=4)
    ers = [effective_rank(h[: t + 1]) for t in (4, 8, 12, 16)]
    d = [ers[c] - sum(ers[:c]) / c for c in (1, 2, 3)]
    assert erv == pytest.approx(sum(d) / 3)
    assert era == pytest.approx(((d[1] - d[0]) + (d[2] - d[1])) / 2)
    assert rank_dynamics(h[:8], stride=4) is None  # one checkpoint only


def test_aux_signal_and_bonus():
    """values = EMA ⇒ all dev 0 ⇒ aux 0. ER twice its EMA ⇒ dev_ER = 1, β = σ(0) = .5, w_ER = .5
    ⇒ aux = .5·tanh(1) = .38080."""
    ema = {"er": 2.0, "erv": 0.5, "era": 0.1}
    assert aux_signal(dict(ema), ema) == 0.0
    assert aux_signal({**ema, "er": 4.0}, ema) == pytest.approx(0.5 * math.tanh(1.0))
    out = bounded_bonus(torch.tensor([1.0, -1.0, 1.0]), torch.tensor([5.0, 5.0, -3.0]))
    assert out.tolist() == [1.5, -0.5, 1.0]  # capped at |A|/2, never flips sign, no negative bonus


def test_estimator_first_batch_is_grpo_then_bonus(make_batch):
    gen = torch.Generator().manual_seed(0)
    b = make_batch([1.0, 0.0, 1.0, 0.0], [0, 0, 0, 0], lengths=[24] * 4, T=24,
                   hidden_BTD=torch.randn(4, 24, 8, generator=gen))
    est = EffectiveRankBonus(stride=4)
    assert est.requires == frozenset({"hidden"})
    adv1, m1 = est(b)
    base = grpo_advantage(b.rewards_B, b.group_id_B)
    assert torch.allclose(adv1, base[:, None].expand(4, 24))
    assert m1["rank/aux_mean"] == 0.0 and est.ema is not None
    state = est.state_dict()
    b.hidden_BTD = b.hidden_BTD * torch.linspace(0.1, 3.0, 24)[None, :, None] ** 2
    adv2, m2 = est(b)
    clone = EffectiveRankBonus(stride=4)
    clone.load_state_dict(state)
    assert torch.equal(clone(b)[0], adv2)
    assert ((adv2 - base[:, None]).abs() <= base.abs()[:, None] / 2 + 1e-6).all()
    with pytest.raises(ValueError, match="hidden_BTD"):
        b.hidden_BTD = None
        est(b)
