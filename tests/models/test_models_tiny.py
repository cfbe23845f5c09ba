"""Tiny Llama testbed models and loading any HF causal LM (``models.tiny``, ``models.loading``)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

from entrolab.models.loading import format_prompt, load_policy, prepare_tokenizer, resolve_device, resolve_dtype
from entrolab.models.tiny import TINY_CONFIGS, build_tiny_model, create_testbed_model, num_params
from entrolab.models.tokenizer import build_char_tokenizer
from entrolab.registry import ConfigError

CHARSET = " #()*+,-/0123456789:=>"  # the Countdown charset


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(CHARSET)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return create_testbed_model(tmp_path_factory.mktemp("tb") / "m", CHARSET, size="tiny", seed=3)


@pytest.mark.parametrize("size, lo, hi", [("tiny", 0.7e6, 1.3e6), ("small", 4e6, 6e6)])
def test_param_counts_in_range(tok, size, lo, hi):
    model = build_tiny_model(size, tok, seed=0)
    assert isinstance(model, LlamaForCausalLM)
    assert lo <= num_params(model) <= hi
    # Tied embeddings are counted once: lm_head shares the embedding matrix.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_config_carries_tokenizer_ids(tok):
    cfg = build_tiny_model("tiny", tok, seed=0, max_position_embeddings=128).config
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (len(tok), 0, 1, 2)
    assert cfg.max_position_embeddings == 128 and cfg.model_type == "llama"


def test_seeded_init_is_repeatable_and_leaves_global_rng_alone(tok):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_tiny_model("tiny", tok, seed=7)
    after = torch.rand(3)
    b = build_tiny_model("tiny", tok, seed=7)
    c = build_tiny_model("tiny", tok, seed=8)
    assert torch.equal(before, after)  # model building did not consume the caller's RNG
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_unknown_size_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="valid sizes: tiny, small"):
        build_tiny_model("huge", tok, seed=0)
    assert set(TINY_CONFIGS) == {"tiny", "small"}


def test_testbed_folder_loads_through_auto_classes(saved, tok):
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (saved / f).exists(), f
    model = AutoModelForCausalLM.from_pretrained(saved)
    fresh = build_tiny_model("tiny", tok, seed=3)
    ids = tok(["1 2>3:", "9>9:"], padding=True, return_tensors="pt")
    with torch.no_grad():
        got = model(**ids).logits
        want = fresh(**ids).logits
    assert torch.equal(got, want)  # safetensors round trip is exact
    loaded_tok = AutoTokenizer.from_pretrained(saved)
    assert loaded_tok.decode(loaded_tok("3 4>7: 3+4")["input_ids"], skip_special_tokens=True) == "3 4>7: 3+4"


def test_load_policy(saved):
    model, tok = load_policy(saved, device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert tok.padding_side == "left" and tok.pad_token_id == 0 and tok.eos_token_id == 2
    assert next(model.parameters()).device.type == "cpu"


def test_load_policy_rejects_non_model_folder(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        load_policy(tmp_path, device="cpu")


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def _tokenizer_without(pad: bool, eos: bool) -> PreTrainedTokenizerFast:
    base = build_char_tokenizer("ab")
    kw = {"bos_token": "<bos>"}
    if pad:
        kw["pad_token"] = "<pad>"
    if eos:
        kw["eos_token"] = "<eos>"
    return PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, **kw)


def test_prepare_tokenizer_fills_pad_and_eos(tok):
    t = prepare_tokenizer(_tokenizer_without(pad=False, eos=True))
    assert t.pad_token_id == t.eos_token_id == 2 and t.padding_side == "left"
    model = build_tiny_model("tiny", tok, seed=0)  # its config and generation config name EOS id 2
    t = prepare_tokenizer(_tokenizer_without(pad=True, eos=False), model)
    assert t.eos_token_id == 2 and t.eos_token == "<eos>"
    with pytest.raises(ConfigError, match="no EOS token"):
        prepare_tokenizer(_tokenizer_without(pad=True, eos=False))


def test_format_prompt(tok):
    assert format_prompt(tok, "3 4>7:", chat_template=False) == "3 4>7:"
    with pytest.raises(ConfigError, match="no chat template"):
        format_prompt(tok, "3 4>7:", chat_template=True)
    templated = build_char_tokenizer(CHARSET)
    templated.chat_template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}=>{% endif %}")
    assert format_prompt(templated, "3 4>7:", chat_template=True) == "3 4>7:=>"
