"""STARC distance between two reward functions over a finite prompt × response set.

Paper: "STARC: A General Framework For Quantifying Differences Between Reward Functions" (Skalse et
al., arXiv 2309.15257), bandit (single-step) form. For a
language-model reward r(x, y) with a terminal next state, potential shaping reduces to adding an
arbitrary per-prompt constant, so:

1. canonicalise (VAL with response distribution π): c(R)(x, y) = R(x, y) − Σ_y' π(y'|x) R(x, y');
2. normalise: s(R) = c(R) / ‖c(R)‖, with ‖·‖ the L2 norm weighted by a coverage distribution D over
   (x, y) pairs (global, not per prompt); s(R) = c(R) when the norm is 0 (a shaped constant);
3. distance: d = ‖s(R1) − s(R2)‖ under the same norm; d ∈ [0, 2].

d is 0 exactly when R2 = α·R1 + φ(x) for some α > 0 (positive scaling and potential shaping).
"""

from __future__ import annotations

import torch


def _weights(mask_PY: torch.Tensor, weights_PY: torch.Tensor | None, name: str, *, per_prompt: bool) -> torch.Tensor:
    w = mask_PY.double() if weights_PY is None else weights_PY.double() * mask_PY
    if weights_PY is not None and weights_PY.shape != mask_PY.shape:
        raise ValueError(f"{name} shape {tuple(weights_PY.shape)} differs from the reward shape {tuple(mask_PY.shape)}")
    if (w < 0).any():
        raise ValueError(f"{name} must be >= 0")
    total = w.sum(-1, keepdim=True) if per_prompt else w.sum()
    if (total <= 0).any():
        raise ValueError(f"{name}: a prompt has no valid response with positive weight" if per_prompt else f"{name} is all zero")
    return w / total


def canonicalize(R_PY: torch.Tensor, mask_PY: torch.Tensor | None = None, *, response_weights_PY: torch.Tensor | None = None) -> torch.Tensor:
    """c(R)(x, y) = R(x, y) − E_{y'∼π(·|x)} R(x, y') (STARC's VAL canonicalisation, bandit form).

    Args:
        R_PY: [P, Y] rewards of Y responses to each of P prompts (ragged sets padded, see mask).
        mask_PY: [P, Y] bool, True = a real response (default: all).
        response_weights_PY: [P, Y] unnormalised π(y|x) (default uniform over valid responses).
    Returns: [P, Y] float64, zero at invalid positions.
    """
    mask = torch.ones_like(R_PY, dtype=torch.bool) if mask_PY is None else mask_PY.bool()
    if mask.shape != R_PY.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from R shape {tuple(R_PY.shape)}")
    pi = _weights(mask, response_weights_PY, "response_weights_PY", per_prompt=True)
    R = torch.where(mask, R_PY.double(), torch.zeros((), dtype=torch.float64))
    return (R - (pi * R).sum(-1, keepdim=True)) * mask


def standardize(R_PY: torch.Tensor, mask_PY: torch.Tensor | None = None, *, response_weights_PY: torch.Tensor | None = None,
                coverage_PY: torch.Tensor | None = None) -> torch.Tensor:
    """s(R) = c(R)/‖c(R)‖_D (or c(R) itself when its norm is zero); see the module docstring."""
    mask = torch.ones_like(R_PY, dtype=torch.bool) if mask_PY is None else mask_PY.bool()
    c = canonicalize(R_PY, mask, response_weights_PY=response_weights_PY)
    D = _weights(mask, coverage_PY, "coverage_PY", per_prompt=False)
    norm = float((D * c * c).sum().sqrt())
    # Relative threshold: a canonicalised constant can leave round-off of order eps·|R|.
    scale = float(R_PY.double()[mask].abs().max()) if mask.any() else 0.0
    return c / norm if norm > 1e-12 * max(1.0, scale) else c * 0.0


def starc_distance(R1_PY: torch.Tensor, R2_PY: torch.Tensor, mask_PY: torch.Tensor | None = None, *,
                   response_weights_PY: torch.Tensor | None = None, coverage_PY: torch.Tensor | None = None) -> float:
    """STARC distance d(R1, R2) = ‖s(R1) − s(R2)‖_D over a finite prompt × response set.

    Args:
        R1_PY, R2_PY: [P, Y] the two reward functions scored on the same responses.
        mask_PY: [P, Y] bool, True = a real response (default: all).
        response_weights_PY: π(y|x) of the canonicalisation (default uniform per prompt).
        coverage_PY: coverage distribution D of the norm and distance (default uniform over pairs).
    Returns: d ∈ [0, 2]; 0 iff R2 = α·R1 + φ(x), α > 0 (or both are shaped constants).
    """
    if R1_PY.shape != R2_PY.shape:
        raise ValueError(f"reward shapes differ: {tuple(R1_PY.shape)} vs {tuple(R2_PY.shape)}")
    mask = torch.ones_like(R1_PY, dtype=torch.bool) if mask_PY is None else mask_PY.bool()
    s1 = standardize(R1_PY, mask, response_weights_PY=response_weights_PY, coverage_PY=coverage_PY)
    s2 = standardize(R2_PY, mask, response_weights_PY=response_weights_PY, coverage_PY=coverage_PY)
    D = _weights(mask, coverage_PY, "coverage_PY", per_prompt=False)
    return float((D * (s1 - s2) ** 2).sum().sqrt())


def pad_ragged(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-prompt reward lists to [P, Y_max]; returns (R_PY, mask_PY)."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one scored response")
    Y = max(len(r) for r in rows)
    R = torch.zeros(len(rows), Y, dtype=torch.float64)
    mask = torch.zeros(len(rows), Y, dtype=torch.bool)
    for i, r in enumerate(rows):
        R[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
        mask[i, : len(r)] = True
    return R, mask
