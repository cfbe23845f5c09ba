"""CPL and ranked CPL (``preference/cpl.py``): hand values, the λ gradient ratio, brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from entrolab.preference.api import PairLogps
from entrolab.preference.cpl import CPL, CPLRanked, cpl_loss, cpl_ranked_loss


def nls(z: float) -> float:
    """−log σ(z)."""
    return math.log1p(math.exp(-z))


def f64(x):
    return torch.tensor(x, dtype=torch.float64)


def lp_of(chosen, rejected, *, label=None, group=None, ref=False):
    B = len(chosen)
    return PairLogps(chosen_B=f64(chosen), rejected_B=f64(rejected),
                     ref_chosen_B=f64([-1.0] * B) if ref else None, ref_rejected_B=f64([-7.0] * B) if ref else None,
                     len_chosen_B=f64([1.0] * B), len_rejected_B=f64([1.0] * B), label_B=f64(label or [1.0] * B),
                     index_B=torch.arange(B), group_B=None if group is None else torch.tensor(group))


def test_cpl_hand_values():
    """α = 0.1, logp_w = −10, logp_l = −20: S_w = −1, S_l = −2.
    λ = 0.5: S_w − λS_l = 0 → log 2.  λ = 1: 1 → −log σ(1) = 0.313262.
    soft l = 0.25, λ = 0.5: 0.25·log 2 + 0.75·(−log σ(S_l − λS_w)) = 0.25 log 2 + 0.75·(−log σ(−1.5))."""
    w, l = f64([-10.0]), f64([-20.0])
    assert cpl_loss(w, l, f64([1.0]), alpha=0.1, lam=0.5).item() == pytest.approx(math.log(2), abs=1e-12)
    assert cpl_loss(w, l, f64([1.0]), alpha=0.1, lam=1.0).item() == pytest.approx(nls(1.0), abs=1e-12)
    soft = cpl_loss(w, l, f64([0.25]), alpha=0.1, lam=0.5).item()
    assert soft == pytest.approx(0.25 * math.log(2) + 0.75 * nls(-1.5), abs=1e-12)


def test_conservative_lambda_scales_the_rejected_gradient():
    """L = −log σ(α w − λα l): ∂L/∂w = −α σ(−u), ∂L/∂l = λα σ(−u), so ∂L/∂l = −λ ∂L/∂w."""
    w, l = f64([-12.0, -3.0]).requires_grad_(True), f64([-15.0, -40.0]).requires_grad_(True)
    cpl_loss(w, l, f64([1.0, 1.0]), alpha=0.2, lam=0.3).sum().backward()
    assert torch.allclose(l.grad, -0.3 * w.grad, atol=1e-15)
    assert (w.grad < 0).all()  # raising the chosen log-prob lowers the loss


def test_cpl_component_is_reference_free_and_logs_scores():
    """Same loss with or without reference log-probs; rewards are S = α·logp (−1 and −2)."""
    a, ma = CPL(alpha=0.1, lam=0.5)(lp_of([-10.0], [-20.0]))
    b, _ = CPL(alpha=0.1, lam=0.5)(lp_of([-10.0], [-20.0], ref=True))
    assert CPL.requires_reference is False and torch.equal(a, b)
    assert ma["pref/reward_chosen"] == pytest.approx(-1.0) and ma["pref/margin"] == pytest.approx(1.0)


def test_ranked_hand_value():
    """α = 0.1, λ = 0.5, logp [−10, −20, −10] → S = [−1, −2, −1], scores [2, 0, 1].
    Ordered pairs (worse i → better j): (1→0): S_0 − λS_1 = 0 → log 2; (1→2): 0 → log 2;
    (2→0): −1 + 0.5 = −0.5 → −log σ(−0.5) = 0.974077. Mean of the three."""
    got = cpl_ranked_loss(f64([-10.0, -20.0, -10.0]), f64([2.0, 0.0, 1.0]), alpha=0.1, lam=0.5)
    assert got.item() == pytest.approx((2 * math.log(2) + nls(-0.5)) / 3, abs=1e-12)


def test_ranked_skips_ties_and_is_zero_without_an_ordered_pair():
    """Scores [1, 1, 0]: only (2→0) and (2→1) count; scores all equal: loss 0 with a graph."""
    logp = f64([-10.0, -30.0, -20.0]).requires_grad_(True)
    got = cpl_ranked_loss(logp, f64([1.0, 1.0, 0.0]), alpha=0.1, lam=0.5)
    assert got.item() == pytest.approx((nls(-1 + 1.0) + nls(-3 + 1.0)) / 2, abs=1e-12)
    zero = cpl_ranked_loss(logp, f64([0.5, 0.5, 0.5]))
    assert zero.item() == 0.0 and zero.requires_grad


def test_ranked_equals_brute_force_over_ordered_pairs():
    torch.manual_seed(0)
    logp, score = -torch.rand(6, dtype=torch.float64) * 30, torch.randint(0, 3, (6,)).double()
    terms = [nls(0.2 * logp[j].item() - 0.7 * 0.2 * logp[i].item())
             for i, j in itertools.permutations(range(6), 2) if score[j] > score[i]]
    assert cpl_ranked_loss(logp, score, alpha=0.2, lam=0.7).item() == pytest.approx(sum(terms) / len(terms), abs=1e-12)


def test_ranked_matches_upstream_on_distinct_scores():
    """The authors' ``biased_bce_with_scores`` (sort ascending, strict upper triangle, mean over
    non-zero entries), restated here, agrees when scores are distinct."""
    torch.manual_seed(2)
    adv, score = -torch.rand(5, dtype=torch.float64) * 3, torch.randperm(5).double()
    s = adv[torch.argsort(score)]
    up = -torch.nn.functional.logsigmoid(s[None, :] - 0.5 * s[:, None])
    up = torch.triu(up, diagonal=1)
    upstream = up.sum() / (up != 0).sum()
    assert cpl_ranked_loss(adv, score, alpha=1.0, lam=0.5).item() == pytest.approx(upstream.item(), abs=1e-12)


def test_ranked_component_groups_pairs_by_prompt():
    """Group 0 holds pairs (w0, l0), (w1, l1); group 1 holds (w2, l2). Group 0's pairs average over
    all four chosen-vs-rejected cross pairs = cpl_ranked_loss on [w0, w1, l0, l1] with scores
    [1, 1, 0, 0]; pair 2 (alone) is plain CPL."""
    w, l = [-10.0, -14.0, -8.0], [-20.0, -12.0, -30.0]
    loss_B, _ = CPLRanked(alpha=0.1, lam=0.5)(lp_of(w, l, group=[0, 0, 1]))
    group0 = cpl_ranked_loss(f64([w[0], w[1], l[0], l[1]]), f64([1.0, 1.0, 0.0, 0.0]), alpha=0.1, lam=0.5)
    assert loss_B[:2].mean().item() == pytest.approx(group0.item(), abs=1e-12)
    # pair 0 by hand: mean over l0, l1 of −log σ(−1 − 0.5·S_l): S_l0 = −2, S_l1 = −1.2.
    assert loss_B[0].item() == pytest.approx((nls(-1 + 1.0) + nls(-1 + 0.6)) / 2, abs=1e-12)
    assert loss_B[2].item() == pytest.approx(cpl_loss(f64([w[2]]), f64([l[2]]), f64([1.0]), alpha=0.1, lam=0.5).item())


def test_ranked_component_without_groups_is_plain_cpl_with_soft_labels():
    lp = lp_of([-10.0, -3.0], [-20.0, -9.0], label=[0.7, 1.0])
    plain, _ = CPL(alpha=0.1, lam=0.5)(lp)
    assert torch.equal(CPLRanked(alpha=0.1, lam=0.5)(lp)[0], plain)
    singletons = lp_of([-10.0, -3.0], [-20.0, -9.0], label=[0.7, 1.0], group=[4, 9])
    assert torch.allclose(CPLRanked(alpha=0.1, lam=0.5)(singletons)[0], plain)


def test_ranked_component_rejects_soft_labels_inside_a_group():
    lp = lp_of([-10.0, -3.0], [-20.0, -9.0], label=[1.0, 0.6], group=[0, 0])
    with pytest.raises(ValueError, match=r"batch row 1 \(dataset row 1\) has soft label 0.6"):
        CPLRanked()(lp)


@pytest.mark.parametrize("cls", [CPL, CPLRanked])
@pytest.mark.parametrize("kwargs, key", [({"alpha": 0.0}, "alpha"), ({"lam": 0.0}, "lam"), ({"lam": 1.5}, "lam")])
def test_constructors_reject_bad_hyperparameters_naming_the_key(cls, kwargs, key):
    with pytest.raises(ValueError, match=key):
        cls(**kwargs)


def test_gradcheck_pair_and_ranked_forms():
    torch.manual_seed(3)
    w, l = (-torch.rand(4, dtype=torch.float64) * 30).requires_grad_(True), \
        (-torch.rand(4, dtype=torch.float64) * 30).requires_grad_(True)
    label = f64([1.0, 0.2, 0.7, 0.0])
    assert torch.autograd.gradcheck(lambda a, b: cpl_loss(a, b, label, alpha=0.3, lam=0.6), (w, l))
    logp, score = (-torch.rand(5, dtype=torch.float64) * 30).requires_grad_(True), f64([0.0, 2.0, 1.0, 1.0, 3.0])
    assert torch.autograd.gradcheck(lambda a: cpl_ranked_loss(a, score, alpha=0.3, lam=0.6), (logp,))


def test_soft_label_second_order_by_hand():
    """α = 0.1, λ = 0.5, logp_w = −20, logp_l = −30: S_w = −2, S_l = −3, l = 0.25:
    0.25·(−log σ(−2 + 1.5)) + 0.75·(−log σ(−3 + 1))."""
    got = cpl_loss(f64([-20.0]), f64([-30.0]), f64([0.25]), alpha=0.1, lam=0.5).item()
    assert got == pytest.approx(0.25 * nls(-0.5) + 0.75 * nls(-2.0), abs=1e-12)


def test_ranked_with_a_single_ordered_pair():
    """K = 2, scores [0, 1]: one pair, −log σ(S_1 − λ S_0) = −log σ(−1 + 1) = log 2 (α = 0.1, λ = 0.5)."""
    got = cpl_ranked_loss(f64([-20.0, -10.0]), f64([0.0, 1.0]), alpha=0.1, lam=0.5)
    assert got.item() == pytest.approx(math.log(2), abs=1e-12)


def test_components_pass_alpha_and_lam():
    """α = 0.2, λ = 0.8 with logp_w = −10, logp_l = −20: S_w = −2, S_l = −4 → −log σ(−2 + 3.2)."""
    expected = nls(-2 + 0.8 * 4)
    assert CPL(alpha=0.2, lam=0.8)(lp_of([-10.0], [-20.0]))[0].item() == pytest.approx(expected, abs=1e-12)
    for group in (None, [0]):
        got = CPLRanked(alpha=0.2, lam=0.8)(lp_of([-10.0], [-20.0], group=group))[0].item()
        assert got == pytest.approx(expected, abs=1e-12)
    CPL(lam=1.0)  # λ = 1 (plain CPL) is allowed


def test_function_defaults_match_the_component_defaults():
    lp = lp_of([-10.0, -3.0], [-20.0, -9.0], label=[1.0, 0.6])
    assert torch.equal(cpl_loss(lp.chosen_B, lp.rejected_B, lp.label_B), CPL()(lp)[0])
    grouped = lp_of([-10.0, -3.0], [-20.0, -9.0], group=[0, 0])
    assert cpl_ranked_loss(f64([-10.0, -3.0, -20.0, -9.0]), f64([1.0, 1.0, 0.0, 0.0])).item() == \
        pytest.approx(CPLRanked()(grouped)[0].mean().item(), abs=1e-12)


@pytest.mark.parametrize("name, cls", [("cpl", CPL), ("cpl_ranked", CPLRanked)])
def test_error_messages_name_the_loss(name, cls):
    with pytest.raises(ValueError) as err:
        cls(lam=1.5)
    assert str(err.value) == f"{name}: lam must be in (0, 1] (1 = plain CPL, < 1 conservative), got 1.5"
    with pytest.raises(ValueError) as err:
        cls(alpha=-1.0)
    assert str(err.value) == f"{name}: alpha must be > 0, got -1.0"
