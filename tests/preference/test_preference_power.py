"""POWER and POWER-DL (``preference/power.py``): hand values, the dynamic-label update, its state.

Shared hand case: β = 2, chosen Σ log π = −4 over 4 tokens (ℓ̄_w = −1), rejected −6 over 2 tokens
(ℓ̄_l = −3):  Δ = 2(−1 − (−3)) + 2(1/4 − 1/2) = 4 − 0.5 = 3.5;  η = 0.01 adds −ηβ·ℓ̄_w = +0.02.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from entrolab.preference.api import PairLogps
from entrolab.preference.power import POWER, POWERDL, dynamic_label_update, power_loss, power_margin


def nls(z: float) -> float:
    return math.log1p(math.exp(-z))


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def f64(x):
    return torch.tensor(x, dtype=torch.float64)


def lp_of(chosen, rejected, len_c, len_r, *, label=None, index=None, grad=True):
    B = len(chosen)
    return PairLogps(chosen_B=f64(chosen).requires_grad_(grad), rejected_B=f64(rejected).requires_grad_(grad),
                     ref_chosen_B=None, ref_rejected_B=None, len_chosen_B=f64(len_c), len_rejected_B=f64(len_r),
                     label_B=f64(label or [1.0] * B), index_B=torch.tensor(index or list(range(B))))


def test_margin_and_loss_hand_values():
    delta = power_margin(f64([-4.0]), f64([-6.0]), f64([4.0]), f64([2.0]), beta=2.0)
    assert delta.item() == pytest.approx(3.5, abs=1e-12)
    loss = power_loss(f64([-4.0]), f64([-6.0]), f64([4.0]), f64([2.0]), f64([1.0]), beta=2.0, eta=0.01)
    assert loss.item() == pytest.approx(nls(3.5) + 0.02, abs=1e-12)
    soft = power_loss(f64([-4.0]), f64([-6.0]), f64([4.0]), f64([2.0]), f64([0.25]), beta=2.0, eta=0.0)
    assert soft.item() == pytest.approx(0.25 * nls(3.5) + 0.75 * nls(-3.5), abs=1e-12)


def test_margin_is_the_gap_of_the_weighted_entropy_rewards():
    """r(y) = β w(y)(log π(y) + 1) with w = 1/|y|: r_w − r_l = Δ, logged as pref/margin."""
    lp = lp_of([-4.0, -9.0], [-6.0, -2.0], [4.0, 3.0], [2.0, 5.0])
    _, m = POWER(beta=2.0)(lp)
    r_w = [2 * (-4 + 1) / 4, 2 * (-9 + 1) / 3]
    r_l = [2 * (-6 + 1) / 2, 2 * (-2 + 1) / 5]
    delta = power_margin(lp.chosen_B, lp.rejected_B, lp.len_chosen_B, lp.len_rejected_B, beta=2.0)
    assert m["pref/margin"] == pytest.approx(sum(a - b for a, b in zip(r_w, r_l)) / 2)
    assert m["pref/margin"] == pytest.approx(delta.mean().item())
    assert m["pref/accuracy"] == pytest.approx(float(r_w[0] > r_l[0]) / 2 + float(r_w[1] > r_l[1]) / 2)


def test_sft_term_gradient():
    """η only adds −ηβ/|y_w| to ∂L/∂ℓ_w: with β = 2, |y_w| = 4, η = 0.5 the difference is −0.25."""
    grads = []
    for eta in (0.0, 0.5):
        lp = lp_of([-4.0], [-6.0], [4.0], [2.0])
        POWER(beta=2.0, eta=eta)(lp)[0].sum().backward()
        grads.append(lp.chosen_B.grad.item())
    assert grads[1] - grads[0] == pytest.approx(-0.25, abs=1e-12)
    assert grads[0] == pytest.approx(-2.0 / 4 * sig(-3.5), abs=1e-12)  # −β w σ(−Δ)


def test_dynamic_labels_hand_values():
    """γ = 0.5. Step 1 uses the data label 1; then l ← 0.5·1 + 0.5·σ(3.5) = 0.985344.
    Step 2 uses l = 0.985344: −[l log σ(3.5) + (1 − l) log σ(−3.5)] + 0.02."""
    dl = POWERDL(beta=2.0, eta=0.01, gamma=0.5)
    loss1, m1 = dl(lp_of([-4.0], [-6.0], [4.0], [2.0], index=[7]))
    assert loss1.item() == pytest.approx(nls(3.5) + 0.02, abs=1e-12) and m1["pref/label_mean"] == 1.0
    l2 = 0.5 + 0.5 * sig(3.5)
    assert dl.labels == {7: pytest.approx(l2, abs=1e-12)}
    loss2, m2 = dl(lp_of([-4.0], [-6.0], [4.0], [2.0], index=[7]))
    assert loss2.item() == pytest.approx(l2 * nls(3.5) + (1 - l2) * nls(-3.5) + 0.02, abs=1e-12)
    assert m2["pref/label_mean"] == pytest.approx(l2)


def test_gamma_zero_recovers_power_over_several_steps():
    """γ = 0 keeps every label at its data value: POWER-DL equals POWER at each step of a short
    run on one pair set (labels 1 and 0.6), gradients included."""
    torch.manual_seed(0)
    theta = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    dl, plain = POWERDL(beta=2.0, eta=0.01, gamma=0.0), POWER(beta=2.0, eta=0.01)
    for _ in range(3):
        lp = PairLogps(chosen_B=theta[:, 0] - 5, rejected_B=theta[:, 1] - 6, ref_chosen_B=None, ref_rejected_B=None,
                       len_chosen_B=f64([3.0, 4.0]), len_rejected_B=f64([2.0, 6.0]), label_B=f64([1.0, 0.6]),
                       index_B=torch.tensor([0, 1]))
        a, _ = dl(lp)
        b, _ = plain(lp)
        assert torch.equal(a, b)
        ga, = torch.autograd.grad(a.sum(), theta, retain_graph=True)
        gb, = torch.autograd.grad(b.sum(), theta)
        assert torch.equal(ga, gb)
        with torch.no_grad():
            theta -= 0.5 * ga
    assert dl.labels == {0: 1.0, 1: pytest.approx(0.6)}


def test_stationary_label_has_zero_bradley_terry_gradient():
    """l = σ(Δ) is the label at which ∂/∂Δ of the soft BCE vanishes (η = 0)."""
    lp = lp_of([-4.0], [-6.0], [4.0], [2.0], label=[sig(3.5)])
    POWER(beta=2.0, eta=0.0)(lp)[0].sum().backward()
    assert abs(lp.chosen_B.grad.item()) < 1e-12


def test_dynamic_label_update_is_detached():
    delta = f64([0.0, 3.0]).requires_grad_(True)
    new = dynamic_label_update(f64([1.0, 0.0]), delta, gamma=0.2)
    assert not new.requires_grad
    assert new.tolist() == pytest.approx([0.8 + 0.1, 0.2 * sig(3.0)], abs=1e-12)


def test_labels_move_only_on_a_training_forward():
    """Under no_grad (evaluation: row indices of another dataset) the state is untouched."""
    dl = POWERDL(gamma=0.5)
    with torch.no_grad():
        dl(lp_of([-4.0], [-6.0], [4.0], [2.0], grad=False))
    assert dl.labels == {}


def test_state_round_trip_through_a_checkpoint_resumes_exactly():
    """Two steps straight == one step, torch.save/load(weights_only) of the state, one step."""
    batches = [lp_of([-4.0, -1.0], [-6.0, -3.0], [4.0, 1.0], [2.0, 3.0], index=[3, 11]) for _ in range(2)]
    straight = POWERDL(gamma=0.3)
    straight(batches[0])
    out_a, _ = straight(batches[1])
    first = POWERDL(gamma=0.3)
    first(batches[0])
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = POWERDL(gamma=0.3)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    out_b, _ = resumed(batches[1])
    assert torch.equal(out_a, out_b) and resumed.labels == straight.labels
    assert set(resumed.labels) == {3, 11}


def test_labels_hold_no_graph_between_steps():
    """Backward twice through consecutive steps: a label tensor kept with its graph would fail the
    second backward ("trying to backward through the graph a second time")."""
    dl = POWERDL(gamma=0.5)
    theta = f64([0.0]).requires_grad_(True)
    for _ in range(2):
        lp = PairLogps(chosen_B=theta - 4, rejected_B=theta * 2 - 6, ref_chosen_B=None, ref_rejected_B=None,
                       len_chosen_B=f64([4.0]), len_rejected_B=f64([2.0]), label_B=f64([1.0]), index_B=torch.tensor([0]))
        dl(lp)[0].sum().backward()
    assert all(isinstance(v, float) for v in dl.labels.values())


def test_load_state_dict_rejects_a_malformed_state():
    with pytest.raises(ValueError, match="power_dl: state must hold"):
        POWERDL().load_state_dict({"index": torch.tensor([1, 2]), "label": torch.tensor([0.5])})


@pytest.mark.parametrize("cls, kwargs, key", [(POWER, {"beta": 0.0}, "beta"), (POWER, {"eta": -1.0}, "eta"),
                                              (POWERDL, {"gamma": 1.5}, "gamma"), (POWERDL, {"beta": -2.0}, "beta")])
def test_constructors_reject_bad_hyperparameters_naming_the_key(cls, kwargs, key):
    with pytest.raises(ValueError, match=key):
        cls(**kwargs)


def test_power_loss_gradcheck():
    torch.manual_seed(0)
    w, l = (-torch.rand(4, dtype=torch.float64) * 20).requires_grad_(True), \
        (-torch.rand(4, dtype=torch.float64) * 20).requires_grad_(True)
    n_w, n_l, label = f64([3.0, 9.0, 1.0, 20.0]), f64([5.0, 2.0, 7.0, 20.0]), f64([1.0, 0.3, 0.9, 0.5])
    assert torch.autograd.gradcheck(lambda a, b: power_loss(a, b, n_w, n_l, label, beta=2.5, eta=0.1), (w, l))


def test_components_pass_beta_and_eta():
    """β = 0.5, η = 0.2 on the hand case: Δ = 0.5(2) + 0.5(−0.25) = 0.875; SFT term −0.2·0.5·(−1) = 0.1.
    Both POWER and POWER-DL (first step, data label), and the pure function at those values."""
    expected = nls(0.875) + 0.1
    for cls in (POWER, POWERDL):
        got = cls(beta=0.5, eta=0.2)(lp_of([-4.0], [-6.0], [4.0], [2.0]))[0].item()
        assert got == pytest.approx(expected, abs=1e-12), cls.__name__
    direct = power_loss(f64([-4.0]), f64([-6.0]), f64([4.0]), f64([2.0]), f64([1.0]), beta=0.5, eta=0.2)
    assert direct.item() == pytest.approx(expected, abs=1e-12)


def test_dynamic_label_moves_with_the_components_beta():
    """γ = 1: the new label is σ(Δ) itself, with Δ = 0.875 at β = 0.5."""
    dl = POWERDL(beta=0.5, gamma=1.0)
    dl(lp_of([-4.0], [-6.0], [4.0], [2.0], index=[2]))
    assert dl.labels[2] == pytest.approx(sig(0.875), abs=1e-12)
    assert dl.state_dict()["index"].dtype == torch.long
    assert POWERDL().state_dict()["index"].dtype == torch.long  # also before any update (torch.tensor([]) is float)


def test_function_defaults_match_the_component_defaults():
    """The functions without hyperparameters compute what the components compute with theirs."""
    lp = lp_of([-4.0, -9.0], [-6.0, -2.0], [4.0, 3.0], [2.0, 5.0], label=[1.0, 0.7])
    args = (lp.chosen_B, lp.rejected_B, lp.len_chosen_B, lp.len_rejected_B)
    assert torch.equal(power_loss(*args, lp.label_B), POWER()(lp)[0])
    dl = POWERDL()
    assert torch.equal(dl(lp)[0], POWER()(lp)[0])  # first use: the data labels, same β and η defaults
    new = dynamic_label_update(lp.label_B, power_margin(*args))
    assert [dl.labels[0], dl.labels[1]] == pytest.approx(new.tolist(), abs=1e-12)


@pytest.mark.parametrize("cls, kwargs, message", [
    (POWER, {"beta": 0.0}, "power: beta must be > 0, got 0.0"),
    (POWER, {"eta": -1.0}, "power: eta must be >= 0 (0 drops the SFT term), got -1.0"),
    (POWERDL, {"beta": -2.0}, "power_dl: beta must be > 0, got -2.0"),
    (POWERDL, {"gamma": 1.5}, "power_dl: gamma must be in [0, 1] (0 = POWER), got 1.5")])
def test_error_messages_name_the_loss_and_the_key(cls, kwargs, message):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    assert str(err.value) == message
    POWER(beta=0.5)  # small β is valid


def test_load_state_dict_names_what_it_got():
    with pytest.raises(ValueError) as err:
        POWERDL().load_state_dict({"index": torch.tensor([1, 2])})
    assert str(err.value) == ("power_dl: state must hold 1-D 'index' and 'label' tensors of equal length, "
                              "got {'index': (2,)}")
