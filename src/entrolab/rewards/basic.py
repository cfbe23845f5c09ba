"""Simple reward terms: answer-format reward, DAPO soft overlong penalty, linear length penalty.

Lengths are counted in completion tokens including EOS (``batch.lengths_B``, i.e. ``mask_BT.sum``).
"""

from __future__ import annotations

import torch

from entrolab.registry import REWARDS
from entrolab.types import Metrics, RolloutBatch, Task


# --------------------------------------------------------------------------- pure functions
def format_ok(text: str, marker: str, *, require_scratchpad: bool = False) -> bool:
    """True if ``text`` has exactly one ``marker`` with a non-blank answer after it.

    With ``require_scratchpad`` the part before the marker must also be non-blank.
    """
    if not marker:
        raise ValueError("format_ok: empty answer marker")
    if text.count(marker) != 1:
        return False
    before, _, after = text.partition(marker)
    return bool(after.strip()) and (bool(before.strip()) or not require_scratchpad)


@torch.no_grad()
def overlong_penalty(lengths_B: torch.Tensor, *, max_len: int = 48, cache: int = 16,
                     factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment (Yu et al., arXiv 2503.14476, Eq. 13).

    ``R(L) = 0`` if ``L ≤ L_max − L_cache``; ``(L_max − L_cache − L)/L_cache`` if
    ``L_max − L_cache < L ≤ L_max``; ``−1`` if ``L > L_max``; all times ``factor``.

    Args:
        lengths_B: [B] completion lengths in tokens.
        max_len: ``L_max`` (set it to ``rollout.max_new_tokens``).
        cache: ``L_cache``, the length of the linear penalty ramp.
        factor: scale of the penalty (verl's ``overlong_penalty_factor``).

    Returns:
        penalty_B: [B] in ``[−factor, 0]``.
    """
    L = lengths_B.to(torch.float32)
    start = float(max_len - cache)
    ramp = (start - L) / float(cache)
    out = torch.where(L <= start, torch.zeros_like(L), ramp)
    out = torch.where(L > max_len, torch.full_like(L, -1.0), out)
    return factor * out


@torch.no_grad()
def linear_length_penalty(lengths_B: torch.Tensor, *, target: int = 32, coef: float = 0.01) -> torch.Tensor:
    """``−coef · max(0, L − target)``: the length penalty PAR applies to raw rewards (arXiv 2502.18770)."""
    return -coef * (lengths_B.to(torch.float32) - float(target)).clamp(min=0.0)


# --------------------------------------------------------------------------- registered rewards
@REWARDS.register("format", paper="baseline")
class FormatReward:
    """``reward`` if the completion has exactly one answer marker followed by an answer, else ``penalty``.

    The marker is the task's ``answer_marker``. ``require_eos`` also fails truncated completions.
    Logs ``reward/format_ok`` (fraction well-formed).
    """

    def __init__(self, *, reward: float = 1.0, penalty: float = 0.0, require_scratchpad: bool = False,
                 require_eos: bool = False):
        self.reward, self.penalty = float(reward), float(penalty)
        self.require_scratchpad, self.require_eos = bool(require_scratchpad), bool(require_eos)

    def __call__(self, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        marker = getattr(task, "answer_marker", None)
        if not marker:
            raise ValueError(f"reward 'format' needs a task with an answer_marker; task "
                             f"{getattr(task, 'name', task)!r} has none")
        ok = [format_ok(t, marker, require_scratchpad=self.require_scratchpad)
              and (not self.require_eos or s == "eos") for t, s in zip(batch.texts, batch.stop_reasons)]
        values_B = torch.tensor([self.reward if o else self.penalty for o in ok], dtype=torch.float32)
        return values_B, {"reward/format_ok": sum(ok) / max(1, len(ok))}


@REWARDS.register("overlong", paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
                  arxiv="2503.14476")
class OverlongPenalty:
    """DAPO soft overlong punishment: 0 up to ``max_len − cache`` tokens, a linear ramp to −1 at ``max_len``."""

    def __init__(self, *, max_len: int = 48, cache: int = 16, factor: float = 1.0):
        if cache < 1 or max_len < cache:
            raise ValueError(f"need 1 <= cache <= max_len, got cache={cache}, max_len={max_len}")
        if factor < 0:
            raise ValueError(f"factor must be >= 0, got {factor}")
        self.max_len, self.cache, self.factor = int(max_len), int(cache), float(factor)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        pen_B = overlong_penalty(batch.lengths_B, max_len=self.max_len, cache=self.cache, factor=self.factor)
        return pen_B, {"reward/overlong_frac": float((pen_B < 0).float().mean()) if pen_B.numel() else 0.0}


@REWARDS.register("length", paper="Reward Shaping to Mitigate Reward Hacking in RLHF", arxiv="2502.18770")
class LengthPenalty:
    """Linear length penalty ``−coef · max(0, L − target)`` (PAR's raw-reward length penalty; 0.01/300 there)."""

    def __init__(self, *, target: int = 32, coef: float = 0.01):
        if target < 0 or coef < 0:
            raise ValueError(f"target and coef must be >= 0, got target={target}, coef={coef}")
        self.target, self.coef = int(target), float(coef)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        return linear_length_penalty(batch.lengths_B, target=self.target, coef=self.coef), {}
