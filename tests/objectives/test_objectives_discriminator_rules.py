"""Clip_B / Clip_V keep rules at their boundaries and defaults (survivors of a mutation run, see
docs/quality.md): A = 0, exact thresholds, the default μ and max_frac, centring, dtypes, validation.

Two hand-made configurations recur. S (or D) = [0]*n + [x]: the mean is x/(n+1), the population std
|x|·√n/(n+1), so the outlier sits (x − mean)/σ = √n standard deviations from the mean and
x/σ = (n+1)/√n standard deviations from 0. And [1, −1]: mean 0, σ = 1 exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.discriminator import clip_b_keep, clip_v_keep, expected_discriminator, keep_weights
from entrolab.registry import TOKEN_WEIGHTS


def _ones(n, value=-1.0):
    return torch.full((1, n), value), torch.ones(1, n, dtype=torch.bool)


def test_clip_b_default_mu_is_2_5():
    """S = [0]*10 + [−1]: the outlier is √10 = 3.16 σ below the mean: dropped at μ = 2.5 (the default),
    kept at μ = 3.5."""
    adv, mask = _ones(11)
    s = torch.tensor([[0.0] * 10 + [-1.0]])
    assert clip_b_keep(s, adv, mask).tolist() == [[True] * 10 + [False]]
    assert clip_b_keep(s, adv, mask, mu=3.5).all()


def test_clip_b_zero_and_small_positive_advantage_kept():
    """Only A < 0 is ever dropped: the same outlier with A = 0 or A = 0.5 stays."""
    s = torch.tensor([[0.0] * 10 + [-1.0]])
    mask = torch.ones(1, 11, dtype=torch.bool)
    for a in (0.0, 0.5):
        adv = torch.full((1, 11), -1.0)
        adv[0, 10] = a
        assert clip_b_keep(s, adv, mask).all()


def test_clip_b_threshold_is_inclusive():
    """S = [1, −1], μ = 1: S − μ_S = −1 = −μσ_S exactly ⇒ kept (the rule is ≥)."""
    adv, mask = _ones(2)
    assert clip_b_keep(torch.tensor([[1.0, -1.0]]), adv, mask, mu=1.0).all()


def test_clip_v_default_mu_and_max_frac():
    """D = [0]*80 + [1]: D/σ_D = 81/√80 = 9.06 ⇒ dropped at μ = 8.5 (default), kept at 9.5.
    D = [0]*80 + [1, 2, 3] at μ = 1: three violators, but the default max_frac = 1e-4 caps the drop at
    max(1, ⌊0.0083⌋) = 1 token, the largest D."""
    adv, mask = _ones(81)
    d = torch.tensor([[0.0] * 80 + [1.0]])
    assert clip_v_keep(d, adv, mask).tolist() == [[True] * 80 + [False]]
    assert clip_v_keep(d, adv, mask, mu=9.5).all()
    adv, mask = _ones(83)
    d3 = torch.tensor([[0.0] * 80 + [1.0, 3.0, 2.0]])
    assert clip_v_keep(d3, adv, mask, mu=1.0).tolist() == [[True] * 80 + [True, False, True]]


def test_clip_v_threshold_is_strict_and_scales_with_sigma():
    """D = [1, −1], μ = 1: D = 1 is not > μσ_D = 1 ⇒ kept. D = [1]*5 + [7]: mean 2, σ_D = √5 (centred,
    not the raw second moment √21); μ = 2: threshold 2√5 = 4.47 ⇒ only the 7 goes."""
    adv, mask = _ones(2)
    assert clip_v_keep(torch.tensor([[1.0, -1.0]]), adv, mask, mu=1.0, max_frac=1.0).all()
    adv, mask = _ones(6)
    d = torch.tensor([[1.0] * 5 + [7.0]])
    assert clip_v_keep(d, adv, mask, mu=2.0, max_frac=1.0).tolist() == [[True] * 5 + [False]]


def test_clip_v_zero_advantage_is_dropped_but_not_counted_negative():
    """Clip_V routes A = 0 to the drop rule (A ≤ 0); frac_neg counts A < 0 only. A = 0.5 is kept."""
    adv, mask = _ones(6, 0.0)
    d = torch.tensor([[0.0] * 5 + [10.0]])
    assert clip_v_keep(d, adv, mask, mu=1.0, max_frac=1.0).tolist() == [[True] * 5 + [False]]
    assert clip_v_keep(d, torch.full((1, 6), 0.5), mask, mu=1.0, max_frac=1.0).all()


def test_expected_discriminator_promotes_low_precision():
    """bf16 logits are computed in float32 ("at least float32"), per position: logits (2, 0) give
    p = σ(2) = 0.880797, H = 0.365334, E_π[S] = (p − (1 − p))·p·(H + ln p) = 0.761594·0.880797·0.238406
    (for two tokens S_1 = −S_0); uniform logits give H = ln 2 and E_π[S] = 0."""
    z = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]], dtype=torch.bfloat16)  # exactly representable
    nec, h = expected_discriminator(z)
    assert nec.dtype == torch.float32 and h.dtype == torch.float32
    p = 1 / (1 + math.exp(-2.0))
    h2 = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert h.tolist()[0] == pytest.approx([math.log(2), h2], abs=1e-6)
    assert nec.tolist()[0] == pytest.approx([0.0, (2 * p - 1) * p * (h2 + math.log(p))], abs=1e-6)


def test_keep_weights_dtype_and_renormalisation():
    keep = torch.tensor([[True, False, True, True]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    w = keep_weights(keep, mask, renormalize=False)
    assert w.dtype == torch.float32 and w.tolist() == [[1.0, 0.0, 1.0, 1.0]]
    assert keep_weights(keep, mask, renormalize=True).tolist()[0] == pytest.approx([4 / 3, 0, 4 / 3, 4 / 3])
    assert keep_weights(torch.zeros(1, 4, dtype=torch.bool), mask, renormalize=True).tolist() == [[0.0] * 4]


def test_clip_b_component_defaults_metrics_and_dtype(make_inputs):
    """Ten tokens at p = 0.5, H = ln 2 (S = 0) and one at p = 0.5, H = ln 2 − 2 (S = 0.5·(−2) = −1), all
    A < 0: S = [0]*10 + [−1], dropped at the default μ = 2.5; μ_S = −1/11, σ_S = √10/11; weights 11/10 in
    the logp dtype."""
    ent = [[math.log(2)] * 10 + [math.log(2) - 2.0]]
    inp = make_inputs([[math.log(0.5)] * 11], [-1.0], entropy_BT=ent)
    w, m = TOKEN_WEIGHTS.build("clip_b")(inp)
    assert w.dtype == torch.float64
    assert w.tolist()[0] == pytest.approx([1.1] * 10 + [0.0])
    assert m["weight/clip_b_s_mean"] == pytest.approx(-1 / 11)
    assert m["weight/clip_b_s_std"] == pytest.approx(math.sqrt(10) / 11)


def test_constructor_validation():
    for name in ("clip_b", "clip_v"):
        with pytest.raises(ValueError, match="mu must be >= 0, got -0.5"):
            TOKEN_WEIGHTS.build(name, {"mu": -0.5})
        TOKEN_WEIGHTS.build(name, {"mu": 0.0}), TOKEN_WEIGHTS.build(name, {"mu": 0.5})
    with pytest.raises(ValueError, match=r"max_frac must be in \[0, 1\], got 1.5"):
        TOKEN_WEIGHTS.build("clip_v", {"max_frac": 1.5})
    TOKEN_WEIGHTS.build("clip_v", {"max_frac": 0.0}), TOKEN_WEIGHTS.build("clip_v", {"max_frac": 1.0})
