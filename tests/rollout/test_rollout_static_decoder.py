"""``rollout.engine: static`` (``rollout.static_decoder``) on CPU: same contract as the builtin loop.

The CUDA-graph path is the same step function captured once; here it runs eagerly. Checked: greedy
batches identical to the builtin engine's; sampled log-probs/entropies equal the training forward's
(``completion_stats``) on the engine's own samples, top-p and temperature included; EOS bookkeeping
hand-checked on a model whose next-token distribution is exactly uniform; the fallback for
unsupported models; ``generate_from_ids`` on both engines.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from entrolab.models.forward import completion_stats
from entrolab.rollout import sampler, static_decoder
from entrolab.rollout.sampler import encode_prompts, get_engine, get_generate_from_ids
from entrolab.types import Prompt

PROMPTS = [Prompt(id="a", text="12+3="), Prompt(id="b", text="9*(8-1)=xyz"), Prompt(id="c", text="7")]


@pytest.fixture(scope="module")
def eos_lm(tiny_lm):
    """The tiny LM with the EOS row of the head set to 1.1 × the row of ":" (greedy decoding emits
    ":" first for prompt "a" only), so some greedy rows end with EOS and others run to the cap."""
    model, tok = tiny_lm
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.lm_head.weight[tok.eos_token_id] = 1.1 * m.lm_head.weight[tok.convert_tokens_to_ids(":")]
    return m, tok


@pytest.fixture(scope="module")
def qwen_lm(tiny_lm):
    """A 2-layer Qwen2 (GQA, random q/k/v biases) over the char tokenizer, weights scaled up so the
    next-token distributions are far from uniform."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tok = tiny_lm
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.5 + torch.rand(p.shape, generator=g) if "norm" in name else 0.2 * torch.randn(p.shape, generator=g))
    return model.eval(), tok


@pytest.mark.parametrize("batch_size", [None, 4])
def test_static_greedy_batch_is_the_builtin_batch(eos_lm, batch_size):
    model, tok = eos_lm
    kw = dict(group_size=2, max_new_tokens=16, generator=None, greedy=True, temperature=0.7, batch_size=batch_size)
    a = get_engine("builtin")(model, tok, PROMPTS, **kw)
    b = get_engine("static")(model, tok, PROMPTS, **kw)
    assert set(a.stop_reasons) == {"eos", "length"}  # both branches compared
    for field in ("completion_ids_BT", "mask_BT", "prompt_ids_BL", "mask_prompt_BL", "group_id_B"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.texts == b.texts and a.stop_reasons == b.stop_reasons
    torch.testing.assert_close(b.old_logp_BT, a.old_logp_BT, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.entropy_BT, a.entropy_BT, atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_static_sampled_stats_equal_the_training_forward_and_tokens_stay_in_the_nucleus(qwen_lm, temperature, top_p):
    model, tok = qwen_lm
    batch = get_engine("static")(model, tok, PROMPTS, group_size=4, max_new_tokens=12, temperature=temperature,
                                 top_p=top_p, generator=torch.Generator().manual_seed(0))
    m = batch.mask_BT
    fwd = completion_stats(model, batch.prompt_ids_BL, batch.mask_prompt_BL, batch.completion_ids_BT, m,
                           temperature=temperature, need_logits=True)
    assert (fwd.logp_BT - batch.old_logp_BT)[m].abs().max() <= 1e-5
    assert (fwd.entropy_BT - batch.entropy_BT)[m].abs().max() <= 1e-5
    # Nucleus rule of draw.top_p_draw: a token is allowed when the mass of the strictly more likely
    # tokens (ties: earlier ids first) is below top_p.
    p_BTV = fwd.logits_BTV.softmax(-1)
    p_tok_BT = p_BTV.gather(-1, batch.completion_ids_BT.unsqueeze(-1)).squeeze(-1)
    ids_V = torch.arange(p_BTV.shape[-1])
    before_BTV = (p_BTV > p_tok_BT[..., None]) | ((p_BTV == p_tok_BT[..., None])
                                                  & (ids_V < batch.completion_ids_BT[..., None]))
    mass_before_BT = (p_BTV * before_BTV).sum(-1)
    assert (mass_before_BT[m] < top_p + 1e-6).all()
    if top_p < 1:  # the draw is not vacuous: some steps had tokens outside the nucleus to exclude
        assert ((p_BTV.sort(-1, descending=True).values.cumsum(-1) < top_p).sum(-1)[m] < p_BTV.shape[-1] - 1).all()


@pytest.fixture(scope="module")
def uniform_lm():
    """A Llama over 4 ids (0 pad, 1 eos, 2 bos, 3) whose final norm is zero: every logit is 0, so
    each step draws token floor(4u) (cdf 0.25, 0.5, 0.75, 1 is exact in float32) with log-prob
    −log 4 and entropy log 4, whatever the context."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=4, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=0,
                                         eos_token_id=1, bos_token_id=2)).eval()
    with torch.no_grad():
        model.model.norm.weight.zero_()
    return model


def test_static_eos_rows_stop_with_hand_checked_lengths_and_stats(uniform_lm):
    contexts, T = [[2], [2, 3], [2, 3, 3, 3], [2], [2, 3], [2, 3, 3]], 4
    out = get_generate_from_ids("static")(uniform_lm, contexts, pad_id=0, eos_id=1, max_new_tokens=T,
                                          generator=torch.Generator().manual_seed(0), temperature=0.5)
    tokens_nT, logp_nT, entropy_nT, length_n, eos_n = out
    # The engine's randomness contract: u_Tn = torch.rand((T, n)) from the caller's generator.
    u_Tn = torch.rand((T, len(contexts)), generator=torch.Generator().manual_seed(0))
    drawn_nT = (4 * u_Tn).floor().long().T
    for r in range(len(contexts)):
        hits = (drawn_nT[r] == 1).nonzero().flatten().tolist()
        n_valid = hits[0] + 1 if hits else T
        assert int(length_n[r]) == n_valid and bool(eos_n[r]) == bool(hits)
        assert tokens_nT[r, :n_valid].tolist() == drawn_nT[r, :n_valid].tolist()
        assert (tokens_nT[r, n_valid:] == 0).all() and (logp_nT[r, n_valid:] == 0).all()
        torch.testing.assert_close(logp_nT[r, :n_valid], torch.full((n_valid,), -math.log(4)))
        torch.testing.assert_close(entropy_nT[r, :n_valid], torch.full((n_valid,), math.log(4)))
    assert eos_n.any() and not eos_n.all()  # rows of both kinds were checked


def test_static_early_exit_changes_nothing(uniform_lm):
    """Checking "all rows finished" every step or never gives the same outputs (finished rows are
    masked, the unused columns stay pad/0), and the generator advances by T·n either way."""
    contexts, T = [[2], [2, 3], [2, 3, 3]], 64
    runs = []
    for every in (1, T):  # T: the loop never checks
        g = torch.Generator().manual_seed(3)
        out = static_decoder.generate_chunk_static(
            uniform_lm, contexts, torch.arange(3), pad_id=0, eos_id=1, max_new_tokens=T, temperature=1.0,
            top_p=1.0, greedy=False, generator=g, check_every=every)
        runs.append(out + (torch.rand(1, generator=g),))
    assert bool(runs[0][4].all()) and int(runs[0][3].max()) < T // 2  # every row ended early
    for x, y in zip(*runs):
        assert torch.equal(x, y)


def test_static_fused_weights_decode_the_same_greedy_tokens(eos_lm, qwen_lm):
    """The CUDA default (fused q/k/v and gate/up weights) run on CPU: same greedy tokens as the
    builtin loop, stats within 1e-5."""
    for model, tok in (eos_lm, qwen_lm):
        ids = encode_prompts(tok, [p.text for p in PROMPTS])
        kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=12, temperature=0.8,
                  top_p=1.0, greedy=True, generator=None)
        a = static_decoder.generate_chunk_static(model, ids, torch.arange(3), fuse=True, **kw)
        b = sampler._generate_chunk(model, ids, torch.arange(3), **kw)
        for i in (0, 3, 4):
            assert torch.equal(a[i], b[i])
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(a[2], b[2], atol=1e-5, rtol=0)


def test_static_runs_under_inference_mode(eos_lm):
    model, tok = eos_lm
    ids = encode_prompts(tok, [p.text for p in PROMPTS])
    kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=6, greedy=True)
    with torch.inference_mode():
        a = static_decoder.generate_from_ids(model, ids, **kw)
    b = static_decoder.generate_from_ids(model, ids, **kw)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_static_falls_back_to_builtin_once_warned_for_an_unsupported_model(tiny_lm):
    from transformers import LlamaForCausalLM

    model, tok = tiny_lm
    scaled = LlamaForCausalLM(copy.deepcopy(model.config)).eval()
    scaled.config.rope_scaling = {"rope_type": "dynamic", "factor": 2.0}
    scaled.load_state_dict(model.state_dict())
    kw = dict(group_size=2, max_new_tokens=10, temperature=0.9)
    with pytest.warns(UserWarning, match=r"unsupported model \(rope scaling 'dynamic'.*using the builtin loop"):
        a = get_engine("static")(scaled, tok, PROMPTS, generator=torch.Generator().manual_seed(0), **kw)
    b = get_engine("builtin")(scaled, tok, PROMPTS, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a.completion_ids_BT, b.completion_ids_BT) and torch.equal(a.old_logp_BT, b.old_logp_BT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per model class and reason
        ids = encode_prompts(tok, [p.text for p in PROMPTS])
        c = static_decoder.generate_from_ids(scaled, ids, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                                             max_new_tokens=5, greedy=True)
    d = sampler.generate_from_ids(scaled, ids, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                                  max_new_tokens=5, greedy=True)
    assert all(torch.equal(x, y) for x, y in zip(c, d))


@pytest.mark.parametrize("engine", ["builtin", "static"])
def test_generate_from_ids_is_sample_without_groups(eos_lm, engine):
    """One row per context: the rows of a group-1 ``sample`` call on the same prompts."""
    model, tok = eos_lm
    ids = encode_prompts(tok, [p.text for p in PROMPTS])
    tokens_nT, logp_nT, _, length_n, eos_n = get_generate_from_ids(engine)(
        model, ids, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=16, greedy=True)
    batch = get_engine(engine)(model, tok, PROMPTS, group_size=1, max_new_tokens=16, generator=None, greedy=True)
    assert torch.equal(length_n, batch.mask_BT.sum(-1))
    assert eos_n.tolist() == [s == "eos" for s in batch.stop_reasons]
    T = batch.mask_BT.shape[1]
    assert torch.equal(tokens_nT[:, :T].masked_fill(~batch.mask_BT, tok.pad_token_id), batch.completion_ids_BT)
    assert torch.equal(logp_nT[:, :T] * batch.mask_BT, batch.old_logp_BT)


def test_generate_from_ids_engines_agree_and_reject_bad_contexts(eos_lm):
    model, tok = eos_lm
    ids = [[tok.bos_token_id, 5, 6, 7], [tok.bos_token_id], [tok.bos_token_id] + [9] * 11]
    for T in (1, 9):  # T = 1: the prefill's draw only, no decode step
        kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=T, greedy=True)
        a, b = sampler.generate_from_ids(model, ids, **kw), static_decoder.generate_from_ids(model, ids, **kw)
        assert a[0].shape == (3, T)
        for i in (0, 3, 4):
            assert torch.equal(a[i], b[i])
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=0)
    for fn in (sampler.generate_from_ids, static_decoder.generate_from_ids):
        with pytest.raises(ValueError, match="context 1 is empty"):
            fn(model, [[1, 2], []], **kw)
        with pytest.raises(ValueError, match="at least one context"):
            fn(model, [], **kw)
        with pytest.raises(TypeError, match="context 0 must be a list of int"):
            fn(model, [[1, 2.5]], **kw)
        with pytest.raises(ValueError, match="needs a torch.Generator"):
            fn(model, ids, **{**kw, "greedy": False})
    with pytest.raises(ValueError, match="no generate_from_ids; known: \\['builtin', 'static'\\]"):
        get_generate_from_ids("hf")


def test_static_cuda_graphs_need_a_cuda_model(eos_lm):
    model, tok = eos_lm
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA model, this one is on cpu"):
        static_decoder.generate_from_ids(model, [[1, 2]], pad_id=0, eos_id=2, max_new_tokens=3, greedy=True,
                                         cuda_graphs=True)


def test_builtin_on_cpu_keeps_its_own_loop_and_static_dtype_follows_autocast(eos_lm):
    """The CPU builtin engine is the unchanged KV-cache loop (bit-identical CPU runs); the static
    decoder computes in the model's dtype, or the autocast dtype when autocast is on."""
    model, _ = eos_lm
    assert sampler._dispatch_chunk(model) is sampler._generate_chunk
    assert static_decoder.compute_dtype(model, None) == torch.float32
    assert static_decoder.compute_dtype(model, torch.float64) == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert static_decoder.compute_dtype(model, None) == torch.bfloat16


def test_recipe_accepts_the_static_engine():
    from entrolab.config import load_recipe

    recipe = load_recipe({"name": "s", "model": {"path": "x"}, "task": {"name": "countdown"},
                          "rollout": {"engine": "static"}}, [])
    assert recipe.rollout.engine == "static"
