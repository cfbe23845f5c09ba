"""Multi-turn decoding that keeps each episode's KV cache between turns (``rollout.episode_cache: keep``).

The default multi-turn rollout re-prefills each live episode's whole context every turn. Here one
cache holds every episode of the batch for the whole rollout: a turn feeds only what is new to each
episode (the last token of its previous turn, which the decode loop sampled but never fed, and the
environment's observation), then decodes. Rows of a batch have different amounts of new text, so
the cache has holes: a slot some rows leave unused (a shorter observation, an idle or finished
episode) is masked out of attention for that row, and positions count each row's real tokens only
(``cumsum(mask) − 1``, as in ``models.forward.completion_stats``). The model therefore sees exactly the
context the re-prefill path builds, and the log-probs agree to float rounding (tested).

The trade: no row is ever dropped from the batch (the cache must survive the turn), so finished
episodes still cost a row of compute each step; the re-prefill path compacts them away. Keeping the
cache wins when contexts are long compared with the turns (real models, long tool outputs).
"""

from __future__ import annotations

import torch

from entrolab.rollout.draw import next_token
from entrolab.rollout.kvcache import new_cache
from entrolab.rollout.sampler import _forward_kwargs


class TurnCache:
    """The KV cache and attention bookkeeping of ``B`` episodes across their turns."""

    def __init__(self, model: torch.nn.Module, batch_size: int, *, pad_id: int, capacity: int = 256):
        self.model, self.B, self.pad_id = model, batch_size, pad_id
        self.device = next(model.parameters()).device
        self.cache_kw, self.keep_kw = _forward_kwargs(model)
        self.cache = new_cache(model, capacity)
        self.attn_BS = torch.zeros((batch_size, 0), dtype=torch.bool, device=self.device)
        self.pos_B = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    def _feed(self, ids_BW: torch.Tensor, mask_BW: torch.Tensor, *, last_only: bool) -> torch.Tensor:
        """Append a block of ``W`` slots (``mask_BW`` True = a real token of that row); return the
        logits after the block's last slot."""
        pos_BW = self.pos_B[:, None] + (mask_BW.long().cumsum(-1) - 1).clamp(min=0)
        self.attn_BS = torch.cat([self.attn_BS, mask_BW], dim=1)
        extra = {self.keep_kw: 1} if (last_only and self.keep_kw) else {}
        out = self.model(input_ids=ids_BW, attention_mask=self.attn_BS.long(), position_ids=pos_BW,
                         use_cache=True, **{self.cache_kw: self.cache}, **extra)
        self.pos_B = self.pos_B + mask_BW.sum(-1)
        return out.logits[:, -1, :]

    @torch.no_grad()
    def generate(self, live: list[int], pending: dict[int, list[int]], *, eos_id: int, max_new_tokens: int,
                 temperature: float, top_p: float, greedy: bool, generator: torch.Generator | None
                 ) -> tuple[torch.Tensor, ...]:
        """One turn for the rows ``live``: feed each its ``pending`` ids, then decode.

        Returns ``(tokens_nT, logp_nT, entropy_nT, length_n, eos_n)`` on CPU for the ``n`` live rows
        in order (``sampler._generate_chunk``'s layout). The caller's next ``pending`` of a row must
        start with that row's last generated token: it was sampled, never fed.
        """
        dev, B, T = self.device, self.B, max_new_tokens
        W = max(len(pending[b]) for b in live)
        if W == 0:
            raise ValueError("every live row needs at least one pending token")
        ids_BW = torch.full((B, W), self.pad_id, dtype=torch.long, device=dev)
        mask_BW = torch.zeros((B, W), dtype=torch.bool, device=dev)
        for b in live:  # left-aligned against the block's end: the last slot is each row's newest token
            ids = pending[b]
            ids_BW[b, W - len(ids):] = torch.as_tensor(ids, dtype=torch.long, device=dev)
            mask_BW[b, W - len(ids):] = True
        logits_BV = self._feed(ids_BW, mask_BW, last_only=True)
        rows = torch.as_tensor(live, dtype=torch.long, device=dev)
        active_B = torch.zeros(B, dtype=torch.bool, device=dev)
        active_B[rows] = True
        n = len(live)
        tokens_nT = torch.full((n, T), self.pad_id, dtype=torch.long, device=dev)
        logp_nT = torch.zeros((n, T), device=dev)
        entropy_nT = torch.zeros((n, T), device=dev)
        length_n = torch.full((n,), T, dtype=torch.long, device=dev)
        eos_n = torch.zeros(n, dtype=torch.bool, device=dev)
        for t in range(T):
            u_B = None
            if not greedy:  # one uniform per live row (as the re-prefill path), in row order
                u_n = torch.rand(n, generator=generator, device=generator.device).to(dev)
                u_B = torch.zeros(B, device=dev)
                u_B[rows] = u_n
            tok_B, lp_B, ent_B = next_token(logits_BV, u_B, temperature=temperature, top_p=top_p, greedy=greedy)
            act_n = active_B[rows]
            tokens_nT[act_n, t] = tok_B[rows][act_n]
            logp_nT[act_n, t] = lp_B[rows][act_n]
            entropy_nT[act_n, t] = ent_B[rows][act_n]
            hit_n = act_n & (tok_B[rows] == eos_id)
            eos_n |= hit_n
            length_n[hit_n] = t + 1
            active_B[rows[hit_n]] = False
            if t == T - 1 or not bool(active_B.any()):
                break
            # rows still in their turn feed the token they drew; every other row leaves a hole
            logits_BV = self._feed(tok_B.unsqueeze(-1), active_B.unsqueeze(-1), last_only=False)
        return tokens_nT.cpu(), logp_nT.cpu(), entropy_nT.cpu(), length_n.cpu(), eos_n.cpu()
