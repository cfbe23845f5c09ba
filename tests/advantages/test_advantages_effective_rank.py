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
)
from entrolab.diagnostics.rank import effective_rank_dynamics


def test_effective_rank_hand_values():
    """Rows ±e1, ±e2: centred, singular values √2, √2 ⇒ p = (.5, .5) ⇒ ER = exp(log 2) = 2.
    Collinear rows ⇒ one singular value ⇒ ER = 1. Identical rows ⇒ no spread ⇒ 1 (our convention)."""
    h = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    assert effective_rank(h) == pytest.approx(2.0)
    assert effective_rank(torch.tensor([[1.0, 0], [2, 0], [3, 0]])) == pytest.approx(1.0)
    assert effective_rank(torch.ones(3, 4)) == 1.0


def test_rank_dynamics_brute_force():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(20, 6, generator=gen)
    out = effective_rank_dynamics(h, stride=4)
    ers = [effective_rank(h[: t + 1]) for t in (4, 8, 12, 16)]
    d = [ers[c] - sum(ers[:c]) / c for c in (1, 2, 3)]
    assert out["erv"] == pytest.approx(sum(d) / 3)
    assert out["era"] == pytest.approx(((d[1] - d[0]) + (d[2] - d[1])) / 2)
    assert effective_rank_dynamics(h[:8], stride=4) is None  # one checkpoint only


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


def test_item7_one_effective_rank_definition_on_degenerate_inputs(make_batch):
    """The advantage and the diagnostic share one ER/ERV/ERA (same function objects). Conventions on
    degenerate inputs: one row, identical rows and an all-zero matrix have ER = 1 (upstream 0); ERA of a
    response with only two checkpoints is NaN (upstream 0), and the bonus treats it as uninformative:
    dev_ERA = 0 ⇒ β = ½.

    Batch: four rows of T = 9, stride 4 ⇒ checkpoints t = 4, 8 only ⇒ ERA undefined for every row.
    Rows 0–1 have identical hidden states ⇒ every ER = 1, ERV = 0. The logged rank/era is absent (no
    defined value, never a fake 0) and rank/er is the mean of the rows' ER from the diagnostic."""
    import entrolab.advantages.effective_rank as adv_mod
    import entrolab.diagnostics.rank as diag

    assert adv_mod.effective_rank is diag.effective_rank
    assert adv_mod.effective_rank_dynamics is diag.effective_rank_dynamics
    for h in (torch.ones(1, 4), torch.ones(5, 3), torch.zeros(4, 2)):
        assert effective_rank(h) == 1.0
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(4, 9, 5, generator=gen)
    hidden[0] = hidden[1] = torch.ones(9, 5)
    two = effective_rank_dynamics(hidden[2], stride=4)
    assert math.isnan(two["era"]) and two["erv"] == pytest.approx(effective_rank(hidden[2, :9]) - effective_rank(hidden[2, :5]))
    flat = effective_rank_dynamics(hidden[0], stride=4)
    assert (flat["er"], flat["erv"]) == (1.0, 0.0) and math.isnan(flat["era"])
    b = make_batch([1.0, 0.0, 1.0, 0.0], [0, 0, 0, 0], lengths=[9] * 4, T=9, hidden_BTD=hidden)
    est = EffectiveRankBonus(stride=4)
    _, m1 = est(b)
    ers = [effective_rank_dynamics(hidden[i], stride=4)["er"] for i in range(4)]
    assert m1["rank/er"] == pytest.approx(sum(ers) / 4) and "rank/era" not in m1
    assert math.isnan(est.ema["era"])
    # ER twice its baseline with ERA undefined: β = σ(0) = ½ ⇒ aux = ½·tanh(1), not NaN
    ema = {"er": 2.0, "erv": 0.5, "era": math.nan}
    assert aux_signal({"er": 4.0, "erv": 0.5, "era": math.nan}, ema) == pytest.approx(0.5 * math.tanh(1.0))
    adv2, m2 = est(b)
    assert torch.isfinite(adv2).all() and math.isfinite(m2["rank/aux_mean"])
