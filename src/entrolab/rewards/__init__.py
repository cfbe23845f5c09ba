"""Reward terms, reward shapers and their composition. Importing the package registers them all."""

from entrolab.rewards import basic, compose, verifier  # noqa: F401  (registration side effects)
from entrolab.rewards.compose import PerSample, RewardError, compute_rewards

__all__ = ["PerSample", "RewardError", "compute_rewards"]
