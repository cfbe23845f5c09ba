"""``rollout.engine: hf``: the same sampler contract through ``model.generate`` (the reference engine).

It exists to check and time the builtin KV-cache loop (``sampler.sample``) against HF's own
decoding: same prompts (left-padded, position ids from the attention mask), same temperature,
top-p, ``max_new_tokens`` and EOS handling, and the same ``RolloutBatch`` (built by
``sampler.assemble_batch``). Differences that remain, by design:

- randomness: ``generate`` draws from torch's global RNG, so one seed is taken from the caller's
  generator per chunk and the global RNG is forked around the call (the caller's state is restored);
  with the same generator the two engines sample different (equally distributed) tokens;
- the behaviour log-probs and entropies are recorded by a logits processor (``_Recorder``) from the
  raw logits divided by τ, the builtin's convention, keeping one (B, V) row set in memory rather
  than all T steps (``output_logits`` would hold B·T·V floats).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from entrolab.rollout.draw import logp_and_entropy
from entrolab.rollout.sampler import assemble_batch, check_and_encode, left_pad
from entrolab.types import Prompt, RolloutBatch


class _Recorder(LogitsProcessor):
    """Records log p(token) and entropy of every generated token under softmax(raw logits / τ).

    ``generate`` calls processors before it picks the token, so the token drawn from step t's
    logits is only seen at step t+1 (the last column of ``input_ids``); ``finish`` records the
    final step. Custom processors run before the temperature/top-p warpers, so ``scores`` are raw.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.logp_cols: list[torch.Tensor] = []
        self.entropy_cols: list[torch.Tensor] = []
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def _record(self, tok_b: torch.Tensor) -> None:
        logp_bV, entropy_b = self._pending
        self.logp_cols.append(logp_bV.gather(-1, tok_b.unsqueeze(-1)).squeeze(-1))
        self.entropy_cols.append(entropy_b)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._record(input_ids[:, -1])
        self._pending = logp_and_entropy(scores, temperature=self.temperature)
        return scores

    def finish(self, tok_b: torch.Tensor) -> None:
        self._record(tok_b)
        self._pending = None


@torch.no_grad()
def _generate_chunk_hf(model, rows_ids: list[list[int]], *, pad_id: int, eos_id: int, max_new_tokens: int,
                       temperature: float, top_p: float, greedy: bool,
                       generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """``(tokens_nT, logp_nT, entropy_nT, length_n, eos_n)`` on CPU for n rows, T = max_new_tokens."""
    device = next(model.parameters()).device
    ids_nL, mask_nL = left_pad(rows_ids, pad_id)
    n, L, T = ids_nL.shape[0], ids_nL.shape[1], max_new_tokens
    # top_k=0 explicitly: an unset (None) option is filled from HF's global defaults, which have top_k 50.
    cfg = GenerationConfig(max_new_tokens=T, do_sample=not greedy, temperature=temperature if not greedy else 1.0,
                           top_p=top_p if not greedy else 1.0, top_k=0, pad_token_id=pad_id, eos_token_id=eos_id,
                           return_dict_in_generate=True)
    rec = _Recorder(temperature)
    seed = 0 if greedy else int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    devices = [device] if device.type == "cuda" else []
    # generate also fills unset options from model.generation_config (a checkpoint's
    # generation_config.json: repetition penalty, top-k, ...): a blank one stands in during the call.
    # (peft's generate hands its own generation_config to the base model, so this covers LoRA too.)
    own = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(input_ids=ids_nL.to(device), attention_mask=mask_nL.long().to(device),
                                 generation_config=cfg, logits_processor=LogitsProcessorList([rec]))
    finally:
        model.generation_config = own
    gen_nt = out.sequences[:, L:]
    rec.finish(gen_nt[:, -1])
    t = gen_nt.shape[1]  # < T only when every row hit EOS early
    tokens_nT = torch.full((n, T), pad_id, dtype=torch.long)
    tokens_nT[:, :t] = gen_nt.cpu()
    logp_nT, entropy_nT = torch.zeros(n, T), torch.zeros(n, T)
    logp_nT[:, :t] = torch.stack(rec.logp_cols, 1).float().cpu()
    entropy_nT[:, :t] = torch.stack(rec.entropy_cols, 1).float().cpu()
    # generate pads finished rows with pad_id, so the first EOS (not the pad) ends a row.
    is_eos_nt = tokens_nT[:, :t] == eos_id
    eos_n = is_eos_nt.any(-1)
    length_n = torch.where(eos_n, is_eos_nt.long().argmax(-1) + 1, torch.full((n,), T))
    return tokens_nT, logp_nT, entropy_nT, length_n, eos_n


def sample_hf(
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
    """``sampler.sample``'s contract (arguments, validation, returned batch) through ``model.generate``."""
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
            rows = range(start, min(B, start + chunk))
            parts.append(_generate_chunk_hf(
                model, [prompt_ids[b // G] for b in rows], pad_id=pad_id, eos_id=eos_id,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, greedy=greedy,
                generator=generator))
            if progress is not None:
                progress(rows.stop, B)
    finally:
        model.train(was_training)
    return assemble_batch(tokenizer, prompts, texts, prompt_ids, parts, group_size=G, temperature=temperature)
