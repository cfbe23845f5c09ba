"""Partial credit for Countdown: how close a well-formed answer over the right numbers comes to the target.

A *helpful* auxiliary reward for the BARFI study: it pays 1 for a correct answer, less for an
answer that uses exactly the given numbers but misses, decaying with the distance to the target,
and 0 for everything else, so it agrees with the verifier on every correct answer and on every
malformed one.
"""

from __future__ import annotations

import math

import torch

from entrolab.registry import REWARDS
from entrolab.rewards.verifier import ensure_verdicts
from entrolab.tasks.expr import ExprError, parse
from entrolab.types import Metrics, RolloutBatch, Task


def closeness(value: float | None, target: float, *, scale: float = 10.0) -> float:
    """``exp(−|value − target| / scale)``; 0 for no value (e.g. a division by zero)."""
    if value is None:
        return 0.0
    return math.exp(-abs(float(value) - float(target)) / scale)


@REWARDS.register("closeness", paper="baseline")
class ClosenessReward:
    """Countdown partial credit ``exp(−|value − target|/scale)`` for answers over exactly the given numbers.

    A correct answer gets 1; a near miss (verdict ``wrong_value``) gets ``exp(−distance/scale)``;
    anything else 0. Needs a task whose prompts carry ``meta["target"]`` (Countdown).
    """

    def __init__(self, *, scale: float = 10.0):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        vals = []
        for g, v in zip(batch.group_id_B.tolist(), ensure_verdicts(batch, task)):
            if v.correct:
                vals.append(1.0)
                continue
            if v.reason != "wrong_value" or v.answer is None:
                vals.append(0.0)
                continue
            prompt = batch.prompts[int(g)]
            if "target" not in (prompt.meta or {}):
                raise ValueError(f"reward 'closeness' needs prompt.meta['target'] (a Countdown task); "
                                 f"prompt {prompt.id!r} has none")
            try:  # the verdict's answer is the canonical text of an expression that parsed once already
                value = parse(v.answer, max_chars=10_000).value
            except ExprError as err:
                raise ValueError(f"reward 'closeness': cannot re-parse answer {v.answer!r} of prompt "
                                 f"{prompt.id!r}: {err}") from err
            vals.append(closeness(value, prompt.meta["target"], scale=self.scale))
        return torch.tensor(vals, dtype=torch.float32), {}
