"""``rollout.engine: static``: decoding over a static KV cache, one pure step, CUDA graphs on GPU.

The builtin loop (``sampler._generate_chunk``) drops finished rows, indexes with boolean masks and
asks ``alive.any()`` every step: cheap on the CPU testbed, but on a GPU each of those is a host
sync, and HF's per-layer Python dominates a step. Here every buffer is allocated once per chunk
and one decode step (``static_model.decode_forward`` + temperature + float32 log-softmax/entropy +
inverse-CDF draw from ``rollout.draw`` + EOS bookkeeping) touches only those buffers, with the
step counters held in device tensors that the step itself advances. On CUDA the step is captured
once in a ``torch.cuda.CUDAGraph`` and replayed; the host only checks "every row finished" every
``check_every`` steps. Finished rows keep decoding (their outputs are not recorded), so shapes
never change.

Randomness: one uniform per row per step from the caller's generator, drawn up front for the
whole chunk as ``torch.rand((T, n), generator=g)`` (row t feeds step t) and copied to the device
once; ``u_Tn`` is thus fixed by the generator's state whatever the device and whether or not the
chunk stops early (the generator always advances by T·n numbers). Drawing per step would race a
non-blocking host-to-device copy with the next draw, or sync every step.

Returns what ``sampler._generate_chunk`` returns, so ``sampler.assemble_batch`` builds the same
``RolloutBatch``. Models this forward does not reproduce (``static_model.static_support``) fall
back to the builtin loop with a one-time warning.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from entrolab.rollout import sampler
from entrolab.rollout.draw import next_token
from entrolab.rollout.static_model import DecoderWeights, decode_forward, logits, prefill, static_support
from entrolab.types import Prompt, RolloutBatch

#: Steps between two host checks of "every row finished" (each check is one device sync).
CHECK_EVERY = 16
#: Eager steps on a side stream before capture (the PyTorch CUDA-graph recipe: lazy inits, autotuning).
WARMUP_STEPS = 2
_WARNED: set[tuple[str, str]] = set()


def compute_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.dtype:
    """``dtype`` if given; else the autocast dtype when autocast is on for the model's device (the
    trainer samples under bf16 autocast on CUDA: one bf16 copy of the weights per call then beats a
    cast of every weight at every step); else the model's own dtype (no copy)."""
    if dtype is not None:
        return dtype
    p = next(model.parameters())
    if torch.is_autocast_enabled(p.device.type):
        return torch.get_autocast_dtype(p.device.type)
    return p.dtype


class _State:
    """Every buffer one chunk's decoding touches, allocated before the first step."""

    def __init__(self, W: DecoderWeights, n: int, slots: int, T: int, device, *, pad_id: int):
        self.cache = W.new_cache(n, slots)
        self.valid_nS = torch.zeros(n, slots, dtype=torch.bool, device=device)
        self.tok_n = torch.full((n,), pad_id, dtype=torch.long, device=device)
        self.pos_n = torch.zeros(n, dtype=torch.long, device=device)
        self.slot_1 = torch.zeros(1, dtype=torch.long, device=device)   # cache slot the next step writes
        self.col_1 = torch.zeros(1, dtype=torch.long, device=device)    # output column the next draw fills
        self.tokens_nT = torch.full((n, T), pad_id, dtype=torch.long, device=device)
        self.logp_nT = torch.zeros(n, T, device=device)
        self.entropy_nT = torch.zeros(n, T, device=device)
        self.length_n = torch.full((n,), T, dtype=torch.long, device=device)
        self.eos_n = torch.zeros(n, dtype=torch.bool, device=device)
        self.alive_n = torch.ones(n, dtype=torch.bool, device=device)
        self.u_Tn: torch.Tensor | None = None


def record_draw(s: _State, logits_nV: torch.Tensor, *, pad_id: int, eos_id: int, temperature: float,
                top_p: float, greedy: bool) -> None:
    """Draw the next token of every row from ``logits_nV`` and record it at column ``s.col_1``.

    Same math as the builtin loop (``draw.next_token``: logits / τ, float32 log-softmax and entropy,
    inverse CDF, top-p). Rows that ended earlier get the pad id and 0 (as the builtin loop leaves
    them); a row that draws EOS ends with length col + 1. Device-only, no host sync.
    """
    u_n = None if greedy else s.u_Tn.index_select(0, s.col_1).squeeze(0)
    tok_n, lp_n, ent_n = next_token(logits_nV, u_n, temperature=temperature, top_p=top_p, greedy=greedy)
    alive = s.alive_n
    s.tokens_nT.index_copy_(1, s.col_1, torch.where(alive, tok_n, pad_id).unsqueeze(1))
    s.logp_nT.index_copy_(1, s.col_1, torch.where(alive, lp_n, 0.0).unsqueeze(1))
    s.entropy_nT.index_copy_(1, s.col_1, torch.where(alive, ent_n, 0.0).unsqueeze(1))
    hit_n = alive & (tok_n == eos_id)
    s.eos_n.logical_or_(hit_n)
    s.length_n.copy_(torch.where(hit_n, s.col_1 + 1, s.length_n))
    s.alive_n.logical_and_(~hit_n)
    s.tok_n.copy_(tok_n)
    s.col_1.add_(1)


def _decode_loop(step: Callable[[], None], n_steps: int, alive_n: torch.Tensor, *, graphs: bool,
                 check_every: int) -> None:
    """Run ``step`` ``n_steps`` times (eagerly, or captured once and replayed), stopping early once
    no row is alive (checked every ``check_every`` steps)."""
    done, graph = 0, None
    if graphs and n_steps > 0:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            while done < min(WARMUP_STEPS, n_steps):
                step()
                done += 1
        torch.cuda.current_stream().wait_stream(side)
        if done < n_steps:
            # Capture records the step without running it; the state is where the warm-up left it.
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=torch.cuda.graph_pool_handle()):
                step()
    while done < n_steps:
        if done % check_every == 0 and not bool(alive_n.any()):
            break
        graph.replay() if graph is not None else step()
        done += 1


@torch.no_grad()
def generate_chunk_static(model, uniq_ids: list[list[int]], row_to_uniq: torch.Tensor, *, pad_id: int, eos_id: int,
                          max_new_tokens: int, temperature: float, top_p: float, greedy: bool,
                          generator: torch.Generator | None, cuda_graphs: bool | None = None,
                          dtype: torch.dtype | None = None, fuse: bool | None = None,
                          check_every: int = CHECK_EVERY) -> tuple[torch.Tensor, ...]:
    """``sampler._generate_chunk``'s contract on the static decoder: n rows whose prompts are
    ``uniq_ids[row_to_uniq[r]]``; returns ``(tokens_nT, logp_nT, entropy_nT, length_n, eos_n)`` on CPU.

    ``cuda_graphs`` None means "on CUDA, yes"; True on a CPU model is an error. ``dtype`` as in
    ``compute_dtype``. ``fuse`` (None: on CUDA) stacks q/k/v and gate/up weights for the call
    (``DecoderWeights.from_model``); on CPU the model's own tensors are read without a copy.
    """
    device = next(model.parameters()).device
    graphs = device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs)
    if graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a CUDA model, this one is on {device}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    W = DecoderWeights.from_model(model, compute_dtype(model, dtype),
                                  fuse=device.type == "cuda" if fuse is None else fuse)
    n, T = row_to_uniq.numel(), max_new_tokens
    ids_uL, mask_uL = sampler.left_pad(uniq_ids, pad_id)
    ids_uL, mask_uL = ids_uL.to(device), mask_uL.to(device)
    L = ids_uL.shape[1]
    slots = -(-(L + T) // 8) * 8  # a multiple of 8 keeps fused attention kernels on their aligned path

    with torch.autocast(device.type, enabled=False):
        s = _State(W, n, slots, T, device, pad_id=pad_id)
        if not greedy:
            s.u_Tn = torch.rand((T, n), generator=generator, device=generator.device).to(device)
        # Prefill each distinct prompt once, then copy its keys/values to the rows of its group.
        h_uLD, kv = prefill(W, ids_uL, mask_uL)
        sel = row_to_uniq.to(device)
        for (kc, vc), (k, v) in zip(s.cache, kv):
            kc[:, :, :L] = k[sel]
            vc[:, :, :L] = v[sel]
        s.valid_nS[:, :L] = mask_uL[sel]
        s.pos_n.copy_(mask_uL.sum(-1)[sel])   # position of the first generated token
        s.slot_1.fill_(L)
        draw = dict(pad_id=pad_id, eos_id=eos_id, temperature=temperature, top_p=top_p, greedy=greedy)
        record_draw(s, logits(W, h_uLD[:, -1])[sel], **draw)

        def step() -> None:
            # Feeds the token drawn last (finished rows too: fixed shapes), draws the next one.
            logits_nV = decode_forward(W, s.tok_n, s.pos_n, s.slot_1, s.valid_nS, s.cache)
            record_draw(s, logits_nV, **draw)
            s.pos_n.add_(1)
            s.slot_1.add_(1)

        _decode_loop(step, T - 1, s.alive_n, graphs=graphs, check_every=check_every)
    return s.tokens_nT.cpu(), s.logp_nT.cpu(), s.entropy_nT.cpu(), s.length_n.cpu(), s.eos_n.cpu()


def _fallback_reason(model) -> str | None:
    reason = static_support(model)
    if reason is not None and (type(model).__name__, reason) not in _WARNED:
        _WARNED.add((type(model).__name__, reason))
        warnings.warn(f"rollout.engine static: unsupported model ({reason}); using the builtin loop",
                      stacklevel=3)
    return reason


def chunk_for(model, *, cuda_graphs: bool | None = None, dtype: torch.dtype | None = None
              ) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The chunk generator (``sampler._generate_chunk``'s contract) of the static engine for ``model``:
    ``generate_chunk_static``, or the builtin loop after a one-time warning when it is unsupported."""
    if _fallback_reason(model) is not None:
        return sampler._generate_chunk

    def chunk(*args, **kw):
        return generate_chunk_static(*args, cuda_graphs=cuda_graphs, dtype=dtype, **kw)
    return chunk


def sample_static(
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
    cuda_graphs: bool | None = None,
    dtype: torch.dtype | None = None,
) -> RolloutBatch:
    """``sampler.sample``'s contract (arguments, validation, returned batch) on the static decoder;
    an unsupported model (``static_support``) runs the builtin loop after a one-time warning."""
    chunk = chunk_for(model, cuda_graphs=cuda_graphs, dtype=dtype)
    return sampler.sample_with(chunk, model, tokenizer, prompts, group_size=group_size, temperature=temperature,
                               top_p=top_p, max_new_tokens=max_new_tokens, generator=generator,
                               batch_size=batch_size, greedy=greedy, prompt_texts=prompt_texts, progress=progress)


def generate_from_ids(model: torch.nn.Module, contexts: Sequence[Sequence[int]], *, pad_id: int, eos_id: int,
                      max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
                      generator: torch.Generator | None = None, cuda_graphs: bool | None = None,
                      dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """One completion per token-id context (no grouping); ``(tokens_nT, logp_nT, entropy_nT,
    length_n, eos_n)`` on CPU as in ``sampler.generate_from_ids``; falls back like ``sample_static``."""
    chunk = chunk_for(model, cuda_graphs=cuda_graphs, dtype=dtype)
    return sampler.generate_ids_with(chunk, model, contexts, pad_id=pad_id, eos_id=eos_id,
                                     max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     greedy=greedy, generator=generator)
