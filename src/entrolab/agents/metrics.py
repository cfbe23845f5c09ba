"""Per-episode diagnostics of multi-turn batches: success, turns used, tool calls, malformed turns,
stops by budget, and the policy's entropy turn by turn (docs/agents.md lists them).

``episode_metrics`` gives a training step's ``agent/*`` metrics; ``episode_summary`` the keys an
evaluation adds to its summary. Both read the extras ``agents.episodes.sample_episodes`` writes.
"""

from __future__ import annotations

from typing import Sequence

import torch

from entrolab.types import RolloutBatch


def turn_entropies(entropy_BT: torch.Tensor, mask_BT: torch.Tensor, turn_id_BT: torch.Tensor) -> dict[int, float]:
    """Mean entropy over the model tokens of each turn index k, pooled over episodes: {k: H̄_k}."""
    out = {}
    valid_BT = mask_BT.bool() & (turn_id_BT >= 0)
    for k in sorted(set(turn_id_BT[valid_BT].tolist())):
        sel_BT = valid_BT & (turn_id_BT == k)
        out[int(k)] = float(entropy_BT[sel_BT].float().mean())
    return out


def _stats(batches: Sequence[RolloutBatch]) -> dict[str, float]:
    ex = {k: torch.cat([b.extras[k].float().cpu() for b in batches])
          for k in ("turns_B", "tool_calls_B", "malformed_B", "success_B", "episode_return_B")}
    stops = [ep.stop for b in batches for ep in b.extras["episodes"]]
    n = max(1, len(stops))
    out = {"turns": float(ex["turns_B"].mean()), "tool_calls": float(ex["tool_calls_B"].mean()),
           "malformed": float(ex["malformed_B"].mean()), "success": float(ex["success_B"].mean()),
           "return": float(ex["episode_return_B"].mean()),
           "turn_budget_frac": sum(s == "turn_budget" for s in stops) / n,
           "token_budget_frac": sum(s == "token_budget" for s in stops) / n}
    with_ent = [b for b in batches if b.entropy_BT is not None]
    if with_ent:
        width = max(b.mask_BT.shape[1] for b in with_ent)

        def padded(t, fill):
            return torch.nn.functional.pad(t.cpu(), (0, width - t.shape[1]), value=fill)

        ents = turn_entropies(torch.cat([padded(b.entropy_BT.float(), 0.0) for b in with_ent]),
                              torch.cat([padded(b.mask_BT, False) for b in with_ent]),
                              torch.cat([padded(b.extras["turn_id_BT"], -1) for b in with_ent]))
        out.update({f"entropy_turn{k}": v for k, v in ents.items()})
    return out


def episode_metrics(batch: RolloutBatch) -> dict[str, float]:
    """``agent/*`` metrics of one training batch (empty for a single-turn batch)."""
    if "episodes" not in batch.extras:
        return {}
    return {f"agent/{k}": v for k, v in _stats([batch]).items()}


def episode_summary(batches: Sequence[RolloutBatch]) -> dict[str, float]:
    """Evaluation summary keys of sampled episodes (``episode_<stat>``; empty when there are none)."""
    batches = [b for b in batches if "episodes" in b.extras]
    return {f"episode_{k}": v for k, v in _stats(batches).items()} if batches else {}
