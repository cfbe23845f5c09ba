"""k1/k2/k3 estimators: hand values and exact expectations over a small categorical policy."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.kl import kl_estimate
from entrolab.registry import REGULARIZERS, ConfigError


def test_hand_values():
    """pi = 0.5, ref = 0.25: delta = log 2; k1 = log 2, k2 = (log 2)^2 / 2, k3 = 1/2 - 1 + log 2."""
    lp, rp = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    l2 = math.log(2)
    assert float(kl_estimate(lp, rp, estimator="k1")) == pytest.approx(l2)
    assert float(kl_estimate(lp, rp, estimator="k2")) == pytest.approx(0.5 * l2 * l2)
    assert float(kl_estimate(lp, rp, estimator="k3")) == pytest.approx(0.5 - 1 + l2)


def test_k1_and_k3_are_unbiased_exactly():
    """E_{o~pi}[k1] = E_{o~pi}[k3] = KL(pi || ref), computed by enumerating all 5 outcomes."""
    pi = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    ref = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64)
    kl = float((pi * (pi / ref).log()).sum())
    lp, rp = pi.log()[None], ref.log()[None]
    for est in ("k1", "k3"):
        assert float((pi * kl_estimate(lp, rp, estimator=est)).sum()) == pytest.approx(kl, rel=1e-12)
    assert float((pi * kl_estimate(lp, rp, estimator="k2")).sum()) > 0


def test_regularizer_scales_by_beta_masks_and_logs(make_inputs):
    """beta = 0.5, k1 on logp - ref = [1, 2, (pad)]: loss [0.5, 1.0, 0]; kl/ref = 1.5; grad beta on valid."""
    inp = make_inputs([[0.0, 0.0, 0.0]], [0.0], [[1, 1, 0]], ref_logp_BT=[[-1.0, -2.0, float("nan")]])
    reg = REGULARIZERS.build("kl_to_ref", {"beta": 0.5, "estimator": "k1"})
    assert reg.requires == {"ref_logp"}
    loss, m = reg(inp)
    assert loss.tolist() == [[0.5, 1.0, 0.0]]
    assert m == {"kl/ref": 1.5}
    loss.sum().backward()
    assert inp.logp_BT.grad.tolist() == [[0.5, 0.5, 0.0]]


def test_missing_reference_and_bad_estimator(make_inputs):
    with pytest.raises(ValueError, match="ref_logp"):
        REGULARIZERS.build("kl_to_ref")(make_inputs([[0.0]], [0.0]))
    with pytest.raises(ConfigError, match="estimator"):
        REGULARIZERS.build("kl_to_ref", {"estimator": "k4"})


def test_per_sequence_kl_weights_from_extras(make_inputs):
    """ARES's ``kl_weight_B`` multiplies each sequence's token KL (after beta).

    k1, beta = 0.5, delta = logp - ref = [[1, 0], [-0.5, (pad)]], w = [2, 4]:
    loss = beta * w_b * delta = [[1.0, 0.0], [-1.0, 0]]; kl/ref = mean delta = (1 + 0 - 0.5)/3 = 1/6
    (unweighted); kl/weight_mean = 3; d(sum loss)/d logp = beta * w_b on valid tokens = [[1, 1], [2, 0]].
    """
    inp = make_inputs([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [[1, 1], [1, 0]], ref_logp_BT=[[-1.0, 0.0], [0.5, 9.0]],
                      kl_weight_B=torch.tensor([2.0, 4.0], dtype=torch.float64))
    reg = REGULARIZERS.build("kl_to_ref", {"beta": 0.5, "estimator": "k1"})
    loss, m = reg(inp)
    torch.testing.assert_close(loss.detach(), torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64))
    assert m["kl/ref"] == pytest.approx(1 / 6) and m["kl/weight_mean"] == pytest.approx(3.0)
    loss.sum().backward()
    torch.testing.assert_close(inp.logp_BT.grad, torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64))
    unweighted, m0 = reg(make_inputs([[0.0, 0.0]], [0.0], ref_logp_BT=[[-1.0, 0.0]]))
    assert unweighted.tolist() == [[0.5, 0.0]] and "kl/weight_mean" not in m0


def test_kl_weight_with_wrong_shape_is_an_error(make_inputs):
    inp = make_inputs([[0.0]], [0.0], ref_logp_BT=[[0.0]], kl_weight_B=torch.ones(3))
    with pytest.raises(ValueError, match="kl_weight_B"):
        REGULARIZERS.build("kl_to_ref")(inp)
