"""Reward terms, reward shapers and their composition. Importing the package registers them all.

Reward terms (``REWARDS``): verifier, format, overlong, length, spurious, incorrect, near_miss,
diversity, ensemble, reward_model, likelihood,
barfi, closeness, oni, router_r1, tool_call (SPEAR's scheduled tool-use bonus).
Shapers (``SHAPERS``): pear, ares_hwe, kl_in_reward, ctrl_u, par and the
baselines it is compared against (centered, lsc, meanstd, clip, minmax).
"""

from entrolab.rewards import (  # noqa: F401  (registration side effects)
    ares,
    barfi,
    basic,
    closeness,
    compose,
    ctrl_u,
    diversity,
    ensemble,
    kl_reward,
    likelihood,
    oni,
    par,
    pear,
    perturb,
    reward_model,
    router_r1,
    segments,
    spurious,
    tool_call,
    verifier,
)
from entrolab.rewards.compose import PerSample, RewardError, compute_rewards

__all__ = ["PerSample", "RewardError", "compute_rewards"]
