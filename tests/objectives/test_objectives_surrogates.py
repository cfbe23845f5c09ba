"""REINFORCE and PPO-clip: hand values, clip metrics, identities, clamping."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.surrogates import approx_kl_k3
from entrolab.registry import SURROGATES, ConfigError


def test_reinforce_hand_values(make_inputs):
    """logp = [-1, -2], A = 2: loss = -A*logp = [2, 4]; d loss / d logp = -A = -2."""
    inp = make_inputs([[-1.0, -2.0]], [2.0])
    loss, metrics = SURROGATES.build("reinforce")(inp)
    assert loss.tolist() == [[2.0, 4.0]]
    loss.sum().backward()
    assert inp.logp_BT.grad.tolist() == [[-2.0, -2.0]]
    assert metrics["policy/ratio_mean"] == 1.0 and metrics["policy/approx_kl"] == 0.0


def _four_cases(make_inputs):
    """Four one-token sequences, old_logp = 0 so r = exp(logp):
    r=1.5, A=+1 -> clip high: loss -1.28, grad 0
    r=0.5, A=-1 -> clip low : loss  0.80, grad 0
    r=1.1, A=+1 -> unclipped: loss -1.10, grad -A*r = -1.1
    r=4.0, A=-1 -> unclipped by PPO (loss 4, grad +4); with dual clip c=3: loss 3, grad 0.
    """
    r = torch.tensor([[1.5], [0.5], [1.1], [4.0]], dtype=torch.float64)
    return make_inputs(r.log(), [1.0, -1.0, 1.0, -1.0], old_logp_BT=torch.zeros(4, 1))


def test_ppo_clip_hand_values_and_metrics(make_inputs):
    inp = _four_cases(make_inputs)
    loss, m = SURROGATES.build("ppo_clip", {"eps_low": 0.2, "eps_high": 0.28})(inp)
    assert torch.allclose(loss.squeeze(1), torch.tensor([-1.28, 0.8, -1.1, 4.0], dtype=torch.float64))
    loss.sum().backward()
    assert torch.allclose(inp.logp_BT.grad.squeeze(1), torch.tensor([0.0, 0.0, -1.1, 4.0], dtype=torch.float64))
    assert m["policy/clipfrac_high"] == 0.25 and m["policy/clipfrac_low"] == 0.25 and m["policy/clipfrac_dual"] == 0.0
    assert m["policy/ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1 + 4.0) / 4)
    k3 = [x - 1 - math.log(x) for x in (1.5, 0.5, 1.1, 4.0)]
    assert m["policy/approx_kl"] == pytest.approx(sum(k3) / 4)
    assert all(type(v) is float for v in m.values())


def test_ppo_dual_clip(make_inputs):
    inp = _four_cases(make_inputs)
    loss, m = SURROGATES.build("ppo_clip", {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0})(inp)
    assert loss[3, 0].item() == pytest.approx(3.0)
    loss.sum().backward()
    assert torch.allclose(inp.logp_BT.grad.squeeze(1), torch.tensor([0.0, 0.0, -1.1, 0.0], dtype=torch.float64))
    assert m["policy/clipfrac_dual"] == 0.25


def test_ppo_at_ratio_one_has_reinforce_gradient(make_inputs):
    """On-policy (r = 1): grad of -A*r is -A*r*grad logp = -A*grad logp, the REINFORCE gradient."""
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    adv = torch.randn(3, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    grads = []
    for name, params in [("ppo_clip", {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0}), ("reinforce", {})]:
        inp = make_inputs(logp, adv, mask)
        loss, _ = SURROGATES.build(name, params)(inp)
        loss.sum().backward()
        grads.append(inp.logp_BT.grad)
    assert torch.allclose(grads[0], grads[1])


def test_clipped_tokens_get_zero_gradient(make_inputs):
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(8, 6, generator=g, dtype=torch.float64) * 2
    logp = old + torch.randn(8, 6, generator=g, dtype=torch.float64) * 0.5
    adv = torch.randn(8, generator=g, dtype=torch.float64)
    inp = make_inputs(logp, adv, old_logp_BT=old)
    sur = SURROGATES.build("ppo_clip", {"eps_low": 0.2, "eps_high": 0.28})
    loss, m = sur(inp)
    loss.sum().backward()
    r = (logp - old).exp()
    a = adv[:, None].expand_as(r)
    clipped = ((a > 0) & (r > 1.28)) | ((a < 0) & (r < 0.8))
    assert clipped.any() and (~clipped).any()
    assert torch.all(inp.logp_BT.grad[clipped] == 0)
    assert torch.all(inp.logp_BT.grad[~clipped & (a != 0)] != 0)
    assert m["policy/clipfrac_high"] + m["policy/clipfrac_low"] == pytest.approx(clipped.double().mean().item())


def test_log_ratio_is_clamped(make_inputs):
    """A log-ratio of 500 would overflow exp; it is clamped to 20 so loss and metrics stay finite."""
    inp = make_inputs([[0.0, 0.0]], [-1.0], old_logp_BT=[[-500.0, 0.0]])
    loss, m = SURROGATES.build("ppo_clip")(inp)
    assert torch.isfinite(loss).all() and math.isfinite(m["policy/approx_kl"])
    assert loss[0, 0].item() == pytest.approx(math.exp(20.0))


def test_approx_kl_k3_is_nonnegative_and_zero_at_one():
    d = torch.linspace(-3, 3, 13)
    k = approx_kl_k3(d)
    assert torch.all(k >= 0) and float(k[6]) == 0.0


@pytest.mark.parametrize(
    "params,key",
    [({"eps_low": 1.5}, "eps_low"), ({"eps_high": -0.1}, "eps_high"), ({"dual_clip_c": 0.5}, "dual_clip_c")],
)
def test_bad_hyperparameters_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        SURROGATES.build("ppo_clip", params)
