"""kl_in_reward: hand-computed sequence KL penalties (k1/k3), masking, and a trainer run that uses it."""

import math

import pytest
import torch

from entrolab.registry import SHAPERS
from entrolab.rewards.kl_reward import sequence_kl


def test_sequence_kl_k1_and_k3_by_hand():
    """δ = old − ref = [[0.5, −0.2, (pad 9)], [0.0, 0.3, 0.1]].
    k1 sums: 0.3 and 0.4. k3 = e^{−δ} − 1 + δ per token."""
    old = torch.tensor([[-1.0, -2.0, 5.0], [-0.5, -0.7, -0.9]])
    ref = torch.tensor([[-1.5, -1.8, -4.0], [-0.5, -1.0, -1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(sequence_kl(old, ref, mask, estimator="k1"), torch.tensor([0.3, 0.4]))
    k3 = lambda d: math.exp(-d) - 1 + d  # noqa: E731
    want = torch.tensor([k3(0.5) + k3(-0.2), k3(0.0) + k3(0.3) + k3(0.1)])
    torch.testing.assert_close(sequence_kl(old, ref, mask, estimator="k3"), want)


def test_shaper_subtracts_beta_times_kl(make_batch):
    b = make_batch([1.0, 0.0], [0, 0], T=2)
    b.old_logp_BT = torch.tensor([[-1.0, -1.0], [-2.0, -2.0]])
    b.ref_logp_BT = torch.tensor([[-1.5, -1.0], [-1.0, -2.0]])  # k1 sums: 0.5 and −1.0
    sh = SHAPERS.build("kl_in_reward", {"beta": 0.1})
    out, m = sh(b.rewards_B, b, None)
    torch.testing.assert_close(out, torch.tensor([1.0 - 0.05, 0.0 + 0.1]))
    assert m["kl/seq_kl"] == pytest.approx(-0.25)
    assert sh.requires == frozenset({"ref_logp", "old_stats"})


def test_missing_reference_is_a_clear_error(make_batch):
    b = make_batch([1.0, 0.0], [0, 0], T=2)
    with pytest.raises(ValueError, match="needs batch.old_logp_BT and batch.ref_logp_BT"):
        SHAPERS.build("kl_in_reward")(b.rewards_B, b, None)
    with pytest.raises(Exception, match="estimator must be one of"):
        SHAPERS.build("kl_in_reward", {"estimator": "k4"})
