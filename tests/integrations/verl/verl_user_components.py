"""A user's own token weight and regularizer that read only what verl's policy-loss call passes.

Loaded by dotted path (``verl_user_components:HalfPositive``) in the verl integration tests to check
the composition surrogate × weights + regularizers inside one verl loss.
"""

from __future__ import annotations

import torch


class HalfPositive:
    """Weight 0.5 on tokens with a positive advantage, 1 elsewhere."""

    def __call__(self, inp):
        return torch.where(inp.adv_BT > 0, 0.5, 1.0).to(inp.logp_BT.dtype), {"user/half_frac": 0.0}


class SquaredLogRatio:
    """Per-token penalty coef·(log π_θ − log π_old)² (a regularizer returning loss_BT)."""

    def __init__(self, *, coef: float = 0.1):
        self.coef = coef

    def __call__(self, inp):
        return self.coef * (inp.logp_BT - inp.old_logp_BT) ** 2 * inp.mask_BT, {}


class MeanLogProbPenalty:
    """A 0-dim regularizer: coef · mean of log π_θ over valid tokens of the micro-batch."""

    def __init__(self, *, coef: float = 0.1):
        self.coef = coef

    def __call__(self, inp):
        m = inp.mask_BT.to(inp.logp_BT.dtype)
        return self.coef * (inp.logp_BT * m).sum() / m.sum(), {}
