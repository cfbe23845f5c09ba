"""Ctrl-U (arXiv 2410.11236) adapted to LM rewards: member disagreement, the exp(−U) shrinkage, the
shaper reading the ensemble's uncertainty, and its composition in the reward stage."""

import itertools
import math

import pytest
import torch

from entrolab.registry import REWARDS, SHAPERS
from entrolab.rewards.compose import RewardError, compute_rewards
from entrolab.rewards.ctrl_u import UNCERTAINTY_KEY, ctrl_u_shape, member_disagreement


def test_ctrl_u_disagreement_is_the_mean_pairwise_gaussian_kl():
    """Brute force: for K = 4 members, the mean over the 6 pairs j < k of KL(N(r_j,1) ‖ N(r_k,1))
    (torch.distributions) equals the unbiased variance across members; K = 2 is the paper's two-pass KL."""
    from torch.distributions import Normal, kl_divergence

    torch.manual_seed(0)
    s = torch.randn(4, 5, dtype=torch.float64)
    pairs = [kl_divergence(Normal(s[j], 1.0), Normal(s[k], 1.0)) for j, k in itertools.combinations(range(4), 2)]
    assert torch.allclose(member_disagreement(s), torch.stack(pairs).mean(0))
    two = torch.tensor([[1.0], [3.0]])
    assert member_disagreement(two).tolist() == [2.0]  # (1 − 3)²/2
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        member_disagreement(torch.zeros(1, 3))


def test_ctrl_u_shape_hand_values():
    """Group 0: r = [2, 0], U = [ln 2, 0] ⇒ c = 1, w = [.5, 1] ⇒ [1 + .5·1, 1 − 1] = [1.5, 0].
    Group 1: r = [−1, −1], U = [ln 4, 0] ⇒ c = −1 ⇒ unchanged. center none: [1, 0, −.25, −1] (the plain
    exp(−U)·r moves the uncertain −1 *up* to −.25: why the group centre is the default)."""
    r = torch.tensor([2.0, 0.0, -1.0, -1.0])
    u = torch.tensor([math.log(2), 0.0, math.log(4), 0.0])
    gid = torch.tensor([0, 0, 1, 1])
    assert ctrl_u_shape(r, u, gid).tolist() == pytest.approx([1.5, 0.0, -1.0, -1.0])
    assert ctrl_u_shape(r, u, gid, center="none").tolist() == pytest.approx([1.0, 0.0, -0.25, -1.0])
    assert ctrl_u_shape(r, u, gid, u_scale=0.0).tolist() == r.tolist()  # no uncertainty weight: identity
    assert ctrl_u_shape(r, u * 1e4, gid).tolist() == pytest.approx([1.0, 0.0, -1.0, -1.0])  # → group mean
    with pytest.raises(ValueError, match="center"):
        ctrl_u_shape(r, u, gid, center="batch")


def _pays(values):
    def fn(batch, task):
        return torch.tensor(values), {}
    return fn


def test_ctrl_u_reads_the_ensemble_uncertainty_in_the_reward_stage(make_batch):
    """Members (norm none) [1, 0, 1, 1] and [1, 0, 0, 1]: mean [1, 0, .5, 1], U = unbiased var =
    [0, 0, .5, 0]. Shaper u_scale 2: w_2 = e^−1. Group 1 = samples 2, 3: c = .75 ⇒ r_2 = .75 − .25/e."""
    b = make_batch([0.0] * 4, [0, 0, 1, 1])
    ens = REWARDS.build("ensemble", {"members": [_pays([1.0, 0.0, 1.0, 1.0]), _pays([1.0, 0.0, 0.0, 1.0])],
                                     "member_norm": "none"})
    r, m = compute_rewards(b, None, [("ens", 1.0, ens)], shapers=[SHAPERS.build("ctrl_u", {"u_scale": 2.0})])
    assert b.extras[UNCERTAINTY_KEY].tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert r.tolist() == pytest.approx([1.0, 0.0, 0.75 - 0.25 / math.e, 0.75 + 0.25])
    assert m["ctrl_u/weight_min"] == pytest.approx(math.exp(-1.0)) and m["ctrl_u/uncertainty"] == pytest.approx(0.125)
    assert m["ctrl_u/weight"] == pytest.approx((3 + math.exp(-1.0)) / 4)


def test_ctrl_u_shaper_passes_center_and_handles_singletons_and_empty_batches(make_batch):
    """A group of one is its own mean: unchanged whatever U. center none: r·e^{−U}. u_scale 0 is
    allowed (identity). An empty batch gives an empty reward and zero metrics."""
    b = make_batch([2.0, 4.0, 0.0], [0, 1, 1])
    b.extras[UNCERTAINTY_KEY] = torch.tensor([math.log(2), math.log(2), 0.0])
    assert SHAPERS.build("ctrl_u")(b.rewards_B, b, None)[0].tolist() == pytest.approx([2.0, 3.0, 0.0])
    assert SHAPERS.build("ctrl_u", {"center": "none"})(b.rewards_B, b, None)[0].tolist() == pytest.approx([1.0, 2.0, 0.0])
    assert SHAPERS.build("ctrl_u", {"u_scale": 0.0})(b.rewards_B, b, None)[0].tolist() == [2.0, 4.0, 0.0]
    e = make_batch([], [])
    e.extras[UNCERTAINTY_KEY] = torch.zeros(0)
    out, m = SHAPERS.build("ctrl_u")(e.rewards_B, e, None)
    assert out.shape == (0,) and m == {"ctrl_u/uncertainty": 0.0, "ctrl_u/weight": 0.0, "ctrl_u/weight_min": 0.0}


def test_ctrl_u_without_an_ensemble_is_an_error_not_a_no_op(make_batch):
    b = make_batch([1.0, 0.0], [0, 0])
    with pytest.raises(RewardError, match="ensemble"):
        compute_rewards(b, None, [("verifier", 1.0, REWARDS.build("verifier"))], shapers=[SHAPERS.build("ctrl_u")])
    one = REWARDS.build("ensemble", {"members": ["verifier"]})  # one member: no disagreement to measure
    with pytest.raises(RewardError, match="at least 2 members"):
        compute_rewards(b, None, [("ens", 1.0, one)], shapers=[SHAPERS.build("ctrl_u")])
    for bad in ({"u_scale": -1.0}, {"center": "x"}):
        with pytest.raises(Exception, match="u_scale|center"):
            SHAPERS.build("ctrl_u", bad)
