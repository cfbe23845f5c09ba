"""Hand-computed values and identities for the baseline estimators (grpo, dr_grpo, rloo, reinforce++)."""

import math

import pytest
import torch

import entrolab.advantages  # noqa: F401
from entrolab.advantages.baselines import (
    grpo_advantage,
    reinforce_pp_advantage,
    reinforce_pp_baseline_advantage,
    rloo_advantage,
)
from entrolab.registry import ADVANTAGES


def test_grpo_hand_computed():
    """Group [1,0,0,1]: mean 0.5, unbiased std sqrt(4·0.25/3) = sqrt(1/3) ⇒ A = ±0.5/sqrt(1/3) = ±0.8660."""
    adv = grpo_advantage(torch.tensor([1.0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), eps=0.0)
    expected = 0.5 / math.sqrt(1 / 3)
    assert torch.allclose(adv, torch.tensor([expected, -expected, -expected, expected]), atol=1e-6)


def test_grpo_degenerate_groups_are_exactly_zero():
    """All-equal groups (even 0.1 which is not exactly representable) and a group of one give exact 0."""
    rewards = torch.tensor([0.1, 0.1, 0.1, 5.0, 1.0, 0.0])
    gid = torch.tensor([7, 7, 7, 3, 9, 9])  # arbitrary, non-contiguous labels
    adv = grpo_advantage(rewards, gid)
    assert adv[:4].tolist() == [0.0, 0.0, 0.0, 0.0]  # verl would give 5.0 for the group of one
    # group 9: [1, 0], mean .5, unbiased std sqrt(.5) ⇒ ±0.5/0.7071 = ±0.7071
    assert torch.allclose(adv[4:], torch.tensor([0.70710, -0.70710]), atol=1e-4)
    assert torch.isfinite(adv).all()


def test_dr_grpo_is_grpo_without_std_and_rloo_is_scaled():
    """Identities: dr_grpo = grpo(scale_by_std=False) = r − mean; rloo = G/(G−1)·(r − mean).

    Group [1,0,0]: r − mean = [2/3, −1/3, −1/3]; RLOO = [1 − 0, 0 − 1/2, 0 − 1/2] = [1, −.5, −.5].
    """
    r, g = torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 0])
    centred = grpo_advantage(r, g, scale_by_std=False)
    assert torch.allclose(centred, torch.tensor([2 / 3, -1 / 3, -1 / 3]))
    assert torch.allclose(rloo_advantage(r, g), torch.tensor([1.0, -0.5, -0.5]))
    assert torch.allclose(rloo_advantage(r, g), centred * 3 / 2)


def test_rloo_brute_force_leave_one_out():
    """Compare with the literal leave-one-out mean on random rewards in uneven groups."""
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(9, generator=gen)
    g = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    adv = rloo_advantage(r, g)
    for i in range(9):
        others = [r[j] for j in range(9) if g[j] == g[i] and j != i]
        assert adv[i] == pytest.approx(float(r[i] - sum(others) / len(others)), abs=1e-6)


@pytest.mark.parametrize("fn", [grpo_advantage, rloo_advantage])
def test_permutation_within_group(fn):
    r = torch.tensor([0.3, 1.0, 0.0, 0.7, 2.0, -1.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1])
    perm = torch.tensor([3, 0, 2, 1, 5, 4])
    assert torch.allclose(fn(r, g)[perm], fn(r[perm], g[perm]))


def test_reinforce_pp_hand_computed():
    """Lengths 2 and 1, rewards 1 and 0 (γ = 1, no KL): returns on valid tokens [1, 1 | 0].

    mean 2/3, unbiased var ((1/3)²·2 + (2/3)²)/2 = 1/3 ⇒ A = [0.57735, 0.57735 | −1.15470], pad = 0.
    """
    mask = torch.tensor([[True, True], [True, False]])
    adv = reinforce_pp_advantage(torch.tensor([1.0, 0.0]), mask)
    s = math.sqrt(1 / 3 + 1e-8)
    assert torch.allclose(adv, torch.tensor([[(1 / 3) / s, (1 / 3) / s], [-(2 / 3) / s, 0.0]]), atol=1e-6)


def test_reinforce_pp_kl_in_reward():
    """β = 0.1, KL = [[.5, 1], [2, ·]]: c = [[−.05, 1 − .1], [−.2]] ⇒ returns [[.85, .9], [−.2]], then whiten."""
    mask = torch.tensor([[True, True], [True, False]])
    kl = torch.tensor([[0.5, 1.0], [2.0, 99.0]])
    adv = reinforce_pp_advantage(torch.tensor([1.0, 0.0]), mask, kl_BT=kl, kl_coef=0.1)
    vals = torch.tensor([0.85, 0.9, -0.2])
    w = (vals - vals.mean()) / torch.sqrt(vals.var(unbiased=True) + 1e-8)
    assert torch.allclose(adv[mask], w, atol=1e-6) and adv[1, 1] == 0


def test_reinforce_pp_baseline_whitens_over_tokens():
    """Group [1, 0] → centred [.5, −.5]; lengths 3 and 1 ⇒ token values [.5,.5,.5,−.5]: long answers dominate.

    mean .25, unbiased var (3·.0625 + .5625)/3 = .25 ⇒ A = [.5, .5, .5, −1.5].
    """
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv = reinforce_pp_baseline_advantage(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask)
    assert torch.allclose(adv[mask], torch.tensor([0.5, 0.5, 0.5, -1.5]), atol=1e-5)
    assert (adv[~mask] == 0).all()


def test_registered_estimators_on_batch(make_batch):
    b = make_batch([1.0, 0.0, 0.0, 1.0, 0.5], [0, 0, 0, 0, 1])
    for name in ["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]:
        est = ADVANTAGES.build(name)
        adv, metrics = est(b)
        assert torch.isfinite(adv).all()
        assert set(metrics) >= {"adv/mean", "adv/std", "adv/zero_frac"}
        assert all(isinstance(v, float) for v in metrics.values())
    adv, m = ADVANTAGES.build("grpo")(b)
    assert m["adv/zero_frac"] == pytest.approx(0.2)  # the group of one


def test_reinforce_pp_kl_needs_ref_logp(make_batch):
    est = ADVANTAGES.build("reinforce_pp", {"kl_coef": 0.1})
    assert est.requires == frozenset({"ref_logp", "old_stats"})
    with pytest.raises(ValueError, match="ref_logp"):
        est(make_batch([1.0, 0.0]))


def test_missing_or_nan_rewards_are_clear_errors(make_batch):
    b = make_batch([1.0, 0.0])
    b.rewards_B = None
    with pytest.raises(ValueError, match="rewards_B is None"):
        ADVANTAGES.build("grpo")(b)
    b.rewards_B = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"rewards_B\[1\]"):
        ADVANTAGES.build("grpo")(b)
