"""PPO clip branches a mutation run found unchecked (docs/quality.md): the dual-clip cap with |A| ≠ 1,
ε_low/ε_high passed through and defaulted, the log-ratio clamp on both sides, validation bounds."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.surrogates import LOG_RATIO_CLAMP, PPOClip, log_ratio, ppo_clip_loss, ratio_metrics
from entrolab.registry import SURROGATES


def _t(x):
    return torch.tensor([x], dtype=torch.float64)


def test_dual_clip_cap_scales_with_advantage():
    """A = −2, c = 3, cap c·|A| = 6 (not c/|A| = 1.5). r = e (δ = 1): the PPO loss max(2e, 2·1.2) = 2e = 5.44
    is below the cap and kept; r = e²: 2e² = 14.78 is capped at 6."""
    adv = _t([-2.0, -2.0])
    loss, aux = ppo_clip_loss(_t([1.0, 2.0]), _t([0.0, 0.0]), adv, dual_clip_c=3.0)
    assert loss.tolist()[0] == pytest.approx([2 * math.e, 6.0])
    assert aux["clip_dual"].tolist() == [[False, True]]


def test_ppo_defaults_and_passthrough(make_inputs):
    """Function and component defaults are ε_low = ε_high = 0.2: A = 1 at r = 1.3 is clipped to 1.2
    (loss −1.2), A = −1 at r = 0.7 to 0.8 (loss 0.8). A component built with ε_low = 0.1 uses it:
    the A = −1 token is clipped to 0.9."""
    logp = [[math.log(1.3), math.log(0.7)]]
    loss, _ = ppo_clip_loss(torch.tensor(logp), torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]))
    assert loss.tolist()[0] == pytest.approx([-1.2, 0.8])
    inp = make_inputs(logp, torch.tensor([[1.0, -1.0]], dtype=torch.float64), old_logp_BT=[[0.0, 0.0]])
    loss, m = SURROGATES.build("ppo_clip")(inp)
    assert loss.tolist()[0] == pytest.approx([-1.2, 0.8])
    loss, _ = SURROGATES.build("ppo_clip", {"eps_low": 0.1})(inp)
    assert loss.tolist()[0] == pytest.approx([-1.2, 0.9])


def test_log_ratio_clamped_both_sides():
    d = log_ratio(_t([0.0, 0.0]), _t([100.0, -100.0]))
    assert d.tolist()[0] == [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]


def test_check_clip_bounds():
    SURROGATES.build("ppo_clip", {"eps_low": 0.0, "eps_high": 0.0})
    with pytest.raises(ValueError, match="^eps_high must be >= 0, got -0.1$"):
        PPOClip(eps_high=-0.1)
    with pytest.raises(ValueError, match=r"dual_clip_c must be > 1 \(or null to disable\), got 1"):
        PPOClip(dual_clip_c=1)
    PPOClip(dual_clip_c=1.5)


@pytest.mark.parametrize("bad", ["logp", "old", "mask"])
def test_ppo_rejects_mismatched_shapes(make_inputs, bad):
    inp = make_inputs([[0.0, 0.0]], [1.0])
    short = torch.zeros(1, 1, dtype=torch.float64)
    if bad == "logp":
        inp.logp_BT = short.requires_grad_(True)
        name = "old_logp_BT"
    elif bad == "old":
        inp.old_logp_BT, name = short, "old_logp_BT"
    else:
        inp.mask_BT, name = torch.ones(1, 1, dtype=torch.bool), "mask_BT"
    with pytest.raises(ValueError, match=f"{name} has shape"):
        SURROGATES.build("ppo_clip")(inp)


def test_ppo_zero_advantage_is_never_clipped_and_clamp_passthrough():
    """A = 0 tokens carry no loss: never counted as clipped, whatever r. The log-ratio clamp is passed
    on: with clamp = 1, δ = 2 gives r = e (not e²), so A = −1 costs max(e, 0.8) = e; ratio_metrics uses
    the same clamp; the ratio is returned for the caller."""
    loss, aux = ppo_clip_loss(_t([math.log(0.5), math.log(1.5)]), _t([0.0, 0.0]), _t([0.0, 0.0]))
    assert aux["clip_low"].tolist() == [[False, False]] and aux["clip_high"].tolist() == [[False, False]]
    loss, aux = ppo_clip_loss(_t([2.0]), _t([0.0]), _t([-1.0]), clamp=1.0)
    assert loss.item() == pytest.approx(math.e) and aux["ratio_BT"].item() == pytest.approx(math.e)
    m = ratio_metrics(_t([2.0]), _t([0.0]), torch.ones(1, 1, dtype=torch.bool), clamp=1.0)
    assert m["policy/ratio_mean"] == pytest.approx(math.e)
