"""Shared fixtures: a small RolloutBatch builder (advantages, rewards) and tiny char-level LMs."""

from __future__ import annotations

import pytest
import torch

from entrolab.types import Prompt, RolloutBatch, Verdict


def build_batch(rewards, group_id=None, *, lengths=None, T=None, texts=None, entropy_BT=None,
                correct=None, answers=None, hidden_BTD=None):
    """A RolloutBatch with given rewards/groups; tokens are dummies, lengths default to T for everyone."""
    rewards_B = torch.as_tensor(rewards, dtype=torch.float32)
    B = rewards_B.shape[0]
    group_id_B = torch.as_tensor(group_id if group_id is not None else [0] * B, dtype=torch.long)
    lengths = list(lengths) if lengths is not None else [T or 3] * B
    T = T or max([1, *lengths])
    mask_BT = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    n_prompts = int(group_id_B.max()) + 1 if B else 0
    correct = correct if correct is not None else [r > 0 for r in rewards_B.tolist()]
    answers = answers if answers is not None else [None] * B
    verdicts = [Verdict(reward=float(r), correct=bool(c), answer=a, reason="ok" if c else "wrong_value")
                for r, c, a in zip(rewards_B.tolist(), correct, answers)]
    return RolloutBatch(
        prompts=[Prompt(id=f"p{i}", text=f"prompt {i}") for i in range(n_prompts)],
        group_id_B=group_id_B,
        prompt_ids_BL=torch.zeros(B, 2, dtype=torch.long),
        mask_prompt_BL=torch.ones(B, 2, dtype=torch.bool),
        completion_ids_BT=torch.ones(B, T, dtype=torch.long) * mask_BT,
        mask_BT=mask_BT,
        texts=list(texts) if texts is not None else [f"text {i}" for i in range(B)],
        stop_reasons=["eos"] * B,
        entropy_BT=entropy_BT if entropy_BT is not None else torch.zeros(B, T),
        old_logp_BT=torch.zeros(B, T),
        hidden_BTD=hidden_BTD,
        verdicts=verdicts,
        rewards_B=rewards_B,
    )


@pytest.fixture
def make_batch():
    return build_batch


CHARSET = "0123456789+-*/()=,>: #abcdefghijklmnopqrstuvwxyz"


def _tiny_config(tok, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       **extra)


@pytest.fixture(scope="session")
def tiny_lm():
    """A 1-layer char-level LlamaForCausalLM (random init, eval mode) and its tokenizer."""
    from transformers import LlamaForCausalLM

    from entrolab.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(CHARSET)
    torch.manual_seed(0)
    return LlamaForCausalLM(_tiny_config(tok)).eval(), tok


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory):
    """A 1-layer LlamaForSequenceClassification reward model saved to a folder: (folder, model, tokenizer)."""
    from transformers import LlamaForSequenceClassification

    from entrolab.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(CHARSET)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(_tiny_config(tok, num_labels=1)).eval()
    out = tmp_path_factory.mktemp("rm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, model, tok
