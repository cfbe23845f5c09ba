"""VERL effective-rank bonus through the estimator: which weights the ERA gate picks, and its sign.

The original tests only reach the gate at dev_ERA = 0 (β = ½), where swapping w_explore/w_exploit or
flipping the gain's sign changes nothing (issue 9, "Branches no test checks"). Here the EMA baselines
are set (``load_state_dict``) so that the relative deviations are known numbers,
dev_ERA = 0.5, dev_ER = 0.5, dev_ERV = −0.25, whatever the hidden states' ER/ERV/ERA are; the test
reads those from the estimator's own metrics on a first pass, so it holds for any definition of ER
that gives a non-degenerate value on random states.

With gain 2: β = σ(2·0.5) = σ(1) = 0.731059; tanh(0.5) = 0.462117, tanh(−0.25) = −0.244919.
"""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.advantages.effective_rank import EffectiveRankBonus

DEV = {"era": 0.5, "er": 0.5, "erv": -0.25}
BETA = 1 / (1 + math.exp(-1.0))
SCALE = 0.1  # aux stays below the cap |A|/κ = 0.5/2, so the bonus is aux itself when aux > 0


def _batch(make_batch):
    """Two responses in one group (rewards 1, 0 ⇒ Dr.GRPO A = ±0.5) with the same hidden states, so
    the batch means of ER/ERV/ERA are each response's own values."""
    h = torch.randn(1, 24, 8, generator=torch.Generator().manual_seed(3)).expand(2, 24, 8).clone()
    return make_batch([1.0, 0.0], [0, 0], lengths=[24, 24], T=24, hidden_BTD=h)


def _ema_for(values: dict[str, float]) -> dict[str, float]:
    """μ with (v − μ)/|μ| = DEV[m]: μ = v/(1 + d) for v > 0, v/(1 − d) for v < 0."""
    assert all(v != 0 for v in values.values())
    return {m: v / (1 + DEV[m]) if v > 0 else v / (1 - DEV[m]) for m, v in values.items()}


def _run(make_batch, **kw):
    b = _batch(make_batch)
    _, m0 = EffectiveRankBonus(stride=4, scale_by_std=False)(b)  # first batch: no bonus, just the values
    values = {m: m0[f"rank/{m}"] for m in ("er", "erv", "era")}
    est = EffectiveRankBonus(stride=4, scale_by_std=False, scale=SCALE, **kw)
    est.load_state_dict({"ema": _ema_for(values)})
    adv_BT, m = est(b)
    return adv_BT - torch.tensor([[0.5], [-0.5]]), m, values, est


def test_item_effective_rank_gate_weights_explore_when_era_rises(make_batch):
    """Default weights (ERA, ERV, ER): w_explore = (0, 0, 1), w_exploit = (0, 1, 0). ERA above its
    baseline ⇒ β = 0.731 leans to exploring (ER):
    aux = 0.1·(0.731059·tanh(0.5) + 0.268941·tanh(−0.25)) = 0.1·(0.337837 − 0.065869) = 0.027197,
    added to every token of both responses. Swapped weights or σ(−gain·dev) give
    0.1·(0.268941·0.462117 − 0.731059·0.244919) < 0, i.e. no bonus."""
    bonus_BT, m, _, _ = _run(make_batch)
    aux = SCALE * (BETA * math.tanh(0.5) + (1 - BETA) * math.tanh(-0.25))
    assert aux == pytest.approx(0.027197, abs=1e-6)
    assert bonus_BT.flatten().tolist() == pytest.approx([aux] * 48, abs=1e-6)
    assert m["rank/aux_mean"] == pytest.approx(aux, abs=1e-6) and m["rank/bonus_frac"] == 1.0


def test_item_effective_rank_gate_custom_weights(make_batch):
    """w_explore = ERV, w_exploit = ER: aux = 0.1·(0.731059·tanh(−0.25) + 0.268941·tanh(0.5))
    = −0.005476 < 0 ⇒ the bonus is 0 (only positive bonuses); with the gain flipped it would be positive."""
    bonus_BT, m, _, _ = _run(make_batch, w_explore=(0.0, 1.0, 0.0), w_exploit=(0.0, 0.0, 1.0))
    aux = SCALE * (BETA * math.tanh(-0.25) + (1 - BETA) * math.tanh(0.5))
    assert aux == pytest.approx(-0.005476, abs=1e-6)
    assert bonus_BT.abs().max().item() < 1e-7
    assert m["rank/aux_mean"] == pytest.approx(aux, abs=1e-6) and m["rank/bonus_frac"] == 0.0


def test_item_effective_rank_negative_gain(make_batch):
    """gain = −2 reverses the gate (β = σ(−1) = 0.268941) with the default weights: aux < 0, no bonus."""
    bonus_BT, m, _, _ = _run(make_batch, gain=-2.0)
    aux = SCALE * ((1 - BETA) * math.tanh(0.5) + BETA * math.tanh(-0.25))
    assert m["rank/aux_mean"] == pytest.approx(aux, abs=1e-6) and bonus_BT.abs().max().item() < 1e-7


def test_effective_rank_ema_updated_after_use(make_batch):
    """After the batch, μ ← 0.7·μ + 0.3·v (ema_alpha 0.3) for each indicator."""
    _, _, values, est = _run(make_batch)
    ema0 = _ema_for(values)
    assert est.state_dict()["ema"] == pytest.approx({m: 0.7 * ema0[m] + 0.3 * values[m] for m in values})
