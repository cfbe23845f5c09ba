"""Likelihood rewards: the teacher-forced pass, each form by hand, JEPO, and the SFT term's gradient."""

import math

import pytest
import torch

from entrolab.registry import REWARDS
from entrolab.registry import AGGREGATIONS
from entrolab.rewards.likelihood import (
    continuation_logps,
    likelihood_sft_loss,
    likelihood_values,
    make_logprob_scorer,
    policy_row_weights,
)


class Task:
    name, answer_marker = "t", "#"

    def solutions(self, prompt):
        return ["1+2", "2+1"]


def test_continuation_logps_match_full_forward(tiny_lm):
    """Per-token log-probs of '1+2'+EOS after '<bos>3>3:1+2=3#' equal those read off one unpadded forward;
    batching with a longer pair (right padding) does not change them."""
    model, tok = tiny_lm
    pre, cont = "3>3:1+2=3#", "1+2"
    ids = tok(pre)["input_ids"] + tok(cont, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        p_len = len(tok(pre)["input_ids"])
        ref = torch.stack([logp[t - 1, ids[t]] for t in range(p_len, len(ids))])
        got = continuation_logps(model, tok, [pre, "12 34>5:" * 3], [cont, "1"])
    assert got[0].shape == (4,) and torch.allclose(got[0], ref, atol=1e-5)


def test_forms_hand_values():
    """Two tokens at p = .5: logprob log .25; mean log .5; prob .25; mean_prob .5.
    JEPO, one group with sequence probs .2, .6: R_0 = log(.4/.6), R_1 = log(.4/.2); weights 2·softmax = [.5, 1.5]."""
    half = [torch.log(torch.tensor([0.5, 0.5]))]
    g = torch.tensor([0])
    assert likelihood_values(half, g, form="logprob")[0].item() == pytest.approx(math.log(0.25))
    assert likelihood_values(half, g, form="mean_logprob")[0].item() == pytest.approx(math.log(0.5))
    assert likelihood_values(half, g, form="prob")[0].item() == pytest.approx(0.25)
    assert likelihood_values(half, g, form="mean_prob")[0].item() == pytest.approx(0.5)
    vals, w = likelihood_values([torch.tensor([math.log(0.2)]), torch.tensor([math.log(0.6)])],
                                torch.tensor([0, 0]), form="jepo")
    assert vals.tolist() == pytest.approx([math.log(0.4 / 0.6), math.log(0.4 / 0.2)], abs=1e-6)
    assert [float(x) for x in w] == pytest.approx([0.5, 1.5])
    single, _ = likelihood_values([torch.tensor([-1.0])], torch.tensor([0]), form="jepo")
    assert single.tolist() == [0.0]


@pytest.mark.parametrize("form", ["logprob", "mean_logprob", "prob", "mean_prob"])
def test_sft_term_has_the_reward_gradient(tiny_lm, form):
    """Lemma 1: the explicit term's gradient equals ∇ mean_i R_θ(z_i) computed by autograd."""
    model, tok = tiny_lm
    pre, cont = ["3>3:#", "4>1:1+#"], ["1+2", "3"]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    toks = continuation_logps(model, tok, pre, cont)
    vals = {"logprob": lambda t: t.sum(), "mean_logprob": lambda t: t.mean(), "prob": lambda t: t.sum().exp(),
            "mean_prob": lambda t: t.exp().mean()}[form]
    g_true = grads(-torch.stack([vals(t) for t in toks]).mean())
    toks = continuation_logps(model, tok, pre, cont)
    _, weights = likelihood_values([t.detach() for t in toks], torch.tensor([0, 1]), form=form)
    g_sft = grads(likelihood_sft_loss(toks, weights))
    assert torch.allclose(g_true, g_sft, atol=1e-6)


def test_reward_end_to_end(tiny_lm, make_batch):
    model, tok = tiny_lm
    b = make_batch([0.0, 0.0], [0, 0], lengths=[8, 3], T=8, texts=["1+2=3#2+1", "xy"])
    r = REWARDS.build("likelihood")
    with pytest.raises(ValueError, match="set_scorer"):
        r(b, Task())
    r.set_scorer(make_logprob_scorer(model, tok))
    vals, m = r(b, Task())
    assert b.extras["likelihood/pairs"] == [("prompt 0" + "1+2=3#", "1+2"), ("prompt 0" + "xy#", "1+2")]
    expect = continuation_logps(model, tok, ["prompt 01+2=3#", "prompt 0xy#"], ["1+2", "1+2"])
    assert torch.allclose(vals, torch.stack([t.sum() for t in expect]).detach(), atol=1e-5)
    assert m["likelihood/mean_answer_logp"] == pytest.approx(float(vals.mean()), abs=1e-5)
    b.prompts[0].meta["answer"] = "3"
    assert b.extras["likelihood/pairs"][0][1] == "1+2"
    r(b, Task())
    assert b.extras["likelihood/pairs"][0][1] == "3"


@pytest.mark.parametrize("name,params", [("token_mean", {}), ("seq_mean_token_mean", {}),
                                         ("seq_mean_token_sum", {}), ("constant_norm", {"constant": 4.0})])
def test_item5_sft_row_weights_match_the_policy_loss_for_every_aggregation(name, params):
    """Lemma 1 weighs (R − c)∇log π(z) and ∇R_θ(z) 1:1 per sample. Rows of 2, 5, 3 valid tokens (+ one
    padded row of the micro-batch layout), num_tokens 10, num_seqs 3. The REINFORCE term's weight of
    row i is the aggregation's per-token weight: token_mean 1/10 each; seq_mean_token_mean
    1/(3·|o_i|) = 1/6, 1/15, 1/9; seq_mean_token_sum 1/3; constant_norm(C = 4) 1/12. Read off
    autograd of agg(−A·logp), it equals the SFT row weight c_i the reward uses (before: 1/3 for every
    aggregation, i.e. 10/3 times too strong against token_mean's REINFORCE term)."""
    agg = AGGREGATIONS.build(name, params)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    hand = {"token_mean": [0.1] * 3, "seq_mean_token_mean": [1 / 6, 1 / 15, 1 / 9],
            "seq_mean_token_sum": [1 / 3] * 3, "constant_norm": [1 / 12] * 3}[name]
    c = policy_row_weights(agg, mask, num_tokens=10, num_seqs=3)
    assert c.tolist() == pytest.approx(hand)
    logp = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    agg(-adv[:, None] * logp, mask, num_tokens=10, num_seqs=3).backward()
    for i in range(3):  # ∂loss/∂log π of every CoT token of row i is −A_i·c_i
        assert logp.grad[i][mask[i]].tolist() == pytest.approx([-float(adv[i]) * hand[i]] * int(mask[i].sum()))
    # and the SFT loss puts exactly c_i on row i: d loss / d (Σ_t w log p)_i = −c_i
    tok = [torch.zeros(2, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    likelihood_sft_loss(tok, [torch.ones(2)] * 3, c).backward()
    assert [float(t.grad[0]) for t in tok] == pytest.approx([-h for h in hand])


def test_item5_scores_in_the_context_the_cot_was_sampled_in(tiny_lm):
    """The sampler records the prompt texts it encoded (here a chat-style format, as ``chat_template:
    true`` produces); the reward's scoring prefix is that text + CoT + marker, not the raw prompt."""
    from entrolab.rollout.sampler import sample
    from entrolab.types import Prompt

    model, tok = tiny_lm
    prompts = [Prompt(id="p0", text="3 4>7:", meta={"answer": "3+4"})]
    formatted = ["user: 3 4>7: a:"]
    b = sample(model, tok, prompts, group_size=2, max_new_tokens=6, generator=torch.Generator().manual_seed(0),
               prompt_texts=formatted)
    assert b.extras["prompt_texts"] == formatted
    r = REWARDS.build("likelihood")
    r.set_scorer(make_logprob_scorer(model, tok))
    vals, _ = r(b, Task())
    pre = [formatted[0] + t.split("#", 1)[0] + "#" for t in b.texts]
    assert [p for p, _ in b.extras["likelihood/pairs"]] == pre
    expect = continuation_logps(model, tok, pre, ["3+4"] * 2)
    assert torch.allclose(vals, torch.stack([t.sum() for t in expect]).detach(), atol=1e-5)


def test_item5_reinforces_the_cot_only(tiny_lm, make_batch):
    """Row 0 '1+2=3#2+1' + EOS (10 tokens, char-level): the CoT is '1+2=3' (tokens 0–4); the marker,
    the sampled answer and EOS (5–9) are not reinforced. Row 1 'xy' + EOS has no marker: all of it is
    CoT. ``Components.prepare_batch`` (the trainer's pre-update call) zeroes the other advantages;
    ``reinforce_answer: true`` keeps them."""
    from entrolab.components import Components

    model, tok = tiny_lm
    b = make_batch([0.0, 0.0], [0, 0], lengths=[10, 3], T=10, texts=["1+2=3#2+1", "xy"])
    r = REWARDS.build("likelihood")
    r.set_scorer(make_logprob_scorer(model, tok))
    r(b, Task())
    keep = b.extras["reinforce_mask_BT"]
    assert keep.tolist() == [[True] * 5 + [False] * 5, [True] * 3 + [False] * 7]
    b.adv_BT = torch.tensor([[2.0] * 10, [-1.0] * 3 + [0.0] * 7])
    comps = Components(task=None, reward_terms=[("likelihood", 1.0, r)], shapers=[], normalize_rewards=False,
                       advantage=None, surrogate=None, aggregation=None)
    comps.prepare_batch(b)
    assert b.adv_BT.tolist() == [[2.0] * 5 + [0.0] * 5, [-1.0] * 3 + [0.0] * 7]
    b2 = make_batch([0.0], [0], lengths=[10], T=10, texts=["1+2=3#2+1"])
    r2 = REWARDS.build("likelihood", {"reinforce_answer": True})
    r2.set_scorer(make_logprob_scorer(model, tok))
    r2(b2, Task())
    assert "reinforce_mask_BT" not in b2.extras
