"""``rollout.engine``: the builtin KV-cache loop and the ``model.generate`` reference agree.

Greedy decoding is deterministic, so the two engines must return the same tokens, masks, texts,
stop reasons and (up to float rounding) behaviour log-probs/entropies. Sampled batches differ in
their tokens (different random streams) but must obey the same contract.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from entrolab.rollout.draw import logp_and_entropy
from entrolab.rollout.sampler import get_engine
from entrolab.types import Prompt

PROMPTS = [Prompt(id="a", text="12+3="), Prompt(id="b", text="9*(8-1)=xyz"), Prompt(id="c", text="7")]


@pytest.fixture(scope="module")
def eos_lm(tiny_lm):
    """The tiny LM with the EOS output row set to 1.1 × the row of ":" (which greedy decoding emits first
    for prompt "a" only), so some greedy rows end with EOS and others run to the cap."""
    model, tok = tiny_lm
    m = copy.deepcopy(model)
    with torch.no_grad():
        w = m.lm_head.weight
        w[tok.eos_token_id] = 1.1 * w[tok.convert_tokens_to_ids(":")]
    return m, tok


def _greedy(name, model, tok, **kw):
    return get_engine(name)(model, tok, PROMPTS, group_size=2, max_new_tokens=16, generator=None, greedy=True,
                            temperature=0.7, **kw)


def test_greedy_engines_return_identical_batches(eos_lm):
    model, tok = eos_lm
    a, b = _greedy("builtin", model, tok), _greedy("hf", model, tok)
    # Some rows stop at EOS and some run to the cap, so both branches are compared.
    assert set(a.stop_reasons) == {"eos", "length"}
    assert torch.equal(a.completion_ids_BT, b.completion_ids_BT)
    assert torch.equal(a.mask_BT, b.mask_BT)
    assert a.texts == b.texts and a.stop_reasons == b.stop_reasons
    assert torch.equal(a.prompt_ids_BL, b.prompt_ids_BL) and torch.equal(a.mask_prompt_BL, b.mask_prompt_BL)
    assert torch.equal(a.group_id_B, b.group_id_B)
    torch.testing.assert_close(b.old_logp_BT, a.old_logp_BT, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.entropy_BT, a.entropy_BT, atol=1e-5, rtol=0)


def test_greedy_hf_chunks_match_one_call(eos_lm):
    model, tok = eos_lm
    whole, chunked = _greedy("hf", model, tok), _greedy("hf", model, tok, batch_size=4)
    assert torch.equal(whole.completion_ids_BT, chunked.completion_ids_BT)
    assert torch.equal(whole.mask_BT, chunked.mask_BT)


def _check_contract(batch, tok, *, B, max_new_tokens):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    length_B = batch.mask_BT.sum(-1)
    assert batch.completion_ids_BT.shape == batch.mask_BT.shape == batch.old_logp_BT.shape
    assert batch.completion_ids_BT.shape[0] == B and batch.completion_ids_BT.shape[1] == int(length_B.max())
    for b in range(B):
        n = int(length_B[b])
        assert batch.mask_BT[b, :n].all() and not batch.mask_BT[b, n:].any()  # a prefix mask
        row = batch.completion_ids_BT[b]
        assert (row[n:] == pad).all() and (batch.old_logp_BT[b, n:] == 0).all()
        assert (row[: n - 1] != eos).all()  # nothing is generated after an EOS
        if batch.stop_reasons[b] == "eos":
            assert row[n - 1] == eos
        else:
            assert n == max_new_tokens and row[n - 1] != eos
        assert batch.texts[b] == tok.decode(row[: n - (batch.stop_reasons[b] == "eos")].tolist(),
                                            skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert (batch.old_logp_BT[batch.mask_BT] <= 0).all()


def test_sampled_batches_obey_the_same_contract(eos_lm):
    model, tok = eos_lm
    out = {}
    for name in ("builtin", "hf"):
        g = torch.Generator().manual_seed(5)
        out[name] = get_engine(name)(model, tok, PROMPTS, group_size=4, max_new_tokens=20, generator=g,
                                     temperature=1.3, top_p=0.9)
        _check_contract(out[name], tok, B=12, max_new_tokens=20)
    assert {"eos", "length"} <= set(out["hf"].stop_reasons)


def test_hf_sampled_logp_is_of_the_drawn_token(eos_lm):
    """The recorded log-probs are log softmax(logits / τ) at the drawn token: re-score the batch
    with one full forward and compare (the recorder must not be off by one step)."""
    model, tok = eos_lm
    g = torch.Generator().manual_seed(1)
    batch = get_engine("hf")(model, tok, PROMPTS, group_size=2, max_new_tokens=10, generator=g, temperature=1.3)
    ids = torch.cat([batch.prompt_ids_BL, batch.completion_ids_BT], 1)
    mask = torch.cat([batch.mask_prompt_BL, batch.mask_BT], 1)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long(), position_ids=pos).logits
    L, T = batch.prompt_ids_BL.shape[1], batch.completion_ids_BT.shape[1]
    logp_BTV, _ = logp_and_entropy(logits[:, L - 1: L - 1 + T].reshape(-1, logits.shape[-1]), temperature=1.3)
    want = logp_BTV.gather(-1, batch.completion_ids_BT.reshape(-1, 1)).view(-1, T).masked_fill(~batch.mask_BT, 0)
    torch.testing.assert_close(batch.old_logp_BT, want, atol=1e-5, rtol=0)


def test_hf_sampling_repeats_with_the_generator_and_keeps_global_rng(eos_lm):
    model, tok = eos_lm
    state = torch.get_rng_state()
    runs = [get_engine("hf")(model, tok, PROMPTS, group_size=2, max_new_tokens=12,
                             generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(runs[0].completion_ids_BT, runs[1].completion_ids_BT)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is untouched


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="unknown rollout.engine 'vllm'"):
        get_engine("vllm")


class DigitShare:
    """Fraction of digit characters per completion: a dense reward, so advantages are non-zero."""

    def __call__(self, batch, task):
        return torch.tensor([sum(c.isdigit() for c in t) / max(1, len(t)) for t in batch.texts]), {}


def test_trainer_samples_and_trains_with_the_hf_engine(tmp_path):
    from entrolab.config import load_recipe
    from entrolab.rollout.hf_engine import sample_hf
    from entrolab.trainer import Trainer

    data = {"name": "hf", "seed": 3, "run_dir": str(tmp_path / "hf"), "model": {"testbed_size": "tiny"},
            "task": {"name": "countdown", "n_train": 16, "n_validation": 4, "n_test": 4},
            "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8, "engine": "hf"},
            "rewards": {"terms": [{"name": "test_rollout_engines:DigitShare"}]}, "optim": {"lr": 1e-2}, "train": {"steps": 1, "save_every": 0},
            "eval": {"num_prompts": 2, "n_samples": 2}}
    with pytest.raises(ValueError, match="engine"):
        load_recipe({**data, "rollout": {**data["rollout"], "engine": "vllm"}}, [])
    tr = Trainer(load_recipe(data, []), progress=False)
    # The trainer's rollout is exactly the hf engine's batch for the same generator state.
    g = torch.Generator(device=tr.generator.device)
    g.set_state(tr.generator.get_state())
    prompts = tr.train_prompts[:2]
    got = tr._sample(prompts, temperature=1.0, group_size=4)
    want = sample_hf(tr.model, tr.tokenizer, prompts, group_size=4, max_new_tokens=8, generator=g,
                     prompt_texts=got.extras["prompt_texts"])
    assert torch.equal(got.completion_ids_BT, want.completion_ids_BT)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    metrics = tr.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values() if isinstance(v, float))
    assert metrics["time/tokens_per_s"] > 0
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert json.loads(json.dumps(tr.recipe.model_dump()))["rollout"]["engine"] == "hf"


def _ranks_of_drawn_tokens(model, batch):
    """Rank (0 = most likely) of each drawn token among the step's logits, over valid tokens."""
    ids = torch.cat([batch.prompt_ids_BL, batch.completion_ids_BT], 1)
    mask = torch.cat([batch.mask_prompt_BL, batch.mask_BT], 1)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long(), position_ids=pos).logits
    L, T = batch.prompt_ids_BL.shape[1], batch.completion_ids_BT.shape[1]
    step_BTV = logits[:, L - 1: L - 1 + T]
    drawn_BT1 = step_BTV.gather(-1, batch.completion_ids_BT.unsqueeze(-1))
    return (step_BTV > drawn_BT1).sum(-1)[batch.mask_BT]


def test_hf_engine_keeps_the_whole_vocabulary(tiny_lm):
    """HF fills unset options with its global defaults, top_k = 50 among them; the tiny vocabulary has
    52 tokens, so at a near-uniform temperature the 2 least likely tokens of a step must still be drawn
    (about 2/52 of ~1,000 draws), as the builtin engine draws them."""
    model, tok = tiny_lm
    assert model.config.vocab_size > 50
    batch = get_engine("hf")(model, tok, PROMPTS, group_size=8, max_new_tokens=60,
                             generator=torch.Generator().manual_seed(2), temperature=100.0)
    ranks = _ranks_of_drawn_tokens(model, batch)
    assert ranks.numel() > 500
    assert (ranks >= 50).sum() > 5


def test_hf_engine_ignores_the_models_generation_defaults(eos_lm):
    """A checkpoint's generation_config.json (repetition penalty, n-gram blocking, top-k, sampling)
    must not change what the hf engine does: greedy stays the builtin's greedy."""
    model, tok = eos_lm
    m = copy.deepcopy(model)
    m.generation_config.update(repetition_penalty=3.0, no_repeat_ngram_size=2, top_k=1, do_sample=True,
                               temperature=0.1)
    a, b = _greedy("builtin", model, tok), _greedy("hf", m, tok)
    assert torch.equal(a.completion_ids_BT, b.completion_ids_BT)
    assert m.generation_config.repetition_penalty == 3.0  # the model's own config is left as it was


def test_hf_engine_ignores_the_generation_defaults_under_lora(eos_lm):
    """The same through a peft LoRA wrapper (adapters at init are a no-op on the outputs)."""
    pytest.importorskip("peft")
    from entrolab.models.loading import apply_lora

    model, tok = eos_lm
    m = copy.deepcopy(model)
    m.generation_config.update(repetition_penalty=3.0, no_repeat_ngram_size=2)
    m = apply_lora(m, r=2)
    a, b = _greedy("builtin", model, tok), _greedy("hf", m, tok)
    assert torch.equal(a.completion_ids_BT, b.completion_ids_BT)
