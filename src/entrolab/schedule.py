"""Learning-rate schedule shared by SFT and RL: linear warmup, then constant, linear or cosine decay."""

from __future__ import annotations

import math


def lr_factor(step: int, *, steps: int, warmup: int, schedule: str, final: float = 0.1) -> float:
    """Multiplier of the base LR at optimizer/scheduler step ``step`` (0-based).

    Linear warmup over ``warmup`` steps, then ``constant``, or a ``linear`` / ``cosine`` decay that
    reaches ``final`` × the base LR at ``steps``.
    """
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; valid: constant, linear, cosine")
    if step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, steps - warmup))
    decay = {"constant": 0.0, "linear": frac, "cosine": 0.5 * (1 - math.cos(math.pi * frac))}[schedule]
    return 1.0 - (1.0 - final) * decay
