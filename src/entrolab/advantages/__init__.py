"""Advantage estimators. Importing the package registers them all in ``ADVANTAGES``."""

from entrolab.advantages import baselines, common  # noqa: F401  (registration side effects)
from entrolab.advantages.baselines import grpo_advantage, rloo_advantage

__all__ = ["grpo_advantage", "rloo_advantage"]
