"""Sequence log-probs of preference pairs: Σ_t log π(y_t | x, y_<t) over each response's tokens.

Pairs are encoded as the sampler encodes prompts and completions, so a pair sampled from a model
scores exactly its sampled tokens whenever the decoded text re-encodes to them (a special token other
than EOS sampled mid-completion, which decoding drops, is the exception: an untrained model's habit);
the forward is the trainer's own (``models.forward.completion_stats``).
"""

from __future__ import annotations

from typing import Any

import torch

from entrolab.models.forward import completion_stats
from entrolab.preference.data import PreferencePair

Encoded = tuple[list[int], list[int], list[int]]  # prompt ids (with BOS), chosen ids + EOS, rejected ids + EOS


def encode_pairs(tokenizer: Any, pairs: list[PreferencePair], *, chat_template: bool = False) -> list[Encoded]:
    """Token ids of every pair, encoded as the sampler encodes prompts and completions (prompt with
    BOS once; each response without special tokens, then EOS, as a sampled completion that stopped),
    so a pair sampled from a model scores its sampled tokens (see the module docstring)."""
    from entrolab.models.loading import format_prompt
    from entrolab.rollout.sampler import encode_prompts

    texts = [format_prompt(tokenizer, p.prompt, chat_template=chat_template) for p in pairs]
    prompts = encode_prompts(tokenizer, texts)
    eos = [tokenizer.eos_token_id]
    return [(p_ids, tokenizer(p.chosen, add_special_tokens=False)["input_ids"] + eos,
             tokenizer(p.rejected, add_special_tokens=False)["input_ids"] + eos) for p_ids, p in zip(prompts, pairs)]


def collate(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """``(prompt_BL, mask_prompt_BL, completion_BT, mask_BT)``: prompts left-padded, responses right-padded."""
    from entrolab.rollout.sampler import left_pad

    prompt_BL, mask_prompt_BL = left_pad(prompts, pad_id)
    T = max(len(r) for r in responses)
    comp_BT = torch.full((len(responses), T), pad_id, dtype=torch.long)
    mask_BT = torch.zeros(len(responses), T, dtype=torch.bool)
    for i, r in enumerate(responses):
        comp_BT[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask_BT[i, :len(r)] = True
    return prompt_BL, mask_prompt_BL, comp_BT, mask_BT


def sequence_logps(model: torch.nn.Module, rows: list[Encoded], *, pad_id: int,
                   chunk_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t log π(y_t | x, y_<t) over the response tokens of chosen and rejected: two [B] tensors.

    One forward over the 2B rows ``[chosen…; rejected…]``; prompt and padding are masked out (sums,
    not means: the DPO family's derivations are for sequence densities). Gradient flows if enabled.
    """
    prompts = [r[0] for r in rows] * 2
    responses = [r[1] for r in rows] + [r[2] for r in rows]
    prompt_BL, mask_prompt_BL, comp_BT, mask_BT = collate(prompts, responses, pad_id)
    out = completion_stats(model, prompt_BL, mask_prompt_BL, comp_BT, mask_BT, need_entropy=False,
                           chunk_size=chunk_size)
    seq_B = (out.logp_BT.float() * mask_BT.to(out.logp_BT.device)).sum(-1)
    return seq_B[:len(rows)], seq_B[len(rows):]
