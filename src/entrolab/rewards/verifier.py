"""The task verifier as a reward term, and a helper that makes sure verdicts exist."""

from __future__ import annotations

import torch

from entrolab.registry import REWARDS
from entrolab.types import Metrics, RolloutBatch, Task, Verdict


def ensure_verdicts(batch: RolloutBatch, task: Task | None) -> list[Verdict]:
    """Return ``batch.verdicts``, computing them with ``task.verify`` (and storing them) if missing."""
    if batch.verdicts is None:
        if task is None:
            raise ValueError("batch has no verdicts and no task was given to compute them")
        batch.verdicts = [task.verify(batch.prompts[int(g)], text)
                          for g, text in zip(batch.group_id_B.tolist(), batch.texts)]
    if len(batch.verdicts) != batch.batch_size:
        raise ValueError(f"batch has {len(batch.verdicts)} verdicts for {batch.batch_size} completions")
    return batch.verdicts


@REWARDS.register("verifier", paper="baseline")
class VerifierReward:
    """The task verifier's reward per completion (``Verdict.reward``), e.g. 1 correct / 0 otherwise.

    If the trainer has not filled ``batch.verdicts`` yet, they are computed with ``task.verify``.
    (``reward/pass_rate`` is logged by the trainer from ``Verdict.correct``.)
    """

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        verdicts = ensure_verdicts(batch, task)
        values_B = torch.tensor([float(v.reward) for v in verdicts], dtype=torch.float32)
        return values_B, {}
