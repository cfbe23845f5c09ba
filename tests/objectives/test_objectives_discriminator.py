"""Clip_B / Clip_V: the discriminator identities and the keep rules."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.covariance import entropy_of_logits, predicted_entropy_change
from entrolab.objectives.discriminator import (
    clip_b_keep,
    clip_v_keep,
    entropy_discriminator,
    expected_discriminator,
)
from entrolab.registry import TOKEN_WEIGHTS


def test_discriminator_hand():
    """p = 0.5, H = 1: S = 0.5 * (1 + ln 0.5) = 0.15343."""
    s = entropy_discriminator(torch.tensor([[math.log(0.5)]]), torch.tensor([[1.0]]))
    assert s.item() == pytest.approx(0.5 * (1 - math.log(2)))


def test_single_logit_and_grpo_step_identities():
    """Raising logit k by eps changes H by -eps*S_k; a score step eta*A*(e_k - pi) by
    -eta*A*(S_k - E_pi[S]); both checked against the exact change and the covariance identity."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, generator=g, dtype=torch.float64) * 1.5
    pi, h = torch.softmax(z, -1), entropy_of_logits(z)
    nec, h2 = expected_discriminator(z[None, None])
    assert h2.item() == pytest.approx(h.item())
    assert nec.item() == pytest.approx(float((pi.square() * (h + pi.log())).sum()))
    k, eps = 3, 1e-4
    s_k = float(pi[k] * (h + pi[k].log()))
    dz = torch.zeros(8, dtype=torch.float64)
    dz[k] = eps
    assert float(entropy_of_logits(z + dz) - h) == pytest.approx(-eps * s_k, rel=1e-3)
    step = eps * 0.7 * (torch.nn.functional.one_hot(torch.tensor(k), 8) - pi)
    expected = -eps * 0.7 * (s_k - nec.item())
    assert float(entropy_of_logits(z + step) - h) == pytest.approx(expected, rel=1e-3)
    assert float(predicted_entropy_change(z, step)) == pytest.approx(expected, rel=1e-9)


def test_clip_b_keep_rule():
    """S = [0,0,0,0,0,-10], A < 0: mean -1.667, pop. std sqrt(100/6 - 1.667^2) = 3.727.
    mu = 2: token 5 has S - mean = -8.33 < -7.45 -> dropped; with mu = 2.5 (-9.32) it is kept.
    A positive token is never dropped."""
    s = torch.tensor([[0.0] * 5 + [-10.0]])
    mask = torch.ones(1, 6, dtype=torch.bool)
    neg = -torch.ones(1, 6)
    assert clip_b_keep(s, neg, mask, mu=2.0).tolist() == [[True] * 5 + [False]]
    assert clip_b_keep(s, neg, mask, mu=2.5).all()
    pos = neg.clone()
    pos[0, 5] = 1.0
    assert clip_b_keep(s, pos, mask, mu=2.0).all()
    assert clip_b_keep(torch.zeros(1, 6), neg, mask, mu=0.0).all()  # sigma = 0: keep everything


def test_clip_b_component_renormalises(make_inputs):
    """Five tokens at p = 0.5, H = 1 and one rare token (p = 1e-3, H = 3), all A < 0: S of the rare
    token is ~0 vs 0.153 for the others; with mu = 2 it is dropped (S - mean = -0.128 < -2*0.057)
    and the five kept tokens get weight 6/5."""
    logp = [[math.log(0.5)] * 5 + [math.log(1e-3)]]
    inp = make_inputs(logp, [-1.0], entropy_BT=[[1.0] * 5 + [3.0]])
    w, m = TOKEN_WEIGHTS.build("clip_b", {"mu": 2.0})(inp)
    assert w.tolist()[0] == pytest.approx([1.2] * 5 + [0.0])
    assert m["weight/clip_b_frac"] == pytest.approx(1 / 6) and m["weight/clip_b_frac_neg"] == pytest.approx(1 / 6)
    w2, _ = TOKEN_WEIGHTS.build("clip_b", {"mu": 2.0, "renormalize": False})(inp)
    assert w2.tolist()[0] == [1.0] * 5 + [0.0]


def test_clip_v_keep_rule_and_cap():
    """D = [0,0,0,0,0,10], A <= 0, mu = 1: sigma_D = 3.727 (not centred threshold), D = 10 > 3.727
    -> dropped. With three violators and max_frac = 0.2 (cap floor(1.2) = 1) only the largest goes."""
    mask = torch.ones(1, 6, dtype=torch.bool)
    neg = -torch.ones(1, 6)
    d = torch.tensor([[0.0] * 5 + [10.0]])
    assert clip_v_keep(d, neg, mask, mu=1.0, max_frac=1.0).tolist() == [[True] * 5 + [False]]
    assert clip_v_keep(d, torch.ones(1, 6), mask, mu=1.0, max_frac=1.0).all()  # A > 0 always kept
    d3 = torch.tensor([[20.0, 30.0, 25.0, 0.0, 0.0, 0.0]])
    assert clip_v_keep(d3, neg, mask, mu=0.1, max_frac=1.0).tolist() == [[False, False, False, True, True, True]]
    assert clip_v_keep(d3, neg, mask, mu=0.1, max_frac=0.2).tolist() == [[True, False, True, True, True, True]]


def test_clip_v_component_needs_logits(make_inputs):
    with pytest.raises(ValueError, match="logits"):
        TOKEN_WEIGHTS.build("clip_v")(make_inputs([[0.0]], [-1.0]))
