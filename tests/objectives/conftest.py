"""Shared builders for the objectives tests: tiny PolicyInputs with a leaf ``logp_BT``."""

from __future__ import annotations

import pytest
import torch

from entrolab.types import PolicyInputs


def build_inputs(
    logp_BT,
    adv,
    mask_BT=None,
    *,
    old_logp_BT=None,
    entropy_BT=None,
    ref_logp_BT=None,
    logits_BTV=None,
    rewards_B=None,
    group_id_B=None,
    seed: int = 0,
    **extras,
) -> PolicyInputs:
    """PolicyInputs from plain lists/tensors; ``logp_BT`` and ``entropy_BT`` become grad leaves."""
    logp_BT = torch.as_tensor(logp_BT, dtype=torch.float64).clone().requires_grad_(True)
    B, T = logp_BT.shape
    mask_BT = torch.ones(B, T, dtype=torch.bool) if mask_BT is None else torch.as_tensor(mask_BT, dtype=torch.bool)
    adv = torch.as_tensor(adv, dtype=torch.float64)
    adv_BT = adv[:, None].expand(B, T).clone() if adv.dim() == 1 else adv
    old = logp_BT.detach().clone() if old_logp_BT is None else torch.as_tensor(old_logp_BT, dtype=torch.float64)
    ent = torch.ones(B, T, dtype=torch.float64) if entropy_BT is None else torch.as_tensor(entropy_BT, dtype=torch.float64)
    ent = ent.clone().requires_grad_(True)
    return PolicyInputs(
        logp_BT=logp_BT,
        old_logp_BT=old,
        adv_BT=adv_BT,
        mask_BT=mask_BT,
        entropy_BT=ent,
        rewards_B=torch.zeros(B, dtype=torch.float64) if rewards_B is None else torch.as_tensor(rewards_B),
        group_id_B=torch.zeros(B, dtype=torch.long) if group_id_B is None else torch.as_tensor(group_id_B),
        ref_logp_BT=None if ref_logp_BT is None else torch.as_tensor(ref_logp_BT, dtype=torch.float64),
        logits_BTV=logits_BTV,
        generator=torch.Generator().manual_seed(seed),
        extras=dict(extras),
    )


@pytest.fixture
def make_inputs():
    return build_inputs
