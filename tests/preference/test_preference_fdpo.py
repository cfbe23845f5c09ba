"""f-DPO (``preference/fdpo.py``): ψ per divergence by hand, identities, limits, overflow safety."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.preference.api import PairLogps
from entrolab.preference.fdpo import DIVERGENCES, FDPO, capped_exp, f_divergence_psi, fdpo_loss
from entrolab.preference.losses import dpo_loss


def nls(z: float) -> float:
    """−log σ(z)."""
    return math.log1p(math.exp(-z))


def f64(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_reverse_kl_is_dpo_exactly():
    torch.manual_seed(0)
    h_w, h_l, label = torch.randn(16) * 5, torch.randn(16) * 5, torch.rand(16)
    assert torch.equal(fdpo_loss(h_w, h_l, label, beta=0.3, divergence="reverse_kl"),
                       dpo_loss(h_w, h_l, label, beta=0.3))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_equal_log_ratios_give_log_2_for_every_divergence(divergence):
    """h_w = h_l ⇒ z = 0 ⇒ −[l log ½ + (1 − l) log ½] = log 2 whatever ψ, β and the label."""
    h = f64(-30.0, -1.0, 0.0, 2.5, 40.0)
    loss = fdpo_loss(h, h.clone(), f64(1.0, 0.0, 0.5, 0.3, 1.0), beta=0.7, divergence=divergence, alpha=0.3)
    assert torch.allclose(loss, torch.full_like(loss, math.log(2.0)), atol=1e-12)


def test_hand_values_per_divergence():
    """β = 1.
    forward KL, h_w = 0, h_l = −1: ψ = −e^{−h}: −1 − (−e) = e − 1 = 1.718282 → −log σ(1.718282).
    JS, h_w = 1, h_l = −1: log σ(1) − log σ(−1) = 1 (log σ(x) − log σ(−x) = x) → −log σ(1) = 0.313262.
    α = 0.5, h_w = 0, h_l = −2: ψ = −e^{−αh}/α: −2 − (−2e) = 2(e − 1) = 3.436564 → −log σ(3.436564)."""
    one = f64(1.0)
    fwd = fdpo_loss(f64(0.0), f64(-1.0), one, beta=1.0, divergence="forward_kl")
    js = fdpo_loss(f64(1.0), f64(-1.0), one, beta=1.0, divergence="js")
    al = fdpo_loss(f64(0.0), f64(-2.0), one, beta=1.0, divergence="alpha", alpha=0.5)
    assert fwd.item() == pytest.approx(nls(math.e - 1), abs=1e-12)
    assert js.item() == pytest.approx(0.3132617, abs=1e-7)
    assert al.item() == pytest.approx(nls(2 * (math.e - 1)), abs=1e-12)


def test_psi_values_including_dropped_constants():
    """ψ(0): reverse KL 0, forward KL −1, JS log 2 + log ½ = 0, α = 0.25: −1/α = −4."""
    z = f64(0.0)
    assert [f_divergence_psi(z, divergence=d, alpha=0.25).item() for d in DIVERGENCES] == \
        pytest.approx([0.0, -1.0, 0.0, -4.0], abs=1e-12)


def test_alpha_limits_recover_reverse_and_forward_kl():
    """(e^{−αh_l} − e^{−αh_w})/α → h_w − h_l as α → 0 (first order in α); at α → 1 it is forward KL."""
    h_w, h_l, one = f64(0.5, -1.0, 2.0, -3.0), f64(-0.5, 1.0, -2.0, -1.0), torch.ones(4, dtype=torch.float64)
    near0 = fdpo_loss(h_w, h_l, one, beta=0.5, divergence="alpha", alpha=1e-6)
    assert torch.allclose(near0, dpo_loss(h_w, h_l, one, beta=0.5), atol=1e-5)
    near1 = fdpo_loss(h_w, h_l, one, beta=0.5, divergence="alpha", alpha=1 - 1e-7)
    assert torch.allclose(near1, fdpo_loss(h_w, h_l, one, beta=0.5, divergence="forward_kl"), atol=1e-5)


def test_capped_exp_is_exp_below_the_cap_and_its_tangent_above():
    """c = 3: e^x for x ≤ 3; e³(1 + x − 3) beyond (x = 5: 3e³); value and slope continuous at 3."""
    x = f64(-2.0, 0.0, 3.0, 5.0).requires_grad_(True)
    y = capped_exp(x, max_exponent=3.0)
    e3 = math.exp(3.0)
    assert y.tolist() == pytest.approx([math.exp(-2.0), 1.0, e3, 3 * e3], rel=1e-12)
    g, = torch.autograd.grad(y.sum(), x)
    assert g.tolist() == pytest.approx([math.exp(-2.0), 1.0, e3, e3], rel=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_finite_with_a_correct_gradient_at_h_minus_200(divergence):
    """A chosen response with h_w = −200 (fp32 would overflow e^200): the loss is finite and the
    gradient pushes h_w up. forward KL/α: the tangent beyond the cap c = 20 gives ∂ψ/∂h_w = α·e^20/α
    = e^20 (α = 1 for forward KL), and σ(−z) = 1 at that z, so ∂L/∂h_w = −β e^20 exactly.
    JS: ∂ψ/∂h = σ(−h) = 1 at −200, ∂L/∂h_w = −β σ(−z), z = β(log σ(−200) − log σ(0)) = β(−200 + log 2)."""
    h_w = torch.tensor([-200.0], requires_grad=True)
    h_l = torch.tensor([0.0], requires_grad=True)
    loss = fdpo_loss(h_w, h_l, torch.ones(1), beta=0.1, divergence=divergence, alpha=0.5)
    assert torch.isfinite(loss).all()
    g_w, g_l = torch.autograd.grad(loss.sum(), [h_w, h_l])
    assert torch.isfinite(g_w).all() and torch.isfinite(g_l).all() and g_w.item() < 0
    expected = {"reverse_kl": -0.1 / (1 + math.exp(-0.1 * 200)),
                "forward_kl": -0.1 * math.exp(20.0), "alpha": -0.1 * math.exp(20.0),
                "js": -0.1 / (1 + math.exp(0.1 * (-200 + math.log(2))))}[divergence]
    assert g_w.item() == pytest.approx(expected, rel=1e-5)
    # The rejected side at −200 is already fitted: loss ≈ 0, gradient ≈ 0, both finite.
    h_l2 = torch.tensor([-200.0], requires_grad=True)
    loss2 = fdpo_loss(torch.tensor([0.0]), h_l2, torch.ones(1), beta=0.1, divergence=divergence, alpha=0.5)
    g2, = torch.autograd.grad(loss2.sum(), h_l2)
    assert torch.isfinite(loss2).all() and torch.isfinite(g2).all() and abs(g2.item()) < 0.1


def test_bf16_inputs_are_computed_in_fp32():
    """bf16 h = −100 would give e^100 = inf in bf16 arithmetic for forward KL; we upcast to fp32."""
    h_w, h_l = torch.tensor([-100.0], dtype=torch.bfloat16), torch.tensor([5.0], dtype=torch.bfloat16)
    psi = f_divergence_psi(h_w, divergence="forward_kl")
    assert psi.dtype == torch.float32 and torch.isfinite(psi).all()
    loss = fdpo_loss(h_w, h_l, torch.ones(1), beta=0.03, divergence="forward_kl")
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradcheck_against_finite_differences(divergence):
    torch.manual_seed(1)
    h_w = (torch.randn(5, dtype=torch.float64) * 2).requires_grad_(True)
    h_l = (torch.randn(5, dtype=torch.float64) * 2).requires_grad_(True)
    label = torch.rand(5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: fdpo_loss(a, b, label, beta=0.4, divergence=divergence, alpha=0.3), (h_w, h_l))


def test_component_logs_beta_psi_rewards():
    """forward KL, β = 0.5, h_w = 0, h_l = −1 (policy/ref sums): rewards βψ = −0.5 and −0.5e."""
    lp = PairLogps(chosen_B=f64(-2.0), rejected_B=f64(-4.0), ref_chosen_B=f64(-2.0), ref_rejected_B=f64(-3.0),
                   len_chosen_B=f64(1.0), len_rejected_B=f64(1.0), label_B=f64(1.0), index_B=torch.tensor([0]))
    loss_B, m = FDPO(beta=0.5, divergence="forward_kl")(lp)
    assert loss_B.item() == pytest.approx(nls(0.5 * (math.e - 1)), abs=1e-12)
    assert m["pref/reward_chosen"] == pytest.approx(-0.5) and m["pref/reward_rejected"] == pytest.approx(-0.5 * math.e)
    assert m["pref/accuracy"] == 1.0


@pytest.mark.parametrize("kwargs, key", [({"beta": 0.0}, "beta"), ({"divergence": "jsd"}, "divergence"),
                                         ({"alpha": 1.0}, "alpha"), ({"alpha": 0.0}, "alpha"),
                                         ({"max_exponent": 100.0}, "max_exponent")])
def test_constructor_rejects_bad_hyperparameters_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        FDPO(**kwargs)


def test_component_passes_alpha_and_max_exponent():
    """α = 0.25 and max_exponent = 2 reach ψ: h_w = −16 gives −αh = 4 > 2, so ψ_w = −e²(1 + 2)/α
    (tangent), h_l = 0 gives ψ_l = −1/α; β = 0.1."""
    t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    lp = PairLogps(chosen_B=t(-16.0), rejected_B=t(0.0), ref_chosen_B=t(0.0), ref_rejected_B=t(0.0),
                   len_chosen_B=t(1.0), len_rejected_B=t(1.0), label_B=t(1.0), index_B=torch.tensor([0]))
    loss_B, _ = FDPO(beta=0.1, divergence="alpha", alpha=0.25, max_exponent=2.0)(lp)
    z = 0.1 * (-math.exp(2.0) * 3 / 0.25 + 1 / 0.25)
    assert loss_B.item() == pytest.approx(nls(z), abs=1e-9)
    direct = fdpo_loss(f64(-16.0), f64(0.0), f64(1.0), beta=0.1, divergence="alpha", alpha=0.25, max_exponent=2.0)
    assert direct.item() == pytest.approx(nls(z), abs=1e-9)
    fwd = fdpo_loss(f64(-5.0), f64(0.0), f64(1.0), beta=0.1, divergence="forward_kl", max_exponent=2.0)
    assert fwd.item() == pytest.approx(nls(0.1 * (-math.exp(2.0) * 4 + 1)), abs=1e-9)


def test_function_defaults_match_the_component_defaults():
    """Without hyperparameters the functions compute what FDPO() computes (reverse KL, β = 0.1), and
    the α / cap defaults are the component's (α = 0.5, cap 20: h = −60 is past the cap for α)."""
    h_w, h_l, label = f64(-60.0, 2.0), f64(1.0, -3.0), f64(1.0, 0.4)
    lp = PairLogps(chosen_B=h_w, rejected_B=h_l, ref_chosen_B=None, ref_rejected_B=None, len_chosen_B=f64(1.0, 1.0),
                   len_rejected_B=f64(1.0, 1.0), label_B=label, index_B=torch.tensor([0, 1]))
    assert torch.equal(fdpo_loss(h_w, h_l, label), FDPO()(lp)[0])
    assert torch.equal(fdpo_loss(h_w, h_l, label, divergence="alpha"), FDPO(divergence="alpha")(lp)[0])
    assert torch.equal(f_divergence_psi(h_w, divergence="alpha"), -capped_exp(0.5 * -h_w, max_exponent=20.0) / 0.5)
    assert torch.equal(capped_exp(f64(25.0)), capped_exp(f64(25.0), max_exponent=20.0))
    assert torch.equal(f_divergence_psi(h_w), h_w)


def test_unknown_divergence_in_the_pure_function_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"fdpo: divergence must be one of reverse_kl, forward_kl, js, alpha, "
                                         r"got 'kl'"):
        f_divergence_psi(f64(0.0), divergence="kl")
    with pytest.raises(ValueError, match=r"one of reverse_kl, forward_kl, js, alpha, got 'jsd'"):
        FDPO(divergence="jsd")


def test_max_exponent_range_is_open_at_0_and_closed_at_80():
    FDPO(max_exponent=80.0)
    FDPO(max_exponent=0.5)
    for bad in (0.0, 80.5):
        with pytest.raises(ValueError, match=r"fdpo: max_exponent must be in \(0, 80\]"):
            FDPO(max_exponent=bad)
