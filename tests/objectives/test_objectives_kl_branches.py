"""kl_estimate / kl_to_ref branches a mutation run found unchecked (docs/quality.md): the k3 default and
its clamp on both sides, β = 0, the default β, and the messages."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.kl import kl_estimate
from entrolab.registry import REGULARIZERS


def test_kl_estimate_default_k3_and_clamp():
    """Default k3: δ = 1 ⇒ e^−1 − 1 + 1 = e^−1. δ = ±30 is clamped to ±20 before the exponential:
    k3(20) = e^−20 + 19, k3(−20) = e^20 − 21 (finite)."""
    logp = torch.tensor([[1.0, 30.0, -30.0]], dtype=torch.float64)
    k = kl_estimate(logp, torch.zeros(1, 3, dtype=torch.float64))
    assert k.tolist()[0] == pytest.approx([math.exp(-1), math.exp(-20) + 19, math.exp(20) - 21])
    with pytest.raises(ValueError, match=r"^unknown KL estimator 'k4'; valid: k1, k2, k3$"):
        kl_estimate(logp, logp, estimator="k4")


def test_kl_to_ref_default_beta_and_zero(make_inputs):
    """Default β = 0.04 on k3: δ = 1 ⇒ 0.04·e^−1. β = 0 is allowed (a logged-only KL)."""
    inp = make_inputs([[1.0]], [1.0], ref_logp_BT=[[0.0]])
    loss, m = REGULARIZERS.build("kl_to_ref")(inp)
    assert loss.item() == pytest.approx(0.04 * math.exp(-1)) and m["kl/ref"] == pytest.approx(math.exp(-1))
    loss, _ = REGULARIZERS.build("kl_to_ref", {"beta": 0.0})(inp)
    assert loss.item() == 0.0


def test_kl_to_ref_messages(make_inputs):
    with pytest.raises(ValueError, match="beta must be >= 0, got -1"):
        REGULARIZERS.build("kl_to_ref", {"beta": -1.0})
    with pytest.raises(ValueError, match="estimator: expected one of 'k1', 'k2', 'k3', got 'k4'"):
        REGULARIZERS.build("kl_to_ref", {"estimator": "k4"})  # the registry's annotation check
    with pytest.raises(ValueError, match="estimator must be one of k1, k2, k3, got 'k4'"):
        REGULARIZERS.get("kl_to_ref").factory(estimator="k4")  # the component's own check
    inp = make_inputs([[1.0, 1.0]] * 2, [1.0, 1.0])
    with pytest.raises(ValueError, match=r"^kl_to_ref needs ref_logp_BT \(requires=\{'ref_logp'\}\); "
                                         r"the trainer did not provide it$"):
        REGULARIZERS.build("kl_to_ref")(inp)
    inp = make_inputs([[1.0] * 3] * 2, [1.0, 1.0], ref_logp_BT=[[0.0] * 3] * 2, kl_weight_B=torch.ones(3))
    with pytest.raises(ValueError, match=r"has shape \(3,\), expected \(2,\) \(one weight per sequence\)"):
        REGULARIZERS.build("kl_to_ref")(inp)
