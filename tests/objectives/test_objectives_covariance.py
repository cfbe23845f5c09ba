"""Clip-Cov / KL-Cov: hand values, identities, units trap, and the covariance entropy identity."""

from __future__ import annotations

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.covariance import (
    entropy_of_logits,
    num_selected,
    predicted_entropy_change,
    select_tokens,
    token_covariance,
)
from entrolab.registry import SURROGATES, ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:ratio=")


def test_token_covariance_hand():
    """logp = [-1, -2, -3] (mean -2), A = [1, 1, -2] (mean 0): C = [1*1, 0*1, (-1)(-2)] = [1, 0, 2]."""
    c = token_covariance(torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[1.0, 1.0, -2.0]]), torch.ones(1, 3, dtype=torch.bool))
    assert c.tolist() == [[1.0, 0.0, 2.0]]


def test_num_selected_units():
    assert num_selected(2e-4, 1000) == 1  # floor(0.2) -> at least one
    assert num_selected(2e-3, 5000) == 10
    assert num_selected(0.0, 5000) == 0  # ratio 0 switches the method off
    assert num_selected(0.5, 0) == 0


def test_percent_given_as_fraction_is_rejected_or_warned():
    with pytest.raises(ConfigError, match="fraction"):
        SURROGATES.build("kl_cov", {"ratio": 20})  # "20 percent" typed as a number
    with pytest.warns(UserWarning, match="k_percent"):
        SURROGATES.build("kl_cov", {"ratio": 0.2})  # the original repo's k_percent=0.2 copied verbatim


def _cov_case(make_inputs):
    """Same logp / A as the covariance hand test, on-policy (r = 1): C = [1, 0, 2]."""
    return make_inputs([[-1.0, -2.0, -3.0]], [[1.0, 1.0, -2.0]])


def test_clip_cov_topk_detaches_highest_candidate(make_inputs):
    """Window (0.5, 5) admits tokens 0 (C=1) and 2 (C=2); ratio 0.34 -> k = floor(1.02) = 1;
    top-k detaches token 2: its loss and gradient are 0, the others keep -A*r (grad -A)."""
    inp = _cov_case(make_inputs)
    sur = SURROGATES.build("clip_cov", {"ratio": 0.34, "cov_lb": 0.5, "cov_ub": 5.0, "selection": "topk"})
    loss, m = sur(inp)
    assert loss.tolist() == [[-1.0, -1.0, 0.0]]
    loss.sum().backward()
    assert inp.logp_BT.grad.tolist() == [[-1.0, -1.0, 0.0]]
    assert m["policy/cov_detached_frac"] == pytest.approx(1 / 3)
    assert m["policy/cov_candidate_frac"] == pytest.approx(2 / 3)
    assert m["policy/cov_mean"] == pytest.approx(1.0)


def test_clip_cov_random_picks_candidates_reproducibly(make_inputs):
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(6, 8, generator=g, dtype=torch.float64) * 4
    adv = torch.randn(6, generator=g, dtype=torch.float64) * 2
    cov = token_covariance(logp, adv[:, None].expand(6, 8), torch.ones(6, 8, dtype=torch.bool))
    cand = (cov > 0.2) & (cov < 5.0)
    picks = []
    for _ in range(2):
        chosen = select_tokens(cov, cand, 5, selection="random", generator=torch.Generator().manual_seed(7))
        assert int(chosen.sum()) == 5 and not (chosen & ~cand).any()
        picks.append(chosen)
    assert torch.equal(picks[0], picks[1])
    other = select_tokens(cov, cand, 5, selection="random", generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other, picks[0])


def test_clip_cov_ratio_zero_equals_ppo_clip(make_inputs):
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(4, 5, generator=g, dtype=torch.float64) * 3
    logp = old + 0.3 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [0] * 5, [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = []
    for name, params in [("clip_cov", {"ratio": 0.0, "eps_low": 0.2, "eps_high": 0.28}),
                         ("ppo_clip", {"eps_low": 0.2, "eps_high": 0.28})]:
        inp = make_inputs(logp, adv, mask, old_logp_BT=old)
        loss, _ = SURROGATES.build(name, params)(inp)
        loss.sum().backward()
        out.append((loss.detach(), inp.logp_BT.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_kl_cov_on_policy_equals_plain_policy_gradient(make_inputs):
    """On-policy delta = 0 and d|delta|/d delta = 0 at 0: the KL-Cov gradient is the PG gradient."""
    g = torch.Generator().manual_seed(2)
    logp = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 3
    adv = torch.randn(3, generator=g, dtype=torch.float64)
    grads = []
    for name, params in [("kl_cov", {"ratio": 0.5}), ("reinforce", {})]:
        inp = make_inputs(logp, adv)
        loss, m = SURROGATES.build(name, params)(inp)
        loss.sum().backward()
        grads.append(inp.logp_BT.grad)
    assert torch.allclose(grads[0], grads[1])


def test_kl_cov_off_policy_hand(make_inputs):
    """C = [1, 0, 2] as above (current logp), delta = logp - old = [0.1, 0.1, -0.2], beta = 2, k = 1:
    token 2 (largest C) gets +2*|delta| = +0.4 on top of -A*r; its gradient is -A*r - beta (sign -1)."""
    inp = make_inputs([[-1.0, -2.0, -3.0]], [[1.0, 1.0, -2.0]], old_logp_BT=[[-1.1, -2.1, -2.8]])
    loss, m = SURROGATES.build("kl_cov", {"ratio": 0.34, "beta": 2.0})(inp)
    r = torch.tensor([0.1, 0.1, -0.2], dtype=torch.float64).exp()
    expected = torch.tensor([-r[0], -r[1], 2 * r[2] + 0.4])
    assert torch.allclose(loss[0], expected.double())
    loss.sum().backward()
    assert torch.allclose(inp.logp_BT.grad[0], torch.tensor([-r[0], -r[1], 2 * r[2] - 2.0], dtype=torch.float64))
    assert m["policy/cov_selected_frac"] == pytest.approx(1 / 3)
    assert m["policy/abs_log_ratio"] == pytest.approx(0.4 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_covariance_identity_predicts_entropy_change(seed):
    """H(z + dz) - H(z) = -Cov_pi(log pi, dz) + O(|dz|^2): the error shrinks ~100x when dz shrinks 10x."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(9, generator=g, dtype=torch.float64) * 2
    direction = torch.randn(9, generator=g, dtype=torch.float64)
    errs = []
    for eps in (1e-2, 1e-3):
        dz = eps * direction
        actual = entropy_of_logits(z + dz) - entropy_of_logits(z)
        pred = predicted_entropy_change(z, dz)
        assert abs(float(actual - pred)) < 0.05 * abs(float(pred)) + 1e-10
        errs.append(abs(float(actual - pred)))
    assert errs[1] < errs[0] / 50


def test_policy_gradient_step_entropy_change_matches_covariance():
    """A real PG step on a softmax policy: loss = -sum_a pi(a) A(a) log pi(a) style score step with
    sampled-token update dz = eta*A*(e_k - pi); the predicted change -Cov(log pi, dz) matches the
    actual entropy change of the updated policy to first order."""
    g = torch.Generator().manual_seed(11)
    z = (torch.randn(6, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    k, adv, eta = 2, 1.3, 1e-3
    loss = -adv * torch.log_softmax(z, -1)[k]
    (grad,) = torch.autograd.grad(loss, z)
    dz = -eta * grad
    pi = torch.softmax(z.detach(), -1)
    assert torch.allclose(dz, eta * adv * (torch.nn.functional.one_hot(torch.tensor(k), 6) - pi))
    actual = entropy_of_logits(z.detach() + dz) - entropy_of_logits(z.detach())
    pred = predicted_entropy_change(z.detach(), dz)
    assert float(actual) == pytest.approx(float(pred), rel=1e-2)
