"""SIREN: top-p entropy, per-sequence peak mask, self-anchored squared deviation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.components import Components
from entrolab.models.forward import completion_stats
from entrolab.objectives.siren import peak_entropy_mask, top_p_entropy
from entrolab.policy_update import UpdateSettings, update_policy
from entrolab.registry import AGGREGATIONS, REGULARIZERS, SURROGATES
from entrolab.types import Prompt, RolloutBatch


def _logits(probs):
    return torch.tensor(probs, dtype=torch.float64).log()


def test_top_p_entropy_hand():
    """pi = [0.5, 0.3, 0.2]: cum = [0.5, 0.8, 1.0].
    p = 0.85: nucleus {0.5, 0.3} -> [0.625, 0.375], H = -(0.625 ln 0.625 + 0.375 ln 0.375) = 0.6616.
    p = 0.8: the token reaching 0.8 is excluded -> nucleus {0.5} -> H = 0.
    p = 0.45: top-1 already >= p -> empty nucleus -> H = 0."""
    z = _logits([[[0.5, 0.3, 0.2]]])
    h = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))
    assert top_p_entropy(z, top_p=0.85).item() == pytest.approx(h, abs=1e-6)
    assert top_p_entropy(z, top_p=0.8).item() == pytest.approx(0.0, abs=1e-6)
    assert top_p_entropy(z, top_p=0.45).item() == pytest.approx(0.0, abs=1e-6)
    # top_k truncation: only the 2 most likely are considered
    assert top_p_entropy(z, top_p=1.0, top_k=2).item() == pytest.approx(h, abs=1e-6)


def test_peak_mask_per_sequence():
    """Row [1,2,3,4,5]: 0.8-quantile = 1 + 0.8*4 = 4.2 -> only 5 kept. Row [2, 1, (pad)]: quantile
    1.8 -> only 2 kept. An empty row keeps nothing."""
    h = torch.tensor([[1.0, 2, 3, 4, 5], [2.0, 1, 9, 9, 9], [1.0, 1, 1, 1, 1]])
    mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [0] * 5], dtype=torch.bool)
    assert peak_entropy_mask(h, mask, mask_ratio=0.8).tolist() == [
        [False] * 4 + [True], [True] + [False] * 4, [False] * 5]


def _batch(seed=0, B=3, T=6, V=12):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64)).requires_grad_(True)
    logp = torch.log_softmax(logits, -1)[..., 0]
    return logits, logp


def test_anchor_then_squared_deviation(make_inputs):
    """First call measures H0 (penalty 0); a later call with a fixed anchor H0 - 0.5 gives
    beta*(0.5)^2 on every valid token, and a gradient step on the logits lowers the deviation."""
    logits, logp = _batch()
    inp = make_inputs(logp.detach(), [1.0, 1.0, 1.0], [[1] * 6, [1] * 3 + [0] * 3, [1] * 6], logits_BTV=logits)
    reg = REGULARIZERS.build("siren", {"beta": 0.01, "top_p": 0.9})
    loss, m = reg(inp)
    assert m["entropy/siren_sq_dev"] == 0.0 and reg.state_dict()["anchor"] == m["entropy/siren_topp"]
    h0 = m["entropy/siren_topp"]
    reg.load_state_dict({"anchor": h0 - 0.5})
    loss, m = reg(inp)
    assert m["entropy/siren_sq_dev"] == pytest.approx(0.25)
    assert loss.dim() == 0 and loss.item() == pytest.approx(0.01 * 0.25)  # one batch-level number
    loss.backward()
    with torch.no_grad():
        stepped = (logits - 10.0 * logits.grad).requires_grad_(True)
    _, m2 = reg(make_inputs(logp.detach(), [1.0] * 3, inp.mask_BT, logits_BTV=stepped))
    assert m2["entropy/siren_sq_dev"] < 0.25


def test_needs_logits_with_gradient(make_inputs):
    logits, logp = _batch()
    reg = REGULARIZERS.build("siren")
    with pytest.raises(ValueError, match="logits"):
        reg(make_inputs(logp.detach(), [1.0] * 3))
    with pytest.raises(ValueError, match="gradient"):
        reg(make_inputs(logp.detach(), [1.0] * 3, logits_BTV=logits.detach()))


LENGTHS = [5, 3, 4, 2]


def _lm_batch(tok, seed=0):
    """4 rows (2 groups of 2) of random prompt/completion tokens, lengths LENGTHS, zero advantages
    (so the surrogate contributes no gradient and only the regularizer moves the weights)."""
    g = torch.Generator().manual_seed(seed)
    B, T, V = len(LENGTHS), max(LENGTHS), len(tok)
    mask = torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]
    return RolloutBatch(
        prompts=[Prompt(id="a", text="a"), Prompt(id="b", text="b")], group_id_B=torch.tensor([0, 0, 1, 1]),
        prompt_ids_BL=torch.randint(3, V, (B, 3), generator=g), mask_prompt_BL=torch.ones(B, 3, dtype=torch.bool),
        completion_ids_BT=torch.randint(3, V, (B, T), generator=g) * mask, mask_BT=mask,
        texts=["x"] * B, stop_reasons=["eos"] * B, old_logp_BT=torch.zeros(B, T),
        rewards_B=torch.zeros(B), adv_BT=torch.zeros(B, T))


def _siren_formula(model, batch, rows, *, beta, anchor, top_p):
    """β·(Ĥ − H_0)² written out: Ĥ = (1/|rows|) Σ_b mean_{t ∈ M_b} H^p_bt, M_b the row's tokens above its
    0.8-quantile of H^p."""
    idx = torch.tensor(rows)
    mask = batch.mask_BT[idx]
    fwd = completion_stats(model, batch.prompt_ids_BL[idx], batch.mask_prompt_BL[idx], batch.completion_ids_BT[idx],
                           mask, need_logits=True)
    h = top_p_entropy(fwd.logits_BTV, top_p=top_p)
    sel = peak_entropy_mask(h, mask, mask_ratio=0.8)
    rows_h = [h[b][sel[b]].mean() if sel[b].any() else h.new_zeros(()) for b in range(len(rows))]
    return beta * (torch.stack(rows_h).mean() - anchor) ** 2


@pytest.mark.parametrize("micro", [None, 2])
@pytest.mark.parametrize("agg", AGGREGATIONS.names())
def test_item3_siren_penalty_enters_once_under_every_aggregation(tiny_lm, agg, micro):
    """What the optimizer sees (SGD, lr 1: the step is minus the gradient) equals the gradient of
    β(Ĥ − H_0)² by autograd, under every aggregation: the 0-dim penalty is added after aggregation.
    With two micro-batches of 2 rows each (micro = 2) it is Σ_k (2/4)·β(Ĥ_k − H_0)² (sequence share).
    The old code spread β(Ĥ − H_0)² over the valid tokens, so ``constant_norm`` (constant 48) saw
    β·L̄/48 and ``seq_mean_token_sum`` β·L̄ (L̄ = 3.5 here)."""
    model, tok = tiny_lm
    model = copy.deepcopy(model)
    batch = _lm_batch(tok)
    beta, anchor, top_p = 1.0, 0.5, 0.9
    splits = [[0, 1, 2, 3]] if micro is None else [[0, 1], [2, 3]]
    expected = sum(len(r) / 4 * _siren_formula(model, batch, r, beta=beta, anchor=anchor, top_p=top_p) for r in splits)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(expected, params, allow_unused=True)
    before = [p.detach().clone() for p in params]
    comps = Components(task=None, reward_terms=[], shapers=[], normalize_rewards=False, advantage=None,
                       surrogate=SURROGATES.build("reinforce"), aggregation=AGGREGATIONS.build(agg),
                       regularizers=[REGULARIZERS.build("siren", {"beta": beta, "anchor": anchor, "top_p": top_p})])
    update_policy(model, torch.optim.SGD(params, lr=1.0), comps, batch,
                  UpdateSettings(micro_batch_size=micro, grad_clip=None),
                  generator=torch.Generator().manual_seed(0), requires={"logits"})
    assert expected.item() > 0.01 and max(float(g.abs().max()) for g in grads if g is not None) > 1e-3
    for g, p0, p1 in zip(grads, before, params):
        g = torch.zeros_like(p0) if g is None else g
        torch.testing.assert_close(p0 - p1.detach(), g, rtol=1e-4, atol=2e-6)
