"""Sampling G completions per prompt with a hand-written KV-cache loop (docs/CONTRACTS.md, Sampler).

Why a hand loop rather than ``model.generate``: it records the behaviour log-prob and entropy of
every sampled token from the same logits it samples from (no second forward), shares one prompt
prefill across the G members of a group, drops finished sequences from the batch, and takes its
randomness only from the caller's generator (docs/testbed.md has the benchmark against generate).

On a CUDA model whose forward ``rollout.static_model`` reproduces, ``sample`` and ``generate_from_ids``
run the static decoder instead (``rollout.static_decoder``: static KV cache, CUDA-graph decode step);
on CPU this loop runs, unchanged.

Layout: sequences of prompt p are rows p·G … p·G+G−1 (``group_id_B[b] = b // G``). Prompts are
left-padded; position ids count real tokens only (``cumsum(mask) − 1``), the convention of
``models.forward.completion_stats``, so a re-scored batch has importance ratio exactly 1.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from entrolab.rollout.draw import next_token
from entrolab.rollout.kvcache import new_cache
from entrolab.types import Prompt, RolloutBatch

#: Compact the batch (drop finished rows from the KV cache) once this share of rows is done.
_COMPACT_FRAC = 0.25


def encode_prompts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt, with the tokenizer's special tokens (BOS) added once.

    A text that already starts with the BOS string (a rendered chat template usually does) is
    encoded without adding special tokens, so BOS is never doubled.
    """
    bos = tokenizer.bos_token
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"prompt {i} must be a str, got {type(text).__name__}")
        add = not (bos and text.startswith(bos))
        ids = tokenizer(text, add_special_tokens=add)["input_ids"]
        if not ids:
            raise ValueError(f"prompt {i} encodes to zero tokens (empty text and no BOS token)")
        out.append(list(ids))
    return out


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists into ``(ids_BL, mask_BL)`` (mask True = real token)."""
    L = max(len(s) for s in seqs)
    ids_BL = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((len(seqs), L), dtype=torch.bool)
    for b, s in enumerate(seqs):
        if s:
            ids_BL[b, L - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask_BL[b, L - len(s):] = True
    return ids_BL, mask_BL


def _forward_kwargs(model: torch.nn.Module) -> tuple[str, str | None]:
    """Names of the cache and logits-slicing arguments of this model's forward.

    transformers 5.x renamed ``past_key_values`` to ``cache``; older models lack ``logits_to_keep``.
    """
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return cache_kw, keep_kw


@torch.no_grad()
def _generate_chunk(model, uniq_ids: list[list[int]], row_to_uniq: torch.Tensor, *, pad_id: int, eos_id: int,
                    max_new_tokens: int, temperature: float, top_p: float, greedy: bool,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Generate for ``n`` rows whose prompts are ``uniq_ids[row_to_uniq[r]]``.

    Returns ``(tokens_nT, logp_nT, entropy_nT, length_n, eos_n)`` on CPU, T = max_new_tokens.
    """
    device = next(model.parameters()).device
    cache_kw, keep_kw = _forward_kwargs(model)
    n, T = row_to_uniq.numel(), max_new_tokens
    tokens_nT = torch.full((n, T), pad_id, dtype=torch.long, device=device)
    logp_nT = torch.zeros((n, T), device=device)
    entropy_nT = torch.zeros((n, T), device=device)
    length_n = torch.full((n,), T, dtype=torch.long, device=device)
    eos_n = torch.zeros(n, dtype=torch.bool, device=device)

    # Prefill each distinct prompt once, then copy its cache rows to the G members of its group.
    ids_uL, mask_uL = left_pad(uniq_ids, pad_id)
    ids_uL, mask_uL = ids_uL.to(device), mask_uL.to(device)
    pos_uL = (mask_uL.long().cumsum(-1) - 1).clamp(min=0)
    cache = new_cache(model, ids_uL.shape[1] + T)
    extra = {keep_kw: 1} if keep_kw else {}
    out = model(input_ids=ids_uL, attention_mask=mask_uL.long(), position_ids=pos_uL,
                use_cache=True, **{cache_kw: cache}, **extra)
    sel = row_to_uniq.to(device)
    cache.reorder_cache(sel)
    logits_bV = out.logits[:, -1, :][sel]
    attn_bL = mask_uL.long()[sel]
    pos_b = mask_uL.sum(-1)[sel]              # position of the first generated token
    rows_b = torch.arange(n, device=device)   # chunk row of each live batch row
    alive_b = torch.ones(n, dtype=torch.bool, device=device)

    for t in range(T):
        u_b = None
        if not greedy:
            # One uniform per live row, from the caller's generator (on its own device).
            gen_dev = generator.device
            u_b = torch.rand(rows_b.numel(), generator=generator, device=gen_dev).to(device)
        tok_b, lp_b, ent_b = next_token(logits_bV, u_b, temperature=temperature, top_p=top_p, greedy=greedy)
        # Rows finished earlier but not yet compacted away still run; their outputs are ignored.
        live = rows_b[alive_b]
        tokens_nT[live, t] = tok_b[alive_b]
        logp_nT[live, t] = lp_b[alive_b]
        entropy_nT[live, t] = ent_b[alive_b]
        hit_b = alive_b & (tok_b == eos_id)
        eos_n[rows_b[hit_b]] = True
        length_n[rows_b[hit_b]] = t + 1
        alive_b = alive_b & ~hit_b
        if t == T - 1 or not alive_b.any():
            break
        if (~alive_b).float().mean() >= _COMPACT_FRAC:
            keep = alive_b.nonzero().squeeze(-1)
            cache.reorder_cache(keep)
            rows_b, tok_b, attn_bL, pos_b = rows_b[keep], tok_b[keep], attn_bL[keep], pos_b[keep]
            alive_b = alive_b[keep]
        attn_bL = torch.cat([attn_bL, attn_bL.new_ones(attn_bL.shape[0], 1)], dim=1)
        out = model(input_ids=tok_b.unsqueeze(-1), attention_mask=attn_bL, position_ids=pos_b.unsqueeze(-1),
                    use_cache=True, **{cache_kw: cache})
        logits_bV = out.logits[:, -1, :]
        pos_b = pos_b + 1
    return tokens_nT.cpu(), logp_nT.cpu(), entropy_nT.cpu(), length_n.cpu(), eos_n.cpu()


def sample(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    group_size: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int,
    generator: torch.Generator | None,
    batch_size: int | None = None,
    greedy: bool = False,
    prompt_texts: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RolloutBatch:
    """Sample ``group_size`` completions for each prompt; returns a ``RolloutBatch`` (CPU tensors).

    Args:
        model: any HF causal LM (eval mode is set during sampling and restored afterwards).
        tokenizer: its tokenizer; needs ``pad_token_id`` and ``eos_token_id``.
        prompts: P prompts; ``prompt_texts`` (e.g. chat-formatted) replace their ``text`` if given.
        group_size: G completions per prompt (B = P·G rows).
        temperature: τ; sampling and the recorded ``old_logp_BT``/``entropy_BT`` use logits / τ.
        top_p: nucleus mass; the recorded log-probs are still of the full tempered distribution.
        max_new_tokens: cap on completion length (stop reason "length" when hit without EOS).
        generator: the only source of randomness (may be None when ``greedy``).
        batch_size: sequences generated at once (None = all B).
        greedy: argmax decoding.
        progress: called as ``progress(done_sequences, total_sequences)`` after each chunk.

    Returns:
        A ``RolloutBatch`` with ``completion_ids_BT`` right-padded with the pad id, ``mask_BT``
        True for generated tokens including the EOS token, ``texts`` decoded without special
        tokens, ``stop_reasons`` in {"eos", "length"}, and behaviour ``old_logp_BT``/``entropy_BT``
        (0 at masked positions).
    """
    return sample_with(_dispatch_chunk(model), model, tokenizer, prompts, group_size=group_size,
                       temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, generator=generator,
                       batch_size=batch_size, greedy=greedy, prompt_texts=prompt_texts, progress=progress)


def _dispatch_chunk(model: torch.nn.Module) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The chunk generator of the builtin engine: this module's loop on CPU (unchanged, bit for bit);
    on CUDA the static decoder with CUDA graphs (``rollout.static_decoder``) when it supports the model."""
    if next(model.parameters()).device.type == "cuda":
        from entrolab.rollout.static_model import static_support

        if static_support(model) is None:
            from entrolab.rollout.static_decoder import generate_chunk_static

            return generate_chunk_static
    return _generate_chunk


def sample_with(chunk_fn: Callable[..., tuple[torch.Tensor, ...]], model: torch.nn.Module,
                tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], *, group_size: int,
                temperature: float, top_p: float, max_new_tokens: int, generator: torch.Generator | None,
                batch_size: int | None, greedy: bool, prompt_texts: Sequence[str] | None,
                progress: Callable[[int, int], None] | None) -> RolloutBatch:
    """``sample`` with the chunk generator ``chunk_fn`` (``_generate_chunk``'s signature and returns)."""
    P, G = len(prompts), group_size
    texts, prompt_ids = check_and_encode(tokenizer, prompts, group_size=G, max_new_tokens=max_new_tokens,
                                         batch_size=batch_size, greedy=greedy, generator=generator,
                                         prompt_texts=prompt_texts)
    pad_id, eos_id = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)

    B = P * G
    chunk = B if batch_size is None else batch_size
    was_training = model.training
    model.eval()
    parts = []
    try:
        for start in range(0, B, chunk):
            group_n = torch.arange(start, min(B, start + chunk)) // G
            uniq_u, row_to_uniq = torch.unique(group_n, return_inverse=True)
            parts.append(chunk_fn(
                model, [prompt_ids[p] for p in uniq_u.tolist()], row_to_uniq, pad_id=pad_id, eos_id=eos_id,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, greedy=greedy,
                generator=generator))
            if progress is not None:
                progress(start + group_n.numel(), B)
    finally:
        model.train(was_training)

    return assemble_batch(tokenizer, prompts, texts, prompt_ids, parts, group_size=G, temperature=temperature)


def generate_from_ids(model: torch.nn.Module, contexts: Sequence[Sequence[int]], *, pad_id: int, eos_id: int,
                      max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """One completion per token-id context, no grouping (e.g. one turn of a multi-turn episode).

    Returns ``(tokens_nT, logp_nT, entropy_nT, length_n, eos_n)`` on CPU, T = ``max_new_tokens``, as
    ``_generate_chunk`` (row r continues ``contexts[r]``; pads after a row's end hold ``pad_id``/0).
    Same engine choice as ``sample``: this loop on CPU, the static decoder on CUDA when supported.
    """
    return generate_ids_with(_dispatch_chunk(model), model, contexts, pad_id=pad_id, eos_id=eos_id,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, greedy=greedy,
                             generator=generator)


def generate_ids_with(chunk_fn: Callable[..., tuple[torch.Tensor, ...]], model: torch.nn.Module,
                      contexts: Sequence[Sequence[int]], *, pad_id: int, eos_id: int, max_new_tokens: int,
                      temperature: float, top_p: float, greedy: bool,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """``generate_from_ids`` with the chunk generator ``chunk_fn``; validates the contexts."""
    if not contexts:
        raise ValueError("generate_from_ids needs at least one context")
    for i, ctx in enumerate(contexts):
        if len(ctx) == 0:
            raise ValueError(f"context {i} is empty (it needs at least one token, e.g. BOS)")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in ctx):
            raise TypeError(f"context {i} must be a list of int token ids")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if generator is None and not greedy:
        raise ValueError("generate_from_ids needs a torch.Generator unless greedy=True")
    was_training = model.training
    model.eval()
    try:
        return chunk_fn(model, [list(c) for c in contexts], torch.arange(len(contexts)), pad_id=pad_id,
                        eos_id=eos_id, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        greedy=greedy, generator=generator)
    finally:
        model.train(was_training)


def check_and_encode(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], *, group_size: int,
                     max_new_tokens: int, batch_size: int | None, greedy: bool, generator: torch.Generator | None,
                     prompt_texts: Sequence[str] | None) -> tuple[list[str], list[list[int]]]:
    """Validate a sampler call's arguments (shared by every engine); return the P texts and their ids."""
    P, G = len(prompts), group_size
    if P == 0:
        raise ValueError("sample() needs at least one prompt")
    if G < 1 or max_new_tokens < 1:
        raise ValueError(f"group_size and max_new_tokens must be >= 1, got {G} and {max_new_tokens}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    if generator is None and not greedy:
        raise ValueError("sample() needs a torch.Generator unless greedy=True")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer needs pad and eos tokens (use models.loading.prepare_tokenizer)")
    texts = [p.text for p in prompts] if prompt_texts is None else list(prompt_texts)
    if len(texts) != P:
        raise ValueError(f"prompt_texts has {len(texts)} entries for {P} prompts")
    return texts, encode_prompts(tokenizer, texts)


def assemble_batch(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], texts: list[str],
                   prompt_ids: list[list[int]], parts: list[tuple[torch.Tensor, ...]], *, group_size: int,
                   temperature: float) -> RolloutBatch:
    """The ``RolloutBatch`` from per-chunk ``(tokens_nT, logp_nT, entropy_nT, length_n, eos_n)`` (CPU),
    rows in group order; every engine returns through here so their batches agree field by field."""
    G, pad_id = group_size, int(tokenizer.pad_token_id)
    tokens_BT, logp_BT, entropy_BT, length_B, eos_B = (torch.cat(x) for x in zip(*parts))
    B = tokens_BT.shape[0]
    T = int(length_B.max())
    mask_BT = torch.arange(T).unsqueeze(0) < length_B.unsqueeze(1)
    tokens_BT = tokens_BT[:, :T].masked_fill(~mask_BT, pad_id)
    logp_BT = logp_BT[:, :T].masked_fill(~mask_BT, 0.0)
    entropy_BT = entropy_BT[:, :T].masked_fill(~mask_BT, 0.0)
    # Text excludes the EOS token (and any other special token the model may emit).
    n_text_B = length_B - eos_B.long()
    texts_B = tokenizer.batch_decode([tokens_BT[b, : n_text_B[b]].tolist() for b in range(B)],
                                     skip_special_tokens=True, clean_up_tokenization_spaces=False)
    prompt_ids_BL, mask_prompt_BL = left_pad([prompt_ids[b // G] for b in range(B)], pad_id)
    return RolloutBatch(
        prompts=list(prompts),
        group_id_B=torch.arange(B) // G,
        prompt_ids_BL=prompt_ids_BL,
        mask_prompt_BL=mask_prompt_BL,
        completion_ids_BT=tokens_BT,
        mask_BT=mask_BT,
        texts=texts_B,
        stop_reasons=["eos" if e else "length" for e in eos_B.tolist()],
        temperature=float(temperature),
        old_logp_BT=logp_BT,
        entropy_BT=entropy_BT,
        extras={"prompt_texts": texts},  # the P texts encoded (chat-formatted if asked): scoring context
    )


#: ``rollout.engine`` name → module and function with ``sample``'s signature (imported on first use).
ENGINES = {"builtin": ("entrolab.rollout.sampler", "sample"), "hf": ("entrolab.rollout.hf_engine", "sample_hf"),
           "static": ("entrolab.rollout.static_decoder", "sample_static")}
#: ``rollout.engine`` name → module and function with ``generate_from_ids``'s signature.
GENERATE_FROM_IDS = {"builtin": ("entrolab.rollout.sampler", "generate_from_ids"),
                     "static": ("entrolab.rollout.static_decoder", "generate_from_ids")}


def get_engine(name: str) -> Callable[..., RolloutBatch]:
    """The sampler function of ``rollout.engine`` ``name`` (``builtin``: the KV-cache loop above;
    ``hf``: ``model.generate``, the reference)."""
    import importlib

    if name not in ENGINES:
        raise ValueError(f"unknown rollout.engine {name!r}; known: {sorted(ENGINES)}")
    module, fn = ENGINES[name]
    return getattr(importlib.import_module(module), fn)


def get_generate_from_ids(name: str) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The ``generate_from_ids`` of engine ``name`` (one completion per token-id context)."""
    import importlib

    if name not in GENERATE_FROM_IDS:
        raise ValueError(f"rollout.engine {name!r} has no generate_from_ids; known: {sorted(GENERATE_FROM_IDS)}")
    module, fn = GENERATE_FROM_IDS[name]
    return getattr(importlib.import_module(module), fn)
