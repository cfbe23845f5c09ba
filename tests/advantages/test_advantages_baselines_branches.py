"""The registered baseline estimators pass their hyperparameters and inputs on (mutation-run survivors,
docs/quality.md): the pure functions are tested elsewhere; here the components are checked against
hand values and against the functions they wrap."""

from __future__ import annotations

import pytest
import torch

import entrolab.advantages  # noqa: F401
from entrolab.advantages.baselines import reinforce_pp_advantage, reinforce_pp_baseline_advantage
from entrolab.registry import ADVANTAGES


def _batch(make_batch):
    """One group of four, rewards [1, 0, 0, 0]: mean 0.25, unbiased std 0.5."""
    return make_batch([1.0, 0.0, 0.0, 0.0], [0, 0, 0, 0], lengths=[3, 2, 3, 1], T=3)


def _per_seq(adv):
    return adv[:, 0].tolist() if adv.dim() == 2 else adv.tolist()


def test_grpo_and_dr_grpo_components(make_batch):
    """GRPO (defaults: eps 1e-6, std-scaled): (r − 0.25)/0.5 = [1.5, −0.5, −0.5, −0.5]; eps = 1: /1.5;
    scale_by_std = False and Dr.GRPO: r − 0.25."""
    b = _batch(make_batch)
    adv, _ = ADVANTAGES.build("grpo")(b)
    assert _per_seq(adv) == pytest.approx([1.5, -0.5, -0.5, -0.5], rel=1e-5)
    adv, _ = ADVANTAGES.build("grpo", {"eps": 1.0})(b)
    assert _per_seq(adv) == pytest.approx([0.5, -1 / 6, -1 / 6, -1 / 6])
    for name, params in (("grpo", {"scale_by_std": False}), ("dr_grpo", {})):
        adv, _ = ADVANTAGES.build(name, params)(b)
        assert _per_seq(adv) == pytest.approx([0.75, -0.25, -0.25, -0.25])
    ADVANTAGES.build("grpo", {"eps": 0.0})
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        ADVANTAGES.build("grpo", {"eps": -1.0})


def test_reinforce_pp_component_uses_k1_kl_and_whiten_eps(make_batch):
    """With kl_coef > 0 the component feeds the k1 estimate old_logp − ref_logp to the pure function;
    whiten_eps is passed on. Metrics are over valid tokens."""
    b = _batch(make_batch)
    b.old_logp_BT = torch.tensor([[-0.5, -1.0, -2.0]] * 4)
    b.ref_logp_BT = torch.tensor([[-1.0, -0.2, -3.0]] * 4)
    est = ADVANTAGES.build("reinforce_pp", {"kl_coef": 0.5, "whiten_eps": 0.3})
    assert est.requires == frozenset({"ref_logp", "old_stats"})
    adv, m = est(b)
    ref = reinforce_pp_advantage(b.rewards_B, b.mask_BT, kl_BT=b.old_logp_BT - b.ref_logp_BT, kl_coef=0.5,
                                 whiten_eps=0.3)
    assert torch.allclose(adv, ref)
    assert not torch.allclose(adv, reinforce_pp_advantage(b.rewards_B, b.mask_BT, kl_coef=0.0, whiten_eps=0.3))
    valid = ref[b.mask_BT]
    assert m["adv/mean"] == pytest.approx(float(valid.mean()), abs=1e-6)
    assert m["adv/zero_frac"] == 0.0  # padded zeros are not counted
    with pytest.raises(ValueError, match="kl_coef must be >= 0, got -1"):
        ADVANTAGES.build("reinforce_pp", {"kl_coef": -1.0})
    assert ADVANTAGES.build("reinforce_pp").requires == frozenset()
    b.ref_logp_BT = None
    with pytest.raises(ValueError, match="^reinforce_pp: kl_coef > 0 needs batch.old_logp_BT and batch.ref_logp_BT$"):
        est(b)


def test_reinforce_pp_baseline_component_whiten_eps(make_batch):
    b = _batch(make_batch)
    adv, m = ADVANTAGES.build("reinforce_pp_baseline", {"whiten_eps": 0.3})(b)
    ref = reinforce_pp_baseline_advantage(b.rewards_B, b.group_id_B, b.mask_BT, whiten_eps=0.3)
    assert torch.allclose(adv, ref)
    assert m["adv/zero_frac"] == 0.0  # the padded zeros are not counted


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "raw", "reinforce_pp", "reinforce_pp_baseline"])
def test_missing_rewards_name_the_estimator(make_batch, name):
    b = _batch(make_batch)
    b.rewards_B = None
    with pytest.raises(ValueError, match=rf"^advantage '{name}': batch.rewards_B is None"):
        ADVANTAGES.build(name)(b)


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline"])
def test_whiten_eps_default_is_1e_8(make_batch, name):
    """Default whiten_eps 1e-8: the valid tokens come out with (unbiased, as verl's masked_whiten) std 1."""
    b = _batch(make_batch)
    adv, _ = ADVANTAGES.build(name)(b)
    valid = adv[b.mask_BT].double()
    assert float(valid.std(unbiased=True)) == pytest.approx(1.0, abs=1e-6)
