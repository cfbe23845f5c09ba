"""Likelihood rewards: the teacher-forced pass, each form by hand, JEPO, and the SFT term's gradient."""

import math

import pytest
import torch

from entrolab.registry import REWARDS
from entrolab.rewards.likelihood import (
    continuation_logps,
    likelihood_sft_loss,
    likelihood_values,
    make_logprob_scorer,
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
