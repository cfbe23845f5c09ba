"""Contract tests over every PREFERENCE_LOSSES entry (the contract is in ``preference/api.py``)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from entrolab.components import import_builtins
from entrolab.preference.api import PairLogps
from entrolab.registry import PREFERENCE_LOSSES, ConfigError

import_builtins()
NAMES = PREFERENCE_LOSSES.names()


def _lp(chosen, rejected, ref_chosen, ref_rejected, len_c, len_r, label, *, group=None):
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return PairLogps(chosen_B=t(chosen).requires_grad_(True), rejected_B=t(rejected).requires_grad_(True),
                     ref_chosen_B=t(ref_chosen), ref_rejected_B=t(ref_rejected), len_chosen_B=t(len_c),
                     len_rejected_B=t(len_r), label_B=t(label), index_B=torch.arange(len(chosen)),
                     group_B=None if group is None else torch.tensor(group))


def _ordinary():
    return _lp([-12.0, -3.0, -40.0, -7.5], [-15.0, -2.0, -35.0, -20.0], [-11.0, -4.0, -38.0, -9.0],
               [-14.0, -2.5, -30.0, -18.0], [6.0, 2.0, 20.0, 5.0], [7.0, 1.0, 18.0, 9.0], [1.0, 1.0, 1.0, 1.0],
               group=[0, 0, 1, 2])


def _extreme():
    """h = ±200 and log-probs of −1000, lengths 1 and 500, hard, soft and reversed labels."""
    return _lp([-1000.0, -1e-6, -200.0, -0.5], [-1e-6, -1000.0, -0.5, -200.0], [-800.0, -200.0, 0.0, -0.5],
               [-200.0, -800.0, -0.5, 0.0], [500.0, 1.0, 40.0, 1.0], [1.0, 500.0, 1.0, 40.0], [1.0, 0.0, 0.5, 1.0])


@pytest.fixture(params=NAMES)
def loss(request):
    return PREFERENCE_LOSSES.build(request.param, {}, where="loss")


@pytest.mark.parametrize("make", [_ordinary, _extreme], ids=["ordinary", "extreme"])
def test_shape_finiteness_gradient_and_metrics(loss, make):
    lp = make()
    loss_B, metrics = loss(lp)
    assert loss_B.shape == (4,) and torch.isfinite(loss_B).all()
    loss_B.sum().backward()
    for g in (lp.chosen_B.grad, lp.rejected_B.grad):
        assert g is not None and torch.isfinite(g).all()
    assert (lp.chosen_B.grad.abs() + lp.rejected_B.grad.abs()).sum() > 0
    assert metrics and all(type(v) is float and math.isfinite(v) for v in metrics.values())
    assert all(k.startswith("pref/") for k in metrics)


def test_gradient_flows_only_through_the_policy_terms(loss):
    """Reference log-probs, lengths and labels are data: the loss must not need their gradient, and
    a reference-free loss must not read the reference at all (same output with it dropped)."""
    lp = _ordinary()
    for t in (lp.ref_chosen_B, lp.ref_rejected_B, lp.len_chosen_B, lp.len_rejected_B, lp.label_B):
        assert not t.requires_grad
    twin = copy.deepcopy(loss)  # a stateful loss (power_dl) changes its state on every training call
    loss_B, _ = loss(lp)
    assert loss_B.requires_grad and loss_B.grad_fn is not None
    if not getattr(loss, "requires_reference", True):
        no_ref = PairLogps(**{**lp.__dict__, "ref_chosen_B": None, "ref_rejected_B": None})
        assert torch.equal(twin(no_ref)[0], loss_B)


def test_state_holds_no_graph_and_a_second_step_backpropagates(loss):
    """Two consecutive training steps each back-propagate (state kept with a graph would fail), and
    whatever ``state_dict`` holds is detached and loads with ``weights_only``."""
    for _ in range(2):
        loss(_ordinary())[0].sum().backward()
    if callable(getattr(loss, "state_dict", None)):
        import io

        buf = io.BytesIO()
        torch.save(loss.state_dict(), buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        tensors = [v for v in _leaves(state) if isinstance(v, torch.Tensor)]
        assert not any(t.requires_grad for t in tensors)
        loss.load_state_dict(state)


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def test_equal_responses_scores_give_the_symmetric_loss():
    """Every Bradley–Terry style loss at a zero margin is log 2 (IPO: its target² = (1/(2τ))²)."""
    zero = _lp([-5.0], [-5.0], [-5.0], [-5.0], [5.0], [5.0], [1.0])
    expected = {"ipo": (1 / (2 * 0.1)) ** 2, "robust_dpo": (0.9 - 0.1) * math.log(2) / 0.8}
    for name in NAMES:
        got = PREFERENCE_LOSSES.build(name, {})(zero)[0]
        if name in ("cpl", "cpl_ranked", "power", "power_dl"):
            continue  # reference-free: their margin is not zero here (λ, length terms)
        assert got.item() == pytest.approx(expected.get(name, math.log(2)), rel=1e-6), name


@pytest.mark.parametrize("name, key, value", [
    ("dpo", "beta", -1.0), ("ipo", "tau", 0.0), ("cdpo", "eps", 0.6), ("robust_dpo", "eps", 0.5),
    ("fdpo", "alpha", 1.0), ("fdpo", "divergence", "kl"), ("cpl", "lam", 2.0), ("cpl_ranked", "alpha", -0.1),
    ("power", "eta", -0.5), ("power_dl", "gamma", -0.1), ("spo", "weight", -1.0), ("spo", "k_max", 0)])
def test_bad_hyperparameters_are_config_errors_naming_the_key(name, key, value):
    with pytest.raises(ConfigError, match=rf"loss.*{key}"):
        PREFERENCE_LOSSES.build(name, {key: value}, where="loss")

