"""The KV-cache sampler: RolloutBatch layout, EOS semantics, reproducibility, behaviour log-probs,
padding invariance, and the same behaviour on real HF model folders (Llama and GPT-2)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from entrolab.models.forward import completion_stats
from entrolab.models.loading import load_policy
from entrolab.models.tiny import build_tiny_model
from entrolab.models.tokenizer import build_char_tokenizer
from entrolab.rollout.sampler import sample
from entrolab.types import Prompt, RolloutBatch

CHARSET = "abcdefgh0123 >:"
PROMPTS = [Prompt("p0", "ab"), Prompt("p1", "abc 012 hh>"), Prompt("p2", "h"), Prompt("p3", "gg 3>")]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(CHARSET)


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_model("tiny", tok, seed=0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_layout(b: RolloutBatch, tok, P: int, G: int, max_new: int) -> None:
    B = P * G
    assert b.completion_ids_BT.shape[0] == B and b.completion_ids_BT.shape[1] <= max_new
    assert b.group_id_B.tolist() == [i // G for i in range(B)]
    assert b.old_logp_BT.shape == b.entropy_BT.shape == b.mask_BT.shape == b.completion_ids_BT.shape
    for r in range(B):
        n = int(b.mask_BT[r].sum())
        assert b.mask_BT[r, :n].all() and not b.mask_BT[r, n:].any()  # a prefix of valid tokens
        ids = b.completion_ids_BT[r]
        eos_at = (ids[:n] == tok.eos_token_id).nonzero().flatten().tolist()
        if b.stop_reasons[r] == "eos":
            assert eos_at == [n - 1]  # EOS is the last valid token and is inside the mask
        else:
            assert b.stop_reasons[r] == "length" and n == max_new and eos_at == []
        assert (ids[n:] == tok.pad_token_id).all()
        assert (b.old_logp_BT[r, n:] == 0).all() and (b.entropy_BT[r, n:] == 0).all()
        n_text = n - (b.stop_reasons[r] == "eos")
        assert b.texts[r] == tok.decode(ids[:n_text].tolist(), skip_special_tokens=True)
        # The prompt row is the group's prompt, left-padded.
        want = tok(PROMPTS[r // G].text)["input_ids"] if P == len(PROMPTS) else None
        if want is not None:
            assert b.prompt_ids_BL[r, b.mask_prompt_BL[r]].tolist() == want
            assert not b.mask_prompt_BL[r, : b.mask_prompt_BL.shape[1] - len(want)].any()
    assert (b.old_logp_BT[b.mask_BT] <= 0).all() and (b.entropy_BT[b.mask_BT] >= 0).all()


def test_layout_and_eos_semantics(model, tok):
    b = sample(model, tok, PROMPTS, group_size=3, max_new_tokens=12, generator=_gen(0), temperature=1.3)
    _check_layout(b, tok, P=4, G=3, max_new=12)
    assert set(b.stop_reasons) == {"eos", "length"}  # this seed exercises both stop reasons
    assert b.temperature == 1.3 and b.prompts == PROMPTS


def test_same_generator_seed_is_bit_for_bit_repeatable(model, tok):
    kw = dict(group_size=4, max_new_tokens=10, temperature=1.0, top_p=0.9, batch_size=5)
    a = sample(model, tok, PROMPTS, generator=_gen(11), **kw)
    b = sample(model, tok, PROMPTS, generator=_gen(11), **kw)
    c = sample(model, tok, PROMPTS, generator=_gen(12), **kw)
    assert torch.equal(a.completion_ids_BT, b.completion_ids_BT) and a.texts == b.texts
    assert torch.equal(a.old_logp_BT, b.old_logp_BT) and torch.equal(a.entropy_BT, b.entropy_BT)
    assert a.texts != c.texts


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.8), (1.5, 1.0)])
def test_behaviour_logp_equals_full_forward(model, tok, temperature, top_p):
    """old_logp_BT / entropy_BT from the sampling loop == a separate full forward (completion_stats)."""
    b = sample(model, tok, PROMPTS, group_size=3, max_new_tokens=12, generator=_gen(1),
               temperature=temperature, top_p=top_p, batch_size=7)
    with torch.no_grad():
        ref = completion_stats(model, b.prompt_ids_BL, b.mask_prompt_BL, b.completion_ids_BT, b.mask_BT,
                               temperature=temperature)
    m = b.mask_BT
    assert torch.allclose(b.old_logp_BT[m], ref.logp_BT[m], atol=1e-5)
    assert torch.allclose(b.entropy_BT[m], ref.entropy_BT[m], atol=1e-5)


def test_greedy_is_padding_and_chunking_invariant(model, tok):
    """A prompt decoded alone equals the same prompt left-padded inside a batch."""
    together = sample(model, tok, PROMPTS, group_size=1, max_new_tokens=12, generator=None, greedy=True)
    for i, p in enumerate(PROMPTS):
        alone = sample(model, tok, [p], group_size=1, max_new_tokens=12, generator=None, greedy=True)
        n = int(alone.mask_BT[0].sum())
        assert together.completion_ids_BT[i, :n].tolist() == alone.completion_ids_BT[0, :n].tolist()
        assert int(together.mask_BT[i].sum()) == n and together.texts[i] == alone.texts[0]
        assert torch.allclose(together.old_logp_BT[i, :n], alone.old_logp_BT[0, :n], atol=1e-5)
    # Greedy rows of one group are identical, with shared or with separate prefills (batch_size=1).
    g3 = sample(model, tok, PROMPTS, group_size=3, max_new_tokens=12, generator=None, greedy=True)
    g3_sep = sample(model, tok, PROMPTS, group_size=3, max_new_tokens=12, generator=None, greedy=True, batch_size=1)
    assert g3.texts == g3_sep.texts == [t for t in together.texts for _ in range(3)]


def test_tiny_top_p_behaves_like_greedy(model, tok):
    greedy = sample(model, tok, PROMPTS, group_size=2, max_new_tokens=10, generator=None, greedy=True)
    nucleus = sample(model, tok, PROMPTS, group_size=2, max_new_tokens=10, generator=_gen(5), top_p=1e-6)
    assert torch.equal(greedy.completion_ids_BT, nucleus.completion_ids_BT)


def test_chunks_progress_prompt_texts_and_mode_restored(model, tok):
    calls = []
    model.train()
    b = sample(model, tok, PROMPTS[:2], group_size=3, max_new_tokens=5, generator=_gen(0), batch_size=4,
               prompt_texts=["hh", "a"], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 6), (6, 6)]
    assert model.training  # sampling ran in eval mode and restored the caller's mode
    model.eval()
    assert b.prompt_ids_BL[0, b.mask_prompt_BL[0]].tolist() == tok("hh")["input_ids"]
    assert b.prompt_ids_BL[5, b.mask_prompt_BL[5]].tolist() == tok("a")["input_ids"]


def test_bad_arguments_are_clear_errors(model, tok):
    with pytest.raises(ValueError, match="Generator"):
        sample(model, tok, PROMPTS, group_size=2, max_new_tokens=4, generator=None)
    with pytest.raises(ValueError, match="prompt_texts has 1 entries for 4 prompts"):
        sample(model, tok, PROMPTS, group_size=2, max_new_tokens=4, generator=_gen(0), prompt_texts=["a"])
    with pytest.raises(ValueError, match="at least one prompt"):
        sample(model, tok, [], group_size=2, max_new_tokens=4, generator=_gen(0))
    with pytest.raises(ValueError, match="group_size"):
        sample(model, tok, PROMPTS, group_size=0, max_new_tokens=4, generator=_gen(0))


def _real_models(tok):
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                                         eos_token_id=2, initializer_range=0.3))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=1, eos_token_id=2, initializer_range=0.3))
    return {"llama": llama, "gpt2": gpt2}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_real_hf_folder(tmp_path, tok, arch):
    """A random HF model saved with save_pretrained and loaded by load_policy samples correctly.

    The GPT-2 folder's tokenizer has no pad token (as real GPT-2 checkpoints): load_policy pads with EOS.
    """
    torch.manual_seed(0)
    model = _real_models(tok)[arch]
    model.save_pretrained(tmp_path)
    saved_tok = build_char_tokenizer(CHARSET)
    if arch == "gpt2":
        saved_tok.pad_token = None
    saved_tok.save_pretrained(tmp_path)
    model, t = load_policy(tmp_path, device="cpu")
    assert t.pad_token_id == (2 if arch == "gpt2" else 0)
    b = sample(model, t, PROMPTS, group_size=3, max_new_tokens=10, generator=_gen(2), temperature=0.8)
    _check_layout(b, t, P=4, G=3, max_new=10)
    with torch.no_grad():
        ref = completion_stats(model, b.prompt_ids_BL, b.mask_prompt_BL, b.completion_ids_BT, b.mask_BT,
                               temperature=0.8)
    assert torch.allclose(b.old_logp_BT[b.mask_BT], ref.logp_BT[b.mask_BT], atol=1e-5)
    together = sample(model, t, PROMPTS, group_size=1, max_new_tokens=10, generator=None, greedy=True)
    for i, p in enumerate(PROMPTS):
        alone = sample(model, t, [p], group_size=1, max_new_tokens=10, generator=None, greedy=True)
        assert together.texts[i] == alone.texts[0]
