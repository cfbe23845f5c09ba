"""Clip_V through the component, from logits: the sign of D = E_π[S] − S.

The rule tests call ``clip_v_keep`` with D given; nothing built D from logits, so D = S − E_π[S]
passed the suite (issue 9, "Branches no test checks"). Here D comes from real distributions.

Hand values. Five positions have a uniform 2-way distribution: S_j = ½(ln 2 − ln 2) = 0 for both
tokens, so E_π[S] = 0 and D = 0. One position has π = (0.9, 0.1), H = 0.325083:
S_0 = 0.9(H + ln 0.9) = 0.197750, S_1 = 0.1(H + ln 0.1) = −0.197750 (Σ_j S_j = H − H = 0),
E_π[S] = 0.9·S_0 + 0.1·S_1 = 0.158200. Sampling the rare token 1 gives D = 0.158200 + 0.197750 =
0.355950 (penalising it lowers entropy: ΔH ≈ ηA·D < 0 for A < 0, the case Clip_V drops); sampling
the common token 0 gives D = −0.039550.
"""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.registry import TOKEN_WEIGHTS

H = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
S0, S1 = 0.9 * (H + math.log(0.9)), 0.1 * (H + math.log(0.1))
NEC = 0.9 * S0 + 0.1 * S1
SKEWED = [math.log(9.0), 0.0]  # softmax = (0.9, 0.1)


def _inputs(make_inputs, sampled: int, adv: float):
    """One sequence: five uniform positions (token 0 sampled) and the skewed one with ``sampled``."""
    logits = torch.tensor([[[0.0, 0.0]] * 5 + [SKEWED]], dtype=torch.float64)
    logp = [[math.log(0.5)] * 5 + [math.log((0.9, 0.1)[sampled])]]
    return make_inputs(logp, [adv], logits_BTV=logits)


def test_hand_discriminator_values():
    assert (S0, S1, NEC) == pytest.approx((0.197750, -0.197750, 0.158200), abs=1e-6)
    assert NEC - S1 == pytest.approx(0.355950, abs=1e-6)


def test_item_clip_v_sign_of_d_rare_token_penalised(make_inputs):
    """A = −1, rare token sampled: D = [0]*5 + [0.35595], σ_D = 0.35595·√5/6 = 0.132654. With μ = 1 the
    threshold is 0.132654 < 0.35595, so the rare token is dropped and the five others get 6/5. (With the
    sign of D flipped, D = −0.35595 ≤ μσ_D and nothing would be dropped.)"""
    w, m = TOKEN_WEIGHTS.build("clip_v", {"mu": 1.0, "max_frac": 1.0})(_inputs(make_inputs, 1, -1.0))
    assert w.tolist()[0] == pytest.approx([1.2] * 5 + [0.0])
    assert m["weight/clip_v_frac"] == pytest.approx(1 / 6) and m["weight/clip_v_frac_neg"] == pytest.approx(1 / 6)
    assert m["weight/clip_v_d_std"] == pytest.approx((NEC - S1) * math.sqrt(5) / 6)


def test_item_clip_v_sign_of_d_common_token_kept(make_inputs):
    """A = −1, common token sampled: D = [0]*5 + [−0.03955] is below any non-negative threshold, so
    every token is kept, even at μ = 0. (With the sign flipped D = +0.0396 > 0 would be dropped.)"""
    w, m = TOKEN_WEIGHTS.build("clip_v", {"mu": 0.0, "max_frac": 1.0})(_inputs(make_inputs, 0, -1.0))
    assert w.tolist()[0] == [1.0] * 6
    assert m["weight/clip_v_frac"] == 0.0
    assert m["weight/clip_v_d_std"] == pytest.approx((S0 - NEC) * math.sqrt(5) / 6)


def test_clip_v_positive_advantage_never_dropped(make_inputs):
    """A = +1 on the rare token (D = 0.35595 > μσ_D): rewarding it raises entropy, so it stays."""
    w, m = TOKEN_WEIGHTS.build("clip_v", {"mu": 1.0, "max_frac": 1.0})(_inputs(make_inputs, 1, 1.0))
    assert w.tolist()[0] == [1.0] * 6 and m["weight/clip_v_frac"] == 0.0


def test_clip_v_renormalize_off_and_pads(make_inputs):
    """renormalize=False keeps the denominator (weights 1/0); a padded seventh position gets 0 and does
    not enter σ_D (same σ_D as without it)."""
    logits = torch.tensor([[[0.0, 0.0]] * 5 + [SKEWED, SKEWED]], dtype=torch.float64)
    logp = [[math.log(0.5)] * 5 + [math.log(0.1), math.log(0.1)]]
    inp = make_inputs(logp, [-1.0], [[1] * 6 + [0]], logits_BTV=logits)
    w, m = TOKEN_WEIGHTS.build("clip_v", {"mu": 1.0, "max_frac": 1.0, "renormalize": False})(inp)
    assert w.tolist()[0] == [1.0] * 5 + [0.0, 0.0]
    assert m["weight/clip_v_d_std"] == pytest.approx((NEC - S1) * math.sqrt(5) / 6)


def test_clip_v_component_cap_zero_advantage_and_dtype(make_inputs):
    """Two skewed positions, both with the rare token sampled: D = [0]*5 + [x, x] (x = 0.35595),
    σ_D = x·√10/7 = 0.452x, μ = 1 ⇒ both violate. max_frac = 1: both dropped, weights 7/5. The default
    max_frac (1e-4) caps the drop at one token (the first of the tie), weights 7/6. A = 0 is routed to the
    drop rule too, but frac_neg counts A < 0 only. Weights come back in the logp dtype (float64 here)."""
    logits = torch.tensor([[[0.0, 0.0]] * 5 + [SKEWED, SKEWED]], dtype=torch.float64)
    logp = [[math.log(0.5)] * 5 + [math.log(0.1), math.log(0.1)]]
    w, m = TOKEN_WEIGHTS.build("clip_v", {"mu": 1.0, "max_frac": 1.0})(make_inputs(logp, [-1.0], logits_BTV=logits))
    assert w.dtype == torch.float64 and w.tolist()[0] == pytest.approx([1.4] * 5 + [0.0, 0.0])
    w, m = TOKEN_WEIGHTS.build("clip_v", {"mu": 1.0})(make_inputs(logp, [-1.0], logits_BTV=logits))
    assert w.tolist()[0] == pytest.approx([7 / 6] * 5 + [0.0, 7 / 6])
    w, m = TOKEN_WEIGHTS.build("clip_v", {"mu": 1.0, "max_frac": 1.0})(make_inputs(logp, [0.0], logits_BTV=logits))
    assert w.tolist()[0] == pytest.approx([1.4] * 5 + [0.0, 0.0])
    assert m["weight/clip_v_frac"] == pytest.approx(2 / 7) and m["weight/clip_v_frac_neg"] == 0.0


def test_clip_v_missing_logits_message(make_inputs):
    with pytest.raises(ValueError, match=r"^clip_v needs logits_BTV \(requires=\{'logits'\}\)"):
        TOKEN_WEIGHTS.build("clip_v")(make_inputs([[0.0]], [-1.0]))


def test_clip_v_component_default_mu(make_inputs):
    """80 uniform positions and the rare-token one, A = −1: D = [0]*80 + [x], D/σ_D = 81/√80 = 9.06, so
    the default μ = 8.5 drops the rare token (μ = 9.5 would keep it); one violator is within the default
    cap. Kept tokens get 81/80."""
    logits = torch.tensor([[[0.0, 0.0]] * 80 + [SKEWED]], dtype=torch.float64)
    logp = [[math.log(0.5)] * 80 + [math.log(0.1)]]
    w, _ = TOKEN_WEIGHTS.build("clip_v")(make_inputs(logp, [-1.0], logits_BTV=logits))
    assert w.tolist()[0] == pytest.approx([81 / 80] * 80 + [0.0])
