"""Ensembles (mean/WCO/UWO, member normalisation, errors) and deliberately wrong rewards."""

import pytest
import torch

from entrolab.registry import REWARDS
from entrolab.rewards.compose import RewardError
from entrolab.rewards.ensemble import ensemble_aggregate


def test_aggregate_hand():
    """members [[1,2],[3,0]]: mean [2,1]; WCO [1,0]; UWO λ=.5 with population var 1 per column ⇒ [1.5, .5]."""
    s = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert ensemble_aggregate(s, mode="mean").tolist() == [2.0, 1.0]
    assert ensemble_aggregate(s, mode="wco").tolist() == [1.0, 0.0]
    assert ensemble_aggregate(s, mode="uwo", lam=0.5).tolist() == [1.5, 0.5]


def test_ensemble_of_blocks_and_callables(make_batch):
    b = make_batch([1.0, 0.0, 1.0, 0.0], [0, 0, 1, 1])
    const = lambda batch, task: (torch.tensor([2.0, 0.0, 2.0, 0.0]), {})  # noqa: E731
    ens = REWARDS.build("ensemble", {"members": ["verifier", const], "mode": "wco", "member_norm": "none"})
    vals, m = ens(b, None)
    assert vals.tolist() == [1.0, 0.0, 1.0, 0.0] and m["ensemble/member1"] == 1.0
    z = REWARDS.build("ensemble", {"members": ["verifier", const], "mode": "mean", "member_norm": "batch"})
    assert torch.allclose(z(b, None)[0], torch.tensor([1.0, -1.0, 1.0, -1.0]), atol=1e-6)
    with pytest.raises(Exception, match="verifer"):
        REWARDS.build("ensemble", {"members": [{"name": "verifer"}]})


def test_ensemble_member_state_and_errors(make_batch):
    b = make_batch([1.0, 0.0, 1.0], [0, 0, 0], texts=["a", "b", "boom"])
    ens = REWARDS.build("ensemble", {"members": [{"name": "spurious", "seed": 3}, "verifier"], "mode": "uwo"})
    state = ens.state_dict()
    first = ens(b, None)[0]
    ens.load_state_dict(state)
    assert torch.equal(ens(b, None)[0], first)

    def fragile(batch, task):
        if any(t == "boom" for t in batch.texts):
            raise RuntimeError("bad")
        return torch.zeros(batch.batch_size), {}

    with pytest.raises(RewardError, match=r"member 1 .*sample 2"):
        REWARDS.build("ensemble", {"members": ["verifier", fragile]})(b, None)


def test_spurious_is_seeded_owned_and_restorable(make_batch):
    b = make_batch([0.0] * 64, [0] * 64)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    r = REWARDS.build("spurious", {"seed": 7})
    state = r.state_dict()
    v1, _ = r(b, None)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    assert set(v1.tolist()) <= {0.0, 1.0} and 10 < v1.sum() < 54
    r2 = REWARDS.build("spurious", {"seed": 7})
    r2.load_state_dict(state)
    assert torch.equal(r2(b, None)[0], v1)
    assert REWARDS.build("spurious", {"p": 0.0})(b, None)[0].sum() == 0
    assert REWARDS.build("spurious", {"p": 1.0})(b, None)[0].sum() == 64


def test_incorrect_and_near_miss(make_batch):
    b = make_batch([1.0, 0.0, 0.0], [0, 0, 0], correct=[True, False, False], answers=["4", "5", None])
    b.verdicts[1] = b.verdicts[1].__class__(reward=0.0, correct=False, answer="5", reason="wrong_value")
    b.verdicts[2] = b.verdicts[2].__class__(reward=0.0, correct=False, answer=None, reason="parse_error")
    assert REWARDS.build("incorrect")(b, None)[0].tolist() == [0.0, 1.0, 0.0]
    vals, m = REWARDS.build("near_miss", {"near_miss_reward": 0.5})(b, None)
    assert vals.tolist() == [1.0, 0.5, 0.0] and m["reward/near_miss_frac"] == pytest.approx(1 / 3)
