"""SPO (``preference/spo.py``): the degree-variant builder and the degree loss on a tiny real model."""

from __future__ import annotations

import io
import random

import pytest
import torch

from entrolab.preference.api import PairLogps
from entrolab.preference.data import PreferencePair
from entrolab.preference.spo import SPO, degree_variants, response_mean_hidden

RESPONSE = "3+5=8,7*8=56#7*(3+5)"


def test_variants_blank_the_last_units_and_keep_length_and_answer():
    assert degree_variants(RESPONSE, k_max=2) == [RESPONSE, "3+5=8,      #7*(3+5)", "     ,      #7*(3+5)"]
    assert degree_variants(RESPONSE, k_max=1) == [RESPONSE, "3+5=8,      #7*(3+5)"]
    assert degree_variants("1+1=2,2+2=4,4+4=8#x") == \
        ["1+1=2,2+2=4,4+4=8#x", "1+1=2,2+2=4,     #x", "1+1=2,     ,     #x"]  # default k_max = 2


def test_variants_cap_at_the_number_of_content_units():
    """One step → degrees 0, 1 only; blank pieces (",,") are not units; no marker: the whole text;
    no unit at all: only y⁽⁰⁾."""
    assert degree_variants("3+5=8#3+5", k_max=3) == ["3+5=8#3+5", "     #3+5"]
    assert degree_variants("1+2=3,,4*3=12", k_max=5, marker="#") == \
        ["1+2=3,,4*3=12", "1+2=3,,      ", "     ,,      "]
    assert degree_variants("a. b. c", k_max=2, unit_sep=". ", marker=None, filler="_") == \
        ["a. b. c", "a. b. _", "a. _. _"]
    assert degree_variants("#7*(3+5)", k_max=2) == ["#7*(3+5)"]


def test_random_order_is_nested_seeded_and_length_preserving():
    text = "1+1=2,2+2=4,4+4=8,8+8=16#x"
    a = degree_variants(text, k_max=3, rng=random.Random(5))
    assert a == degree_variants(text, k_max=3, rng=random.Random(5))
    assert len(a) == 4 and all(len(v) == len(text) for v in a) and all(v.endswith("#x") for v in a)
    blanked = [{i for i, u in enumerate(v.split("#")[0].split(",")) if not u.strip()} for v in a]
    assert [len(b) for b in blanked] == [0, 1, 2, 3]
    assert blanked[1] < blanked[2] < blanked[3]  # each degree removes one more unit


def test_filler_must_be_one_character():
    with pytest.raises(ValueError, match="filler"):
        degree_variants(RESPONSE, filler="ab")
    with pytest.raises(ValueError, match="filler"):
        SPO(filler="")


def test_response_mean_hidden_is_the_mean_over_response_tokens(tiny_lm):
    """Batched (right-padded, two lengths) equals one sequence at a time, and equals the mean of the
    last hidden state over the response (+ EOS) positions computed by hand."""
    model, tok = tiny_lm
    prompts, responses = ["3 5 7>56:", "1 2>3:"], [RESPONSE, "1+2=3#1+2"]
    with torch.no_grad():
        batched = response_mean_hidden(model, tok, prompts, responses, "cpu")
        for i, (p, r) in enumerate(zip(prompts, responses)):
            one = response_mean_hidden(model, tok, [p], [r], "cpu")
            assert torch.allclose(batched[i], one[0], atol=1e-5)
        p_ids = tok(prompts[0])["input_ids"]
        r_ids = tok(responses[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        hs = model(input_ids=torch.tensor([p_ids + r_ids]), output_hidden_states=True).hidden_states[-1][0]
        assert torch.allclose(batched[0], hs[len(p_ids):].mean(0), atol=1e-5)


def _pairs():
    return [PreferencePair("3 5 7>56:", RESPONSE, "3+5=8#3+5"), PreferencePair("1 2>3:", "1+2=3#1+2", "#12")]


def test_extra_loss_is_weighted_cross_entropy_on_the_head(tiny_lm):
    """Pair 1: chosen has 2 units (degrees 0, 1, 2), rejected 1 (degrees 0, 1); pair 2: chosen 1 unit
    (0, 1), rejected none (skipped) → 7 examples. The loss is weight·CE(head(mean hidden), degree)."""
    model, tok = tiny_lm
    spo = SPO(weight=0.5, k_max=2, seed=3)
    spo.bind_policy(model, tok)
    assert [tuple(p.shape) for p in spo.extra_parameters()] == [(3, 16), (3,)]
    spo.rng = None  # deterministic unit order (last units first) for the hand-built expectation
    loss, m = spo.extra_loss(model=model, tokenizer=tok, pairs=_pairs(), device="cpu")
    assert m["spo/degree_examples"] == 7.0
    texts = [RESPONSE, "3+5=8,      #7*(3+5)", "     ,      #7*(3+5)", "3+5=8#3+5", "     #3+5",
             "1+2=3#1+2", "     #1+2"]
    prompts = ["3 5 7>56:"] * 5 + ["1 2>3:"] * 2
    logits = spo.head(response_mean_hidden(model, tok, prompts, texts, "cpu"))
    expected = 0.5 * torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1, 0, 1]))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert m["spo/degree_loss"] == pytest.approx(expected.item() / 0.5, abs=1e-6)
    with torch.no_grad():  # every variant classified 0: accuracy = share of degree 0 = 3/7
        spo.head.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
    assert spo.extra_loss(model=model, tokenizer=tok, pairs=_pairs(), device="cpu")[1]["spo/degree_acc"] == \
        pytest.approx(3 / 7)
    params = list(model.parameters()) + spo.extra_parameters()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads[-2:])  # the head learns
    assert any(g is not None and g.abs().sum() > 0 for g in grads[:-2])  # and the policy does too


def test_a_few_steps_reduce_the_degree_loss(tiny_lm):
    """The signal is learnable: 40 Adam steps on one batch (a copy of the tiny model) cut the CE."""
    import copy

    model, tok = tiny_lm
    model = copy.deepcopy(model).train()
    spo = SPO(weight=1.0, k_max=2, seed=0)
    spo.bind_policy(model, tok)
    opt = torch.optim.Adam(list(model.parameters()) + spo.extra_parameters(), lr=1e-2)
    losses = []
    torch.manual_seed(0)
    for _ in range(40):
        spo.rng = None
        loss, _ = spo.extra_loss(model=model, tokenizer=tok, pairs=_pairs(), device="cpu")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_no_content_units_gives_a_zero_loss_attached_to_the_head(tiny_lm):
    model, tok = tiny_lm
    spo = SPO()
    spo.bind_policy(model, tok)
    loss, m = spo.extra_loss(model=model, tokenizer=tok, pairs=[PreferencePair("1 2>3:", "#1+2", "#12")], device="cpu")
    assert loss.item() == 0.0 and loss.requires_grad and m == {"spo/degree_examples": 0.0}


def test_alignment_part_is_the_base_loss_and_reference_need_follows_it():
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    lp = PairLogps(chosen_B=t([-1.0]), rejected_B=t([-2.0]), ref_chosen_B=t([-3.0]), ref_rejected_B=t([-1.0]),
                   len_chosen_B=t([1.0]), len_rejected_B=t([1.0]), label_B=t([1.0]), index_B=torch.tensor([0]))
    from entrolab.preference.losses import DPO

    assert torch.equal(SPO()(lp)[0], DPO(beta=0.1)(lp)[0]) and SPO().requires_reference is True
    assert torch.equal(SPO(base={"name": "dpo", "beta": 0.5})(lp)[0], DPO(beta=0.5)(lp)[0])
    assert SPO(base={"name": "cpl", "lam": 0.5}).requires_reference is False


def test_bad_base_and_unbound_head_are_clear_errors(tiny_lm):
    with pytest.raises(ValueError, match="loss.base"):
        SPO(base={"name": "dpo", "betta": 0.1})
    with pytest.raises(ValueError, match="itself"):
        SPO(base={"name": "spo"})
    with pytest.raises(ValueError, match="'name'"):
        SPO(base={"beta": 0.1})
    with pytest.raises(RuntimeError, match="bind_policy"):
        SPO().extra_parameters()


def test_state_round_trip_restores_head_rng_and_base_state(tiny_lm):
    """Save after one extra_loss call; a fresh SPO loaded *before* bind_policy (the head waits) draws
    the same next unit order and has the same head; a base power_dl's labels come along."""
    model, tok = tiny_lm
    a = SPO(base={"name": "power_dl"}, seed=1)
    a.bind_policy(model, tok)
    with torch.no_grad():
        a.head.weight.add_(1.0)
        a.extra_loss(model=model, tokenizer=tok, pairs=_pairs(), device="cpu")
    a.base.labels = {4: 0.75}
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = SPO(base={"name": "power_dl"}, seed=1)
    b.load_state_dict(torch.load(buf, weights_only=True))
    b.bind_policy(model, tok)
    assert torch.equal(a.head.weight, b.head.weight) and b.base.labels == {4: 0.75}
    assert a.rng.random() == b.rng.random()


def test_loading_a_head_of_another_size_names_the_shapes(tiny_lm):
    model, tok = tiny_lm
    a = SPO(k_max=3)
    a.bind_policy(model, tok)
    b = SPO(k_max=2)
    b.bind_policy(model, tok)
    with pytest.raises(ValueError, match="k_max or the model's hidden size changed"):
        b.load_state_dict(a.state_dict())


def test_extra_loss_uses_the_components_settings_and_seeded_rng(tiny_lm):
    """k_max = 1, unit_sep ';', marker '|', filler '_', seed 1: the variants are exactly those
    degree_variants draws with random.Random(1) in the order chosen, rejected of each pair (seed 1
    blanks the *first* step, unlike the unseeded last-first order); a response without units (first
    here) is skipped without ending the pair's loop. With the head's bias at (5, 0) every variant is
    classified 0, so the accuracy is the share of degree-0 variants, ½."""
    model, tok = tiny_lm
    pairs = [PreferencePair("1 2>3:", "|12", "1+2=3;3*1=3|x"), PreferencePair("3 5>8:", "3+5=8|y", "|z")]
    spo = SPO(weight=1.0, k_max=1, unit_sep=";", marker="|", filler="_", seed=1)
    spo.bind_policy(model, tok)
    with torch.no_grad():
        spo.head.bias.copy_(torch.tensor([5.0, 0.0]))
    loss, m = spo.extra_loss(model=model, tokenizer=tok, pairs=pairs, device="cpu")
    rng, prompts, texts, degrees = random.Random(1), [], [], []
    for p in pairs:
        for r in (p.chosen, p.rejected):
            v = degree_variants(r, k_max=1, unit_sep=";", marker="|", filler="_", rng=rng)
            if len(v) > 1:
                prompts += [p.prompt] * len(v)
                texts += v
                degrees += range(len(v))
    assert m["spo/degree_examples"] == len(texts) == 4
    assert texts[1] == "_____;3*1=3|x" and texts[3] == "_____|y"
    with torch.no_grad():
        logits = spo.head(response_mean_hidden(model, tok, prompts, texts, "cpu"))
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(degrees))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert (logits.argmax(-1) == 0).all() and m["spo/degree_acc"] == 0.5


def test_random_order_is_not_always_last_first():
    """Seed 1 removes a unit other than the last at degree 1 (the RNG is actually used)."""
    text = "1+1=2,2+2=4,4+4=8#x"
    drawn = {degree_variants(text, k_max=1, rng=random.Random(s))[1] for s in range(6)}
    assert len(drawn) > 1 and degree_variants(text, k_max=1)[1] == "1+1=2,2+2=4,     #x"


def test_head_init_is_seeded_and_uniform_in_the_fan_in_bound(tiny_lm):
    """Linear's default range ±1/√hidden = ±0.25 (hidden 16), drawn from the seed: two binds with one
    seed agree, another seed differs; the bias starts at 0."""
    model, tok = tiny_lm
    heads = []
    for seed in (3, 3, 4):
        s = SPO(seed=seed)
        s.bind_policy(model, tok)
        heads.append(s.head)
    w = heads[0].weight
    assert torch.equal(w, heads[1].weight) and not torch.equal(w, heads[2].weight)
    assert w.abs().max() <= 0.25 and w.min() < 0 < w.max() and w.std() > 0.05
    assert torch.equal(heads[0].bias, torch.zeros(3))
    assert SPO(seed=5).rng.random() == random.Random(5).random()


def test_hyperparameter_ranges_and_messages():
    d = SPO()  # the defaults docs/methods/spo.md states
    assert (d.weight, d.k_max, d.unit_sep, d.marker, d.filler) == (0.1, 2, ",", "#", " ")
    SPO(weight=0.0)
    SPO(k_max=1)
    SPO(k_max=16)
    for kwargs, message in (({"k_max": 17}, "spo: k_max must be in [1, 16] (units removed at most), got 17"),
                            ({"k_max": 0}, "spo: k_max must be in [1, 16] (units removed at most), got 0"),
                            ({"unit_sep": ""}, "spo: unit_sep must be a non-empty string"),
                            ({"weight": -0.5}, "spo: weight must be >= 0, got -0.5"),
                            ({"base": {"name": "spo"}}, "spo: base cannot be 'spo' itself")):
        with pytest.raises(ValueError) as err:
            SPO(**kwargs)
        assert str(err.value) == message
    with pytest.raises(ValueError, match=r"'loss\.base\.betta'"):
        SPO(base={"name": "dpo", "betta": 0.1})


def test_unbound_errors_say_what_to_call(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(RuntimeError) as err:
        SPO().extra_parameters()
    assert str(err.value) == ("spo: call bind_policy(model, tokenizer) before extra_parameters(): the degree "
                              "classifier's input size is the policy's hidden size")
    with pytest.raises(RuntimeError) as err:
        SPO().extra_loss(model=model, tokenizer=tok, pairs=_pairs(), device="cpu")
    assert str(err.value) == "spo: call bind_policy(model, tokenizer) before extra_loss()"


def test_a_state_without_base_entry_loads():
    """A checkpoint written with a stateless base (no 'base' key) loads into a stateful one."""
    s = SPO(base={"name": "power_dl"})
    s.base.labels = {1: 0.5}
    s.load_state_dict({"rng": random.Random(2).getstate()})
    assert s.base.labels == {1: 0.5} and s.rng.random() == random.Random(2).random()
