"""Clock stamps of a training step turned into its ``time/*`` metrics (docs/CONTRACTS.md)."""

from __future__ import annotations

#: The parts of a training step, in order, each timed from the previous clock stamp to the next.
STEP_PARTS = ("rollout", "score", "verify_reward", "side", "update", "log")


def step_times(stamps: list[float], *, side: bool) -> dict[str, float]:
    """``time/<part>_s`` for each of ``STEP_PARTS`` from ``len(STEP_PARTS) + 1`` consecutive clock
    stamps, and ``time/step_s`` = last − first, so the parts sum to the step (up to float rounding).
    Without side passes or replayed rows (``side`` False) their interval, a loop over the hooks, is
    counted in ``time/verify_reward_s`` rather than logged as a ~0 ``time/side_s``."""
    if len(stamps) != len(STEP_PARTS) + 1:
        raise ValueError(f"need {len(STEP_PARTS) + 1} clock stamps, got {len(stamps)}")
    out = {f"time/{part}_s": b - a for part, a, b in zip(STEP_PARTS, stamps, stamps[1:])}
    if not side:
        out["time/verify_reward_s"] += out.pop("time/side_s")
    out["time/step_s"] = stamps[-1] - stamps[0]
    return out
