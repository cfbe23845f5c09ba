"""``rollout.static_model``: our Llama-family forward over a static KV cache reproduces HF's logits.

Each architecture is built in code with random weights large enough that logits spread over several
units (HF's init would give logits ≈ 0 and make any comparison vacuous), biases included where the
config has them. Prefill is compared at every real position of left-padded prompts, then five
decode steps (fed fixed tokens) against HF's full forward on the grown sequences.
"""

from __future__ import annotations

import pytest
import torch

from entrolab.rollout.sampler import left_pad
from entrolab.rollout.static_model import DecoderWeights, decode_forward, logits, prefill, static_support

CONTEXTS = [[2, 5, 6, 7, 9], [2, 11], [2, 3, 4, 5, 6, 7, 8, 12], [2]]


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights ~ N(0, 0.3²) (biases too), norm scales ~ U(0.5, 1.5): logits with std of a few units."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def build(kind: str) -> torch.nn.Module:
    """Tiny models of each supported family: MHA with an untied head, GQA with attention and MLP
    biases and a tied head, Qwen2 (q/k/v biases, GQA), Mistral without a sliding window."""
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    common = dict(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=4, tie_word_embeddings=False))
    elif kind == "llama_gqa_bias":
        model = LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=1, attention_bias=True, mlp_bias=True,
                                             tie_word_embeddings=True))
    elif kind == "llama3_rope":  # Llama 3.x's frequency-dependent RoPE scaling
        rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16, "rope_theta": 500000.0}
        model = LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=2, rope_parameters=rope))
        default = 1.0 / (500000.0 ** (torch.arange(0, 8, 2).float() / 8))  # head_dim 8
        assert not torch.allclose(model.model.rotary_emb.inv_freq, default)  # the scaling is not vacuous
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=True))
    else:
        model = MistralForCausalLM(MistralConfig(**common, num_key_value_heads=2, sliding_window=None))
    return randomize(model)


def _hf_logits(model, ids_BL, mask_BL):
    pos_BL = (mask_BL.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids_BL, attention_mask=mask_BL.long(), position_ids=pos_BL).logits


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("kind", ["llama", "llama_gqa_bias", "llama3_rope", "qwen2", "mistral"])
@torch.no_grad()
def test_static_forward_matches_hf_logits_prefill_and_5_decode_steps(kind, fuse):
    """Separate weights (CPU default, no copies) and fused q/k/v, gate/up (CUDA default) alike."""
    model = build(kind)
    assert static_support(model) is None
    W = DecoderWeights.from_model(model, fuse=fuse)
    assert ("qkv_proj" in W.layers[0]) == fuse
    ids_BL, mask_BL = left_pad(CONTEXTS, 0)
    B, L = ids_BL.shape
    h_BLD, kv = prefill(W, ids_BL, mask_BL)
    ref_BLV = _hf_logits(model, ids_BL, mask_BL)
    assert ref_BLV[mask_BL].std() > 1.0  # the comparison is not between two near-zero tensors
    assert (logits(W, h_BLD) - ref_BLV)[mask_BL].abs().max() <= 1e-5

    slots = L + 5 + 3  # spare slots stay invalid and must not be attended
    cache = W.new_cache(B, slots)
    for (kc, vc), (k, v) in zip(cache, kv):
        kc[:, :, :L], vc[:, :, :L] = k, v
    valid_BS = torch.zeros(B, slots, dtype=torch.bool)
    valid_BS[:, :L] = mask_BL
    pos_B = mask_BL.sum(-1)
    g = torch.Generator().manual_seed(1)
    for t in range(5):
        tok_B = torch.randint(3, 40, (B,), generator=g)
        ours_BV = decode_forward(W, tok_B, pos_B, torch.tensor([L + t]), valid_BS, cache)
        ids_BL = torch.cat([ids_BL, tok_B[:, None]], 1)
        mask_BL = torch.cat([mask_BL, torch.ones(B, 1, dtype=torch.bool)], 1)
        ref_BV = _hf_logits(model, ids_BL, mask_BL)[:, -1]
        assert (ours_BV - ref_BV).abs().max() <= 1e-5, t
        pos_B = pos_B + 1
    assert valid_BS[:, L:L + 5].all() and not valid_BS[:, L + 5:].any()


def test_static_weights_are_the_models_tensors_without_copies():
    """fp32 on CPU reads the model's own storage (a training step is seen by the next rollout);
    another dtype makes one copy."""
    model = build("qwen2")
    W = DecoderWeights.from_model(model)
    assert W.embed.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert W.layers[1]["q_proj"][1].data_ptr() == model.model.layers[1].self_attn.q_proj.bias.data_ptr()
    assert W.head[0].data_ptr() == model.lm_head.weight.data_ptr()
    assert W.layers[0]["o_proj"][1] is None  # Qwen2's o_proj has no bias
    Wb = DecoderWeights.from_model(model, torch.bfloat16)
    assert Wb.dtype == torch.bfloat16 and Wb.embed.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_static_support_names_the_reason_for_unsupported_models():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig
    from transformers import MistralForCausalLM

    common = dict(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=1, n_head=4))
    assert "GPT2LMHeadModel" in static_support(gpt2)
    scaled = LlamaForCausalLM(LlamaConfig(**common, rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    assert "rope scaling 'dynamic' (only default, linear, llama3)" in static_support(scaled)
    sliding = MistralForCausalLM(MistralConfig(**common, sliding_window=8))
    assert "sliding-window" in static_support(sliding)
    gelu = LlamaForCausalLM(LlamaConfig(**common, hidden_act="gelu"))
    assert "hidden_act 'gelu'" in static_support(gelu)
    hooked = LlamaForCausalLM(LlamaConfig(**common))
    hooked(input_ids=torch.tensor([[1, 2]]), output_hidden_states=True)  # transformers' inert capture hooks
    assert static_support(hooked) is None
    from entrolab.models.loading import enable_activation_checkpointing

    checkpointed = LlamaForCausalLM(LlamaConfig(**common))
    enable_activation_checkpointing(checkpointed)  # puts enable_input_require_grads' hook on the embeddings
    assert checkpointed.model.embed_tokens._forward_hooks and static_support(checkpointed) is None
    checkpointed_other = LlamaForCausalLM(LlamaConfig(**common))
    checkpointed_other.model.embed_tokens.register_forward_hook(lambda *a: None)
    assert "module model.embed_tokens has forward hooks" in static_support(checkpointed_other)
    hooked = LlamaForCausalLM(LlamaConfig(**common))
    hooked.model.layers[0].mlp.register_forward_hook(lambda *a: None)
    assert "module model.layers.0.mlp has forward hooks" in static_support(hooked)
    with pytest.raises(ValueError, match="does not support this model: .*GPT2"):
        DecoderWeights.from_model(gpt2)


def test_static_support_refuses_a_peft_lora_model():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(build("llama"), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert "PeftModel" in static_support(model)
