"""Small tensor helpers shared by the objective modules (masked means, input checks, floats).

Everything here is stage-agnostic plumbing; the method math lives in the sibling modules.
"""

from __future__ import annotations

import torch

#: Log-ratios are clamped to ±LOG_RATIO_CLAMP before ``exp`` (verl's ``vanilla`` loss does the
#: same): a ratio of e^20 is already meaningless, and e^89 overflows float32 to inf.
LOG_RATIO_CLAMP = 20.0


def masked_sum(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Σ x over valid tokens. ``torch.where`` (not ``x * mask``) so a NaN/inf at a padded
    position cannot leak into the sum or its gradient."""
    return torch.where(mask_BT, x_BT, torch.zeros_like(x_BT)).sum()


def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over valid tokens; 0 (not NaN) when there is none."""
    n = mask_BT.sum()
    return masked_sum(x_BT, mask_BT) / n.clamp(min=1)


def zero_invalid(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """``x`` with padded positions set to exactly 0 (and no gradient path through them)."""
    return torch.where(mask_BT, x_BT, torch.zeros_like(x_BT))


def fmean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
    """Detached masked mean as a python float (for metrics)."""
    return float(masked_mean(x_BT.detach().float(), mask_BT))


def frac(cond_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
    """Fraction of valid tokens where ``cond`` holds, as a python float (0.0 when none valid)."""
    n = int(mask_BT.sum())
    return float((cond_BT & mask_BT).sum()) / n if n else 0.0


def as_bool_mask(mask_BT: torch.Tensor, name: str = "mask_BT") -> torch.Tensor:
    """Return ``mask_BT`` as a bool tensor; reject masks that are not 0/1 valued."""
    if mask_BT.dtype == torch.bool:
        return mask_BT
    if mask_BT.numel() and not bool(((mask_BT == 0) | (mask_BT == 1)).all()):
        raise ValueError(f"{name} must be boolean (True = valid token) or 0/1 valued")
    return mask_BT.bool()


def expand_adv(adv: torch.Tensor, like_BT: torch.Tensor) -> torch.Tensor:
    """Advantages as [B, T]: a per-sequence ``adv_B`` is broadcast over tokens."""
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(like_BT)
    if adv.shape != like_BT.shape:
        raise ValueError(f"advantages have shape {tuple(adv.shape)}, expected [B] or {tuple(like_BT.shape)}")
    return adv.to(like_BT.dtype)


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise a ValueError naming the first tensor whose shape differs from the first one."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    ref_name, ref = items[0]
    for name, t in items[1:]:
        if t.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but {ref_name} has {tuple(ref.shape)}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Validate a hyperparameter: raise a ValueError naming it when out of range."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
