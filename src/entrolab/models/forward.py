"""Per-token statistics of completions under a causal LM: log-probs, entropies, hidden states.

One function serves the no-grad scoring pass (behaviour/reference log-probs) and the training
forward (with grad). Sequences are ``[left-padded prompt | right-padded completion]``; position ids
are computed from the attention mask so left padding does not shift positions (the sampler uses the
same convention, so on-policy ratios are exactly 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ForwardOut:
    logp_BT: torch.Tensor               # log π(o_t | s_t) of the completion tokens (temperature-scaled)
    entropy_BT: torch.Tensor | None     # full-vocabulary entropy H(π(·|s_t))
    hidden_BTD: torch.Tensor | None     # last-layer hidden state at each completion token
    logits_BTV: torch.Tensor | None     # temperature-scaled logits predicting each completion token


def token_logp_entropy(logits_BTV: torch.Tensor, ids_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``ids_BT`` and entropy of the softmax of ``logits_BTV`` (computed in float32)."""
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    logp_BT = logp_BTV.gather(-1, ids_BT.unsqueeze(-1)).squeeze(-1)
    entropy_BT = -(logp_BTV.exp() * logp_BTV).sum(-1)
    return logp_BT, entropy_BT


def completion_stats(
    model: torch.nn.Module,
    prompt_ids_BL: torch.Tensor,
    mask_prompt_BL: torch.Tensor,
    completion_ids_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    temperature: float = 1.0,
    need_entropy: bool = True,
    need_hidden: bool = False,
    need_logits: bool = False,
) -> ForwardOut:
    """Forward ``[prompt | completion]`` and return per-completion-token statistics.

    Logits are divided by the sampling ``temperature`` before the softmax, as verl, TRL and EasyR1
    do, so that log-probs and entropies describe the distribution the tokens were sampled from.
    Padded completion positions hold arbitrary (finite) values; callers mask them.
    """
    device = next(model.parameters()).device
    ids_BL = torch.cat([prompt_ids_BL, completion_ids_BT], dim=1).to(device)
    attn_BL = torch.cat([mask_prompt_BL, mask_BT], dim=1).to(device)
    pos_BL = (attn_BL.long().cumsum(-1) - 1).clamp(min=0)
    T = completion_ids_BT.shape[1]
    if T == 0:
        empty = torch.zeros(ids_BL.shape[0], 0, device=device)
        return ForwardOut(empty, empty if need_entropy else None, None, None)
    out = model(
        input_ids=ids_BL,
        attention_mask=attn_BL.long(),
        position_ids=pos_BL,
        use_cache=False,
        output_hidden_states=need_hidden,
        logits_to_keep=T + 1,  # positions Lp-1 … L-1; the last one predicts past the end
    )
    logits_BTV = out.logits[:, :-1, :] / temperature
    ids_BT = completion_ids_BT.to(device)
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    logp_BT = logp_BTV.gather(-1, ids_BT.unsqueeze(-1)).squeeze(-1)
    entropy_BT = -(logp_BTV.exp() * logp_BTV).sum(-1) if need_entropy else None
    hidden_BTD = out.hidden_states[-1][:, -T:, :].float() if need_hidden else None
    return ForwardOut(logp_BT, entropy_BT, hidden_BTD, logits_BTV.float() if need_logits else None)
