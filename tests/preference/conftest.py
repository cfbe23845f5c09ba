"""Shared by the preference trainer and DNO tests: the Countdown task and a tiny random policy for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: The Countdown configuration the tests' recipes use (they repeat it as ``TASK``).
TASK = {"name": "countdown", "min_numbers": 3, "max_numbers": 3, "n_train": 40, "n_validation": 4, "n_test": 4}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from entrolab.components import build_one, import_builtins
    from entrolab.models.tokenizer import build_char_tokenizer
    from entrolab.registry import TASKS

    import_builtins()
    tok = build_char_tokenizer(build_one(TASKS, TASK, "task").charset())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_policy")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
