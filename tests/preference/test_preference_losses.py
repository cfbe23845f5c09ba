"""DPO, IPO, cDPO and robust DPO (``preference/losses.py``): hand values, identities, gradients.

Shared hand case (β = 0.1): chosen −1 vs reference −3 (h_w = 2), rejected −2 vs reference −1
(h_l = −1), so z = β(h_w − h_l) = 0.3 and
    −log σ(0.3)  = log(1 + e^−0.3) = 0.554355...,   −log σ(−0.3) = 0.854355... (= 0.554355 + 0.3).
"""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.preference.api import PairLogps
from entrolab.preference.losses import (CDPO, DPO, IPO, RobustDPO, cdpo_loss, dpo_loss, ipo_loss,
                                        robust_dpo_loss)


def nls(z: float) -> float:
    """−log σ(z) in plain floats."""
    return math.log1p(math.exp(-z))


def lp_of(chosen, rejected, ref_chosen=None, ref_rejected=None, *, label=None, len_chosen=None, len_rejected=None):
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    B = len(chosen)
    return PairLogps(chosen_B=t(chosen), rejected_B=t(rejected),
                     ref_chosen_B=None if ref_chosen is None else t(ref_chosen),
                     ref_rejected_B=None if ref_rejected is None else t(ref_rejected),
                     len_chosen_B=t(len_chosen or [1.0] * B), len_rejected_B=t(len_rejected or [1.0] * B),
                     label_B=t(label or [1.0] * B), index_B=torch.arange(B))


HAND = dict(chosen=[-1.0], rejected=[-2.0], ref_chosen=[-3.0], ref_rejected=[-1.0])


def test_dpo_hand_value_and_metrics():
    loss_B, m = DPO(beta=0.1)(lp_of(**HAND))
    assert loss_B.item() == pytest.approx(nls(0.3), abs=1e-12)  # 0.554355
    # implicit rewards β·h: 0.2 and −0.1 → margin 0.3, accuracy 1.
    assert m == pytest.approx({"pref/reward_chosen": 0.2, "pref/reward_rejected": -0.1, "pref/margin": 0.3,
                               "pref/accuracy": 1.0})


def test_ipo_hand_values_hard_and_soft_labels():
    """τ = 0.5 → 1/(2τ) = 1; Δ = h_w − h_l = 3.
    hard: (3 − 1)² = 4;  l = 0.75: target (2·0.75 − 1)/(2τ) = 0.5 → 2.5² = 6.25;  l = ½: target 0 → 9."""
    h_w, h_l = torch.tensor([2.0] * 3, dtype=torch.float64), torch.tensor([-1.0] * 3, dtype=torch.float64)
    loss = ipo_loss(h_w, h_l, torch.tensor([1.0, 0.75, 0.5], dtype=torch.float64), tau=0.5)
    assert loss.tolist() == pytest.approx([4.0, 6.25, 9.0], abs=1e-12)


def test_ipo_soft_label_is_the_expected_loss_minus_a_constant():
    """l(Δ − c)² + (1 − l)(−Δ − c)² = (Δ − (2l − 1)c)² + 4l(1 − l)c² for every Δ, so the gradients agree."""
    tau, c = 0.2, 2.5
    delta = torch.linspace(-4, 4, 9, dtype=torch.float64, requires_grad=True)
    for l in (0.0, 0.3, 0.5, 0.9, 1.0):
        label = torch.full_like(delta, l)
        ours = ipo_loss(delta, torch.zeros_like(delta), label, tau=tau)
        expected = l * (delta - c) ** 2 + (1 - l) * (-delta - c) ** 2 - 4 * l * (1 - l) * c ** 2
        assert torch.allclose(ours, expected, atol=1e-12)
        g_ours, = torch.autograd.grad(ours.sum(), delta)
        g_exp, = torch.autograd.grad(expected.sum(), delta)
        assert torch.allclose(g_ours, g_exp, atol=1e-12)


def test_ipo_component_length_normalize_and_metrics():
    """length_normalize divides h by the lengths: h_w = 2/4 = 0.5, h_l = −1/2 = −0.5, Δ = 1; τ = 0.5
    → (1 − 1)² = 0. Without it Δ = 3 → 4. Implicit rewards τ·h."""
    lp = lp_of(**HAND, len_chosen=[4.0], len_rejected=[2.0])
    loss_B, m = IPO(tau=0.5, length_normalize=True)(lp)
    assert loss_B.item() == pytest.approx(0.0, abs=1e-12)
    assert m["pref/margin"] == pytest.approx(0.5)
    loss_B, m = IPO(tau=0.5)(lp)
    assert loss_B.item() == pytest.approx(4.0) and m["pref/margin"] == pytest.approx(1.5)


def test_cdpo_hand_value_and_identities():
    """ε = 0.1: 0.9·0.554355 + 0.1·0.854355 = 0.584355; ε = 0 is DPO; a soft label l becomes
    (1 − ε)l + ε(1 − l)."""
    loss_B, _ = CDPO(beta=0.1, eps=0.1)(lp_of(**HAND))
    assert loss_B.item() == pytest.approx(0.9 * nls(0.3) + 0.1 * nls(-0.3), abs=1e-12)
    h_w, h_l = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    label = torch.rand(5, dtype=torch.float64)
    assert torch.equal(cdpo_loss(h_w, h_l, label, beta=0.3, eps=0.0), dpo_loss(h_w, h_l, label, beta=0.3))
    assert torch.allclose(cdpo_loss(h_w, h_l, label, beta=0.3, eps=0.2),
                          dpo_loss(h_w, h_l, 0.8 * label + 0.2 * (1 - label), beta=0.3))


def test_robust_dpo_hand_value():
    """ε = 0.1: [(0.9)(0.554355) − 0.1(0.854355)] / 0.8 = 0.516855."""
    loss_B, m = RobustDPO(beta=0.1, eps=0.1)(lp_of(**HAND))
    assert loss_B.item() == pytest.approx((0.9 * nls(0.3) - 0.1 * nls(-0.3)) / 0.8, abs=1e-12)
    assert loss_B.item() == pytest.approx(0.516855, abs=1e-6)
    assert m["pref/accuracy"] == 1.0


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25, 0.45])
def test_robust_dpo_is_unbiased_under_label_flips(eps):
    """Chowdhury et al.'s defining property: if the observed label is flipped with probability ε,
    E[ℓ_ε] = (1 − ε)ℓ_ε(z) + ε ℓ_ε(−z) = −log σ(z), the clean DPO loss (value and gradient)."""
    z = torch.linspace(-6, 6, 13, dtype=torch.float64, requires_grad=True)
    zero, one = torch.zeros_like(z), torch.ones_like(z)
    expected = (1 - eps) * robust_dpo_loss(z, zero, one, beta=1.0, eps=eps) \
        + eps * robust_dpo_loss(z, zero, zero, beta=1.0, eps=eps)
    clean = dpo_loss(z, zero, one, beta=1.0)
    assert torch.allclose(expected, clean, atol=1e-12)
    g1, = torch.autograd.grad(expected.sum(), z)
    g2, = torch.autograd.grad(clean.sum(), z)
    assert torch.allclose(g1, g2, atol=1e-12)
    if eps == 0.0:
        assert torch.allclose(robust_dpo_loss(z, zero, one, beta=1.0, eps=0.0), clean, atol=1e-15)


def test_dpo_gradient_matches_the_closed_form():
    """∂/∂h_w −log σ(β(h_w − h_l)) = −β σ(−z); ∂/∂h_l = +β σ(−z) (z = 0.3, β = 0.1)."""
    lp = lp_of(**HAND)
    lp.chosen_B.requires_grad_(True)
    lp.rejected_B.requires_grad_(True)
    DPO(beta=0.1)(lp)[0].sum().backward()
    s = 1 / (1 + math.exp(0.3))
    assert lp.chosen_B.grad.item() == pytest.approx(-0.1 * s, abs=1e-12)
    assert lp.rejected_B.grad.item() == pytest.approx(0.1 * s, abs=1e-12)


@pytest.mark.parametrize("cls, kwargs, key", [
    (DPO, {"beta": 0.0}, "beta"), (IPO, {"tau": -1.0}, "tau"), (CDPO, {"eps": 0.5}, "eps"),
    (CDPO, {"eps": -0.1}, "eps"), (RobustDPO, {"eps": 0.5}, "eps"), (RobustDPO, {"beta": -1.0}, "beta")])
def test_constructors_reject_bad_hyperparameters_naming_the_key(cls, kwargs, key):
    with pytest.raises(ValueError, match=key):
        cls(**kwargs)


def test_components_pass_their_hyperparameters_to_the_math():
    """Non-default β, τ, ε reach the functions (β = 0.3 → z = 0.9 on the hand case)."""
    lp = lp_of(**HAND)
    assert DPO(beta=0.3)(lp)[0].item() == pytest.approx(nls(0.9), abs=1e-12)
    assert CDPO(beta=0.3, eps=0.2)(lp)[0].item() == pytest.approx(0.8 * nls(0.9) + 0.2 * nls(-0.9), abs=1e-12)
    assert RobustDPO(beta=0.3, eps=0.2)(lp)[0].item() == \
        pytest.approx((0.8 * nls(0.9) - 0.2 * nls(-0.9)) / 0.6, abs=1e-12)
    assert IPO(tau=0.25)(lp)[0].item() == pytest.approx((3 - 2) ** 2, abs=1e-12)
    # ε = 0 is allowed (it is plain DPO) for both baselines.
    assert CDPO(beta=0.3, eps=0.0)(lp)[0].item() == RobustDPO(beta=0.3, eps=0.0)(lp)[0].item() == \
        pytest.approx(nls(0.9), abs=1e-12)


def test_accuracy_counts_ties_as_wrong():
    """Pair 0: h_w = 1, h_l = 0 (right, margin 0.1); pair 1: every log-prob −1, a tie (wrong, margin 0).
    Accuracy ½, margin 0.05."""
    _, m = DPO()(lp_of([-1.0, -1.0], [-2.0, -1.0], [-2.0, -1.0], [-2.0, -1.0]))
    assert m["pref/accuracy"] == 0.5 and m["pref/margin"] == pytest.approx(0.05)


def test_function_defaults_match_the_component_defaults():
    """Calling a pure function without hyperparameters gives what the component with its defaults gives
    (one default per method, the one the page states)."""
    lp = lp_of([-1.0, -5.0], [-2.0, -1.0], [-3.0, -4.0], [-1.0, -1.5], label=[1.0, 0.7])
    h_w, h_l = lp.log_ratios()
    for fn, cls in ((dpo_loss, DPO), (ipo_loss, IPO), (cdpo_loss, CDPO), (robust_dpo_loss, RobustDPO)):
        assert torch.equal(fn(h_w, h_l, lp.label_B), cls()(lp)[0]), fn.__name__


@pytest.mark.parametrize("cls, kwargs, message", [
    (DPO, {"beta": 0.0}, "dpo: beta must be > 0, got 0.0"),
    (IPO, {"tau": -1.0}, "ipo: tau must be > 0, got -1.0"),
    (CDPO, {"beta": -1.0}, "cdpo: beta must be > 0, got -1.0"),
    (CDPO, {"eps": 0.5}, "cdpo: eps must be in [0, 0.5) (a flip probability below one half), got 0.5"),
    (CDPO, {"eps": -0.1}, "cdpo: eps must be in [0, 0.5)"),
    (RobustDPO, {"eps": 0.5}, "robust_dpo: eps must be in [0, 0.5)"),
    (RobustDPO, {"beta": -1.0}, "robust_dpo: beta must be > 0, got -1.0")])
def test_error_messages_name_the_loss_and_the_key(cls, kwargs, message):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    assert str(err.value).startswith(message)
