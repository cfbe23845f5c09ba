"""A replay buffer of whole rollout rows, checkpointable as tensors and lists (SPEAR's self-imitation).

Rows are kept as one compact ``RolloutBatch`` (with their ``Episode`` records, if any) (only the prompts they use, groups preserved: rows of
one prompt group sampled at one step stay one group) plus the step each row was sampled at. The
scored fields (``old_logp_BT``, ``entropy_BT``, ``ref_logp_BT``, ``hidden_BTD``) and scored extras
are dropped on insertion: the trainer re-scores replayed rows under the current policy.

``state_dict`` holds only tensors, lists, dicts and plain values, so a checkpoint loads with
``torch.load(..., weights_only=True)`` and a resumed run replays exactly the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import torch

from entrolab.types import Prompt, RolloutBatch, Verdict, is_row_extra, is_row_list

#: The row list of ``Episode`` records of a multi-turn batch (``types.ROW_LISTS``).
EPISODES = "episodes"

#: Scored row extras that describe the policy at sampling time, not the row: never replayed.
SCORED_EXTRA_PREFIXES = ("logp_at_T", "sampling_logp_", "policy_logp_")
#: RolloutBatch fields the trainer fills by scoring; None in stored rows.
SCORED_FIELDS = ("old_logp_BT", "entropy_BT", "ref_logp_BT", "hidden_BTD")


def strip_scored(batch: RolloutBatch) -> RolloutBatch:
    """``batch`` without scored fields and with only its unscored per-row extras (a new object)."""
    b = batch_from_state(batch_state(batch))  # a CPU copy with per-row extras only
    for name in SCORED_FIELDS:
        setattr(b, name, None)
    b.extras = {k: v for k, v in b.extras.items() if not k.startswith(SCORED_EXTRA_PREFIXES)}
    return b


def compact(batch: RolloutBatch) -> RolloutBatch:
    """Keep only the prompts ``batch``'s rows use; group ids renumbered 0..K-1 in first-use order."""
    used: dict[int, int] = {}
    for g in batch.group_id_B.tolist():
        used.setdefault(int(g), len(used))
    batch.prompts = [batch.prompts[g] for g in used]
    batch.group_id_B = torch.tensor([used[int(g)] for g in batch.group_id_B.tolist()], dtype=torch.long)
    return batch


def batch_state(batch: RolloutBatch) -> dict[str, Any]:
    """Every field of ``batch`` as tensors, lists and plain values (per-row extras only)."""
    out: dict[str, Any] = {}
    for f in fields(RolloutBatch):
        v = getattr(batch, f.name)
        if f.name == "prompts":
            v = [asdict(p) for p in v]
        elif f.name == "verdicts":
            v = None if v is None else [asdict(x) for x in v]
        elif f.name == "extras":
            v = {k: (t.detach().cpu().clone() if is_row_extra(k, t, batch.batch_size) else [asdict(e) for e in t])
                 for k, t in v.items() if is_row_extra(k, t, batch.batch_size) or _is_episodes(k, t, batch)}
        elif f.name == "reward_terms":
            v = {k: t.detach().cpu().clone() for k, t in v.items()}
        elif isinstance(v, torch.Tensor):
            v = v.detach().cpu().clone()
        elif isinstance(v, list):
            v = list(v)
        out[f.name] = v
    return out


def batch_from_state(state: dict[str, Any]) -> RolloutBatch:
    """Inverse of ``batch_state``."""
    from entrolab.agents.episodes import Episode

    kw = dict(state)
    kw["prompts"] = [Prompt(**p) for p in kw["prompts"]]
    if kw.get("verdicts") is not None:
        kw["verdicts"] = [Verdict(**v) for v in kw["verdicts"]]
    kw["extras"] = dict(kw["extras"])
    if EPISODES in kw["extras"]:
        kw["extras"][EPISODES] = [Episode(**{**e, "outcome": None if e["outcome"] is None else Verdict(**e["outcome"])})
                                  for e in kw["extras"][EPISODES]]
    return RolloutBatch(**kw)


def _is_episodes(name: str, value: Any, batch: RolloutBatch) -> bool:
    """The multi-turn batch's per-row ``Episode`` records (kept with their rows, as plain dicts in state)."""
    return name == EPISODES and is_row_list(name, value, batch.batch_size)


class ReplayBuffer:
    """Rows of past rollout batches, each tagged with the step it was sampled at.

    Eviction (SPEAR, ``TrajectoryBufferBatch.remove_old``): when rows are added at step t, rows
    sampled more than ``tolerate_steps`` steps before t are dropped (they are too off-policy).
    ``take`` empties the buffer (SPEAR replays the whole buffer once, then resets it).
    """

    def __init__(self, *, tolerate_steps: int = 5):
        if tolerate_steps < 0:
            raise ValueError(f"tolerate_steps must be >= 0, got {tolerate_steps}")
        self.tolerate_steps = int(tolerate_steps)
        self.rows: RolloutBatch | None = None
        self.step_B = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.step_B.numel())

    def add(self, rows: RolloutBatch, *, step: int) -> int:
        """Evict stale rows, then append ``rows`` (sampled at ``step``). Returns how many were evicted."""
        evicted = self.evict(step=step)
        if rows.batch_size == 0:
            return evicted
        new = strip_scored(rows)
        if self.rows is not None:  # stored rows carry no log-probs: their temperature is a label only
            self.rows.temperature = new.temperature
        self.rows = compact(new if self.rows is None else RolloutBatch.concat([self.rows, new]))
        self.step_B = torch.cat([self.step_B, torch.full((rows.batch_size,), int(step), dtype=torch.long)])
        return evicted

    def evict(self, *, step: int) -> int:
        """Drop rows sampled more than ``tolerate_steps`` steps before ``step``; returns how many."""
        if not len(self):
            return 0
        keep_B = (int(step) - self.step_B) <= self.tolerate_steps
        n = int((~keep_B).sum())
        if n:
            self._keep(keep_B)
        return n

    def _keep(self, keep_B: torch.Tensor) -> None:
        idx = keep_B.nonzero().flatten()
        if idx.numel() == 0:
            self.rows, self.step_B = None, torch.zeros(0, dtype=torch.long)
            return
        self.rows = compact(self.rows.select(idx))
        self.step_B = self.step_B[idx]

    def take(self) -> tuple[RolloutBatch | None, torch.Tensor]:
        """All rows and their steps; the buffer is empty afterwards."""
        rows, step_B = self.rows, self.step_B
        self.rows, self.step_B = None, torch.zeros(0, dtype=torch.long)
        return rows, step_B

    def state_dict(self) -> dict[str, Any]:
        return {"rows": None if self.rows is None else batch_state(self.rows), "step_B": self.step_B.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = None if state["rows"] is None else batch_from_state(state["rows"])
        self.step_B = state["step_B"].clone().long()
