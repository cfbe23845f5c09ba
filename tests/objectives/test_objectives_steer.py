"""STEER weights: hand-computed Omega, linear and exponential maps."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.registry import TOKEN_WEIGHTS

# On-policy (pi_old = p), A = 1: Omega = (1 - p)(log p + H).
P = [0.5, 0.25, 0.8]
H = [1.0, 2.0, 0.5]
OMEGA = [(1 - p) * (math.log(p) + h) for p, h in zip(P, H)]  # [0.1534, 0.4603, 0.0554]


def _inp(make_inputs, mask=None):
    return make_inputs([[math.log(p) for p in P] + [0.0]], [1.0], mask or [[1, 1, 1, 0]], entropy_BT=[H + [9.0]])


def test_linear_map(make_inputs):
    """Smallest |Omega| (token 2) -> 1.2, largest (token 1) -> 0.8, token 0 interpolated; pad -> 0."""
    w, m = TOKEN_WEIGHTS.build("steer")(_inp(make_inputs))
    lo, hi = min(OMEGA), max(OMEGA)
    mid = 1.2 - (OMEGA[0] - lo) * 0.4 / (hi - lo)
    assert w.tolist()[0] == pytest.approx([mid, 0.8, 1.2, 0.0])
    assert m["weight/steer_min"] == pytest.approx(0.8) and m["weight/steer_max"] == pytest.approx(1.2)
    assert m["weight/steer_mean"] == pytest.approx((mid + 2.0) / 3)


def test_exp_map(make_inputs):
    """kappa = -ln(0.8)/max|Omega|: the largest |Omega| gets exactly 0.8, others exp(-kappa|Omega|)."""
    w, _ = TOKEN_WEIGHTS.build("steer", {"mode": "exp", "lambda_min": 0.8})(_inp(make_inputs))
    kappa = -math.log(0.8) / max(OMEGA)
    assert w.tolist()[0] == pytest.approx([math.exp(-kappa * o) for o in OMEGA] + [0.0])


def test_off_policy_divides_by_old_prob(make_inputs):
    """pi_old = 0.5 * p doubles every Omega: the linear map (min-max) is unchanged, the exp map too
    (kappa rescales by the same factor)."""
    inp = _inp(make_inputs)
    inp.old_logp_BT = inp.logp_BT.detach() + math.log(0.5)
    w_off, _ = TOKEN_WEIGHTS.build("steer")(inp)
    w_on, _ = TOKEN_WEIGHTS.build("steer")(_inp(make_inputs))
    assert torch.allclose(w_off, w_on)


def test_flat_scores_give_midpoint(make_inputs):
    inp = make_inputs([[math.log(0.5)] * 3], [1.0], entropy_BT=[[1.0] * 3])
    w, _ = TOKEN_WEIGHTS.build("steer", {"lambda_min": 0.9, "lambda_max": 1.3})(inp)
    assert w.tolist()[0] == pytest.approx([1.1] * 3)
