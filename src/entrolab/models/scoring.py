"""Scoring given continuations under a causal LM (teacher forcing), for components that need it.

``continuation_logps`` runs the trainer's own forward (``completion_stats``) on ``[prefix |
continuation]`` pairs; ``make_logprob_scorer`` wraps it as a no-grad callable bound to the live policy,
which the trainer hands to any component with a ``set_scorer`` hook (e.g. the likelihood reward).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Scorer = Callable[[Sequence[str], Sequence[str]], list[torch.Tensor]]


def continuation_logps(model, tokenizer, prefixes: Sequence[str], continuations: Sequence[str], *,
                       append_eos: bool = True, temperature: float = 1.0, batch_size: int = 32) -> list[torch.Tensor]:
    """Per-token log π(continuation | prefix) for each pair (gradient flows if enabled by the caller).

    Uses the trainer's own forward (``models.forward.completion_stats``): prefixes are encoded as the
    sampler encodes prompts (BOS once) and left-padded, continuations (without special tokens, plus
    EOS when ``append_eos``) are right-padded, so positions and the prefix/continuation boundary are
    exactly those of sampled completions.

    Returns:
        one [n_i] tensor per pair (n_i continuation tokens, + EOS when ``append_eos``).
    """
    from entrolab.models.forward import completion_stats
    from entrolab.rollout.sampler import encode_prompts, left_pad

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[torch.Tensor] = []
    for s in range(0, len(prefixes), batch_size):
        p_ids = encode_prompts(tokenizer, list(prefixes[s:s + batch_size]))
        c_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if append_eos else [])
                 for c in continuations[s:s + batch_size]]
        prompt_BL, mask_prompt_BL = left_pad(p_ids, pad_id)
        T = max(1, max(len(c) for c in c_ids))
        comp_BT = torch.full((len(c_ids), T), pad_id, dtype=torch.long)
        mask_BT = torch.zeros(len(c_ids), T, dtype=torch.bool)
        for i, c in enumerate(c_ids):
            comp_BT[i, : len(c)] = torch.tensor(c, dtype=torch.long)
            mask_BT[i, : len(c)] = True
        logp_BT = completion_stats(model, prompt_BL, mask_prompt_BL, comp_BT, mask_BT, temperature=temperature,
                                   need_entropy=False).logp_BT
        out.extend(logp_BT[i, : len(c)] for i, c in enumerate(c_ids))
    return out


def make_logprob_scorer(model, tokenizer, *, append_eos: bool = True, temperature: float = 1.0,
                        batch_size: int = 32) -> Scorer:
    """A no-grad scorer for ``LikelihoodReward.set_scorer`` bound to ``model`` (the current policy)."""

    def scorer(prefixes: Sequence[str], continuations: Sequence[str]) -> list[torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return [t.detach().cpu() for t in continuation_logps(
                    model, tokenizer, prefixes, continuations, append_eos=append_eos,
                    temperature=temperature, batch_size=batch_size)]
        finally:
            model.train(was_training)

    return scorer
