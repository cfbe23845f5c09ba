"""GSPO and CISPO: hand values and the sequence-level identity of GSPO-token."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.registry import AGGREGATIONS, SURROGATES


def test_gspo_ratio_is_geometric_mean_and_clips(make_inputs):
    """delta = [0.2, -0.1] -> s = exp(0.05) = 1.0513 > 1 + 4e-4: with A = +1 the sequence is clipped:
    every token's loss is -(1 + 4e-4) and gets no gradient; clipfrac_high = 1."""
    inp = make_inputs([[0.2, -0.1]], [1.0], old_logp_BT=[[0.0, 0.0]])
    loss, m = SURROGATES.build("gspo")(inp)
    assert loss.tolist()[0] == pytest.approx([-(1 + 4e-4)] * 2)
    loss.sum().backward()
    assert inp.logp_BT.grad.abs().sum().item() == 0.0
    assert m["policy/clipfrac_high"] == 1.0 and m["policy/seq_ratio_mean"] == pytest.approx(math.exp(0.05))


def test_gspo_token_with_seq_mean_equals_sequence_objective(make_inputs):
    """Unclipped (wide eps), GSPO-token aggregated by seq_mean_token_mean has the gradient of
    (1/B) sum_i -A_i * s_i with s_i = exp(mean_t delta_it), ragged lengths included."""
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 4, generator=g, dtype=torch.float64)
    logp = old + 0.1 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    inp = make_inputs(logp, adv, mask, old_logp_BT=old)
    loss_BT, _ = SURROGATES.build("gspo", {"eps_low": 0.9, "eps_high": 5.0})(inp)
    agg = AGGREGATIONS.build("seq_mean_token_mean")
    agg(loss_BT, mask, num_tokens=int(mask.sum()), num_seqs=3).backward()

    lp = logp.clone().requires_grad_(True)
    s = torch.exp(((lp - old) * mask).sum(-1) / mask.sum(-1))
    (-(adv * s).mean()).backward()
    assert torch.allclose(inp.logp_BT.grad, lp.grad * mask)


def test_cispo_hand_values(make_inputs):
    """r = [0.5, 1.5, 7] (old = 0), A = 1, cap 1 + 4 = 5: weights [0.5, 1.5, 5] (detached);
    loss = -w * A * logp, grad = -w; one of three tokens clipped from above."""
    logp = [[math.log(0.5), math.log(1.5), math.log(7.0)]]
    inp = make_inputs(logp, [1.0], old_logp_BT=[[0.0, 0.0, 0.0]])
    loss, m = SURROGATES.build("cispo")(inp)
    assert loss.tolist()[0] == pytest.approx([-0.5 * logp[0][0], -1.5 * logp[0][1], -5.0 * logp[0][2]])
    loss.sum().backward()
    assert inp.logp_BT.grad.tolist()[0] == pytest.approx([-0.5, -1.5, -5.0])
    assert m["policy/clipfrac_high"] == pytest.approx(1 / 3) and m["policy/clipfrac_low"] == 0.0


def test_cispo_on_policy_is_reinforce(make_inputs):
    g = torch.Generator().manual_seed(3)
    logp = -torch.rand(2, 3, generator=g, dtype=torch.float64)
    adv = torch.randn(2, generator=g, dtype=torch.float64)
    grads = []
    for name in ("cispo", "reinforce"):
        inp = make_inputs(logp, adv)
        loss, _ = SURROGATES.build(name)(inp)
        loss.sum().backward()
        grads.append(inp.logp_BT.grad)
    assert torch.allclose(grads[0], grads[1])
