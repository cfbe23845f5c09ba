"""Write our own trainer's rollout batches in the diagnostics schema (``run_dir/rollouts.jsonl``).

The trainer (or any script holding a :class:`~entrolab.types.RolloutBatch`) calls
:func:`append_rollouts` with :func:`batch_records` every few steps; ``diagnose(run_dir)`` then finds
``rollouts*.jsonl`` next to ``metrics.jsonl`` and ``eval/``. Pure conversion, no model calls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from entrolab.diagnostics.rank import effective_rank, effective_rank_dynamics
from entrolab.diagnostics.schema import parse_sample
from entrolab.types import Prompt, RolloutBatch, Task


def _default_difficulty(prompt: Prompt) -> Any:
    return (prompt.meta or {}).get("difficulty")


def batch_records(
    batch: RolloutBatch,
    *,
    run: str,
    task: Task | None = None,
    phase_split_B: Sequence[int | None] | None = None,
    policy_logp_BT: torch.Tensor | None = None,
    difficulty: Callable[[Prompt], Any] = _default_difficulty,
    reward_delta: float | None = None,
    rank_stride: int = 8,
    rank_max_len: int = 512,
) -> list[dict[str, Any]]:
    """One schema record per sequence of ``batch`` (validated with :func:`parse_sample`).

    Args:
        batch: a verified, rewarded batch (``verdicts`` and ``rewards_B`` set); per-token fields
            (``old_logp_BT``, ``entropy_BT``, ``adv_BT``, ``ref_logp_BT``) are written when present.
            With ``hidden_BTD`` (set by the trainer when a component requires ``hidden``, e.g. the
            ``effective_rank`` advantage), each response also gets ``er`` and, when it has at least two
            prefix checkpoints, ``erv`` / ``era`` (:func:`~entrolab.diagnostics.rank.effective_rank_dynamics`
            on its valid tokens; a NaN ERA, from exactly two checkpoints, is left out).
        run: the run label.
        task: when given, ``task.solutions(prompt)`` fills ``solutions`` (enumerable tasks only).
        phase_split_B: per sequence, the token index where the answer section starts (None = none).
        policy_logp_BT: [B, T] log-probs under the updated policy, for the clipping section.
        difficulty: prompt → difficulty bucket (default ``prompt.meta["difficulty"]``).
        reward_delta: size of the reward perturbation this run trains with (policy cliff); None reads
            ``batch.extras["reward_delta"]``, which the ``perturbed`` reward term sets (absent: none).
        rank_stride: prefix spacing s of ERV/ERA; 8 matches ``recipes/effective_rank.yaml`` (testbed
            responses are ~40 tokens; upstream uses 40 for ~1500-token responses).
        rank_max_len: window (last tokens) of ERV/ERA, upstream default 512.
    """
    if batch.verdicts is None or batch.rewards_B is None:
        raise ValueError("batch_records needs a verified batch with rewards (verdicts and rewards_B set)")
    B = batch.batch_size
    if phase_split_B is not None and len(phase_split_B) != B:
        raise ValueError(f"phase_split_B has {len(phase_split_B)} entries for {B} sequences")
    if reward_delta is None:
        reward_delta = batch.extras.get("reward_delta")
    lengths = batch.mask_BT.sum(-1).tolist()
    solutions: dict[int, list[str] | None] = {}

    def tokens(t: torch.Tensor | None, b: int) -> list[float] | None:
        return None if t is None else t[b, : lengths[b]].detach().float().cpu().tolist()

    out = []
    for b in range(B):
        g = int(batch.group_id_B[b])
        prompt = batch.prompts[g]
        v = batch.verdicts[b]
        rec: dict[str, Any] = {
            "prompt_id": prompt.id, "run": run, "step": int(batch.step), "completion": batch.texts[b],
            "reward": float(batch.rewards_B[b]), "correct": bool(v.correct), "answer": v.answer,
        }
        for key, t in (("logprobs", batch.old_logp_BT), ("entropies", batch.entropy_BT),
                       ("ref_logprobs", batch.ref_logp_BT), ("policy_logprobs", policy_logp_BT),
                       ("advantage", batch.adv_BT)):
            values = tokens(t, b)
            if values is not None:
                rec[key] = values
        if phase_split_B is not None and phase_split_B[b] is not None:
            rec["phase_split"] = int(phase_split_B[b])
        diff = difficulty(prompt)
        if diff is not None:
            rec["difficulty"] = diff
        if task is not None:
            if g not in solutions:
                solutions[g] = task.solutions(prompt)
            if solutions[g] is not None:
                rec["solutions"] = list(solutions[g])
        if reward_delta is not None:
            rec["reward_delta"] = float(reward_delta)
        if batch.reward_terms:
            rec["rewards"] = {k: float(t[b]) for k, t in batch.reward_terms.items()}
        if batch.hidden_BTD is not None and lengths[b] > 0:
            rec.update(_rank_fields(batch.hidden_BTD[b, : lengths[b]], stride=rank_stride, max_len=rank_max_len))
        parse_sample(rec)  # fail here, at the writer, rather than later in diagnose
        out.append(rec)
    return out


def _rank_fields(hidden_TD: torch.Tensor, *, stride: int, max_len: int) -> dict[str, float]:
    """``er`` always; ``erv`` and ``era`` when defined and finite (the schema needs finite numbers)."""
    h = hidden_TD.detach().double().cpu()
    dyn = effective_rank_dynamics(h, stride=stride, max_len=max_len)
    if dyn is None:
        return {"er": effective_rank(h)}
    return {k: v for k, v in dyn.items() if math.isfinite(v)}


def append_rollouts(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Append records as JSON lines to ``path`` (created with its parents)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, allow_nan=False) + "\n")
    return path
