"""Advantage estimators. Importing the package registers them all in ``ADVANTAGES``.

Baselines: grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, raw. Methods: gaussian
(G²RPO), canon, riskpo, copo, empg, effective_rank (VERL), spear (with the trainer's replay hook).
"""

from entrolab.advantages import (  # noqa: F401  (registration side effects)
    baselines,
    canon,
    common,
    copo,
    effective_rank,
    empg,
    gaussian,
    riskpo,
    spear,
)
from entrolab.advantages.baselines import grpo_advantage, rloo_advantage

__all__ = ["grpo_advantage", "rloo_advantage"]
