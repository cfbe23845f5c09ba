"""ARES HWE shaper: window means, Huber, buckets, hierarchical reward (hand), state updates after use."""

import math

import pytest
import torch

from entrolab.registry import SHAPERS
from entrolab.rewards.ares import (
    bucket_of,
    forward_window_means,
    hierarchical_entropy_reward,
    huber,
)


def test_window_means_huber_buckets():
    assert forward_window_means(torch.arange(1.0, 7.0), window=2).tolist() == [2.5, 3.5, 4.5, 5.5]
    assert forward_window_means(torch.ones(2), window=2).numel() == 0
    assert (huber(1.0, 2.0), huber(3.0, 2.0)) == (0.25, 2.0)
    assert [bucket_of(a) for a in (1.0, 2 / 3, 0.5, 1 / 3, 0.0)] == ["easy", "easy", "medium", "medium", "hard"]


def test_hierarchical_reward_hand_values():
    """α = .5 everywhere.
    easy ✓, N=10, N*=4: Δ=6, m=1, κ=2, cap=.5; Huber(5,2)=4 ⇒ .5·4/3=.667 ⇒ e = −min(.5,.667) = −.5.
    easy ✗, N=N*=4: σ(0) = .5 ⇒ e = .6·.5·.5 = .15.
    hard ✓, N=5, N*=4: m=1.4, cap=.6, e = .6·σ(2.4/3) = .413982.
    hard ✓, N=0, N*=10: m=3.5, Huber(6.5, 4)=4.5 ⇒ .5·.6·4.5/7.5 = .18 ⇒ e = −.18.
    medium ✓, N=6, N*=4: m=1, Huber(1, 3)=1/6 ⇒ .5·(1/6)/4 ⇒ e = −.0208333."""
    e = hierarchical_entropy_reward
    assert e(10, 4, "easy", True, alpha=0.5) == pytest.approx(-0.5)
    assert e(4, 4, "easy", False, alpha=0.5) == pytest.approx(0.15)
    assert e(5, 4, "hard", True, alpha=0.5) == pytest.approx(0.6 / (1 + math.exp(-0.8)))
    assert e(0, 10, "hard", True, alpha=0.5) == pytest.approx(-0.18)
    assert e(6, 4, "medium", True, alpha=0.5) == pytest.approx(-1 / 48)


def ent_batch(make_batch, rewards, gid, ent_rows):
    T = max(len(r) for r in ent_rows)
    ent = torch.zeros(len(ent_rows), T)
    for i, r in enumerate(ent_rows):
        ent[i, : len(r)] = torch.tensor(r)
    lengths = [len(r) for r in ent_rows]
    texts = ["x" * (n - 1) for n in lengths]
    return make_batch(rewards, gid, lengths=lengths, T=T, texts=texts, entropy_BT=ent)


def test_shaper_state_used_then_updated(make_batch):
    rows = [[0, 0, 3, 3, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8], [0, 5, 0, 5, 0, 5, 0, 5]]
    b = ent_batch(make_batch, [1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1], rows)
    sh = SHAPERS.build("ares_hwe", {"window": 2})
    out, m = sh(b.rewards_B, b, None)
    p95 = [float(torch.quantile(forward_window_means(torch.tensor(r, dtype=torch.float32), window=2), 0.95))
           for r in rows]
    tau0 = sum(p95) / 4
    assert m["ares/tau"] == pytest.approx(tau0)
    assert sh.tau == pytest.approx(0.99 * tau0 + 0.01 * float(torch.tensor(p95).median()))
    # group 0 all correct → easy; group 1 all wrong → hard; bonus = out − r
    bonus = out - b.rewards_B
    n = [float((forward_window_means(torch.tensor(r, dtype=torch.float32), window=2) >= tau0).sum()) for r in rows]
    tgt = {"easy": (n[0] + n[1]) / 2, "hard": (n[2] + n[3]) / 2}
    exp = [hierarchical_entropy_reward(n[i], round(tgt[d]), d, c, alpha=0.5)
           for i, (d, c) in enumerate([("easy", True), ("easy", True), ("hard", False), ("hard", False)])]
    assert bonus.tolist() == pytest.approx(exp, abs=1e-6)
    assert sh.alpha["easy"] == pytest.approx(min(2, max(0, 0.5 + 0.05 * (tgt["easy"] - round(tgt["easy"])))))
    state = sh.state_dict()
    clone = SHAPERS.build("ares_hwe", {"window": 2})
    clone.load_state_dict(state)
    assert torch.equal(clone(b.rewards_B, b, None)[0], sh(b.rewards_B, b, None)[0])


def test_lexicon_and_dynamic_kl(make_batch):
    text = "so actually yes"
    n = len(text) + 1
    ent = torch.linspace(0, 1, n)[None]
    b = make_batch([0.0], [0], lengths=[n], T=n, texts=[text], entropy_BT=ent, correct=[False])
    sh = SHAPERS.build("ares_hwe", {"window": 2, "lexicon": ["Actually"]})
    assert sh._candidates(b, 0, 10) == [3]
    kl = SHAPERS.build("ares_hwe", {"dynamic_kl": True})
    assert kl.requires == frozenset({"ref_logp", "old_stats"})
    with pytest.raises(ValueError, match="ref_logp"):
        kl(b.rewards_B, b, None)
    b.ref_logp_BT = torch.full((1, n), -0.1)
    _, m = kl(b.rewards_B, b, None)
    assert b.extras["kl_weight_B"].shape == (1,) and m["ares/kl_beta_hard"] == 1.0
