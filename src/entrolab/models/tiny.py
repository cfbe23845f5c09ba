"""Tiny Llama models for the CPU testbed, trained from scratch on a char-level tokenizer.

We use the Llama architecture (not Qwen2): a saved Qwen2 folder makes ``AutoTokenizer`` pick a
tokenizer class that drops spaces and newlines (DESIGN.md §6). The saved folder is a standard HF
folder (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...), so everything downstream
loads it through the ordinary ``AutoModelForCausalLM.from_pretrained`` path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from entrolab.models.tokenizer import build_char_tokenizer

#: Architecture per size (vocabulary-independent). Parameter counts with the 26-token Countdown
#: vocabulary: ``tiny`` ≈ 0.86M, ``small`` ≈ 5.1M (see ``tests/models/test_models_tiny.py``).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=8),
}


def tiny_config(size: str, tokenizer: PreTrainedTokenizerBase, *, max_position_embeddings: int = 512) -> LlamaConfig:
    """The ``LlamaConfig`` of testbed size ``size`` for ``tokenizer``'s vocabulary and special ids."""
    if size not in TINY_CONFIGS:
        raise ValueError(f"unknown testbed size {size!r}; valid sizes: {', '.join(TINY_CONFIGS)}")
    if max_position_embeddings < 1:
        raise ValueError(f"max_position_embeddings must be >= 1, got {max_position_embeddings}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,  # the embedding is a large share of a 1M model; tying halves it
        attention_dropout=0.0,
        **TINY_CONFIGS[size],
    )


def build_tiny_model(
    size: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int = 0,
    max_position_embeddings: int = 512,
) -> LlamaForCausalLM:
    """A freshly initialised ``LlamaForCausalLM`` of testbed size ``size`` (fp32, CPU).

    Initialisation draws from a forked torch RNG seeded with ``seed``, so the caller's global RNG
    state is untouched and the same seed gives the same weights.
    """
    config = tiny_config(size, tokenizer, max_position_embeddings=max_position_embeddings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model


def save_testbed(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` as one standard HF folder; returns the path."""
    from entrolab.models.loading import quiet_hf_progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_hf_progress():
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def create_testbed_model(
    out_dir: str | Path,
    charset: str,
    *,
    size: str = "tiny",
    seed: int = 0,
    max_position_embeddings: int = 512,
) -> Path:
    """Build a char tokenizer over ``charset`` and a random tiny Llama, save both to ``out_dir``.

    Returns ``out_dir`` as a ``Path``; load it with ``entrolab.models.loading.load_policy`` or
    ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    tokenizer = build_char_tokenizer(charset)
    model = build_tiny_model(size, tokenizer, seed=seed, max_position_embeddings=max_position_embeddings)
    return save_testbed(model, tokenizer, out_dir)


def num_params(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
