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

from entrolab.advantages.effective_rank import EffectiveRankBonus, aux_signal
from entrolab.diagnostics.rank import effective_rank_dynamics

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


# A response whose rank dynamics are known by hand (D = 2, 17 tokens, default stride 8 ⇒ checkpoints at
# t = 8 and 16, i.e. the prefixes of 9 and 17 rows). Rows 0–8 are (−4..4, 0): collinear ⇒ ER_1 = 1.
# Rows 9–16 are (0, ±√7.5), four of each sign: the 17 rows have mean 0 and orthogonal columns with
# Σx² = 60 = Σy² ⇒ two equal singular values ⇒ ER_2 = ER = 2. ERV = mean(d) = ER_2 − ER_1 = 1; one d
# only ⇒ ERA undefined (NaN: the estimator leaves it out of its metrics and keeps its ERA baseline).
# All are invariant to scaling the states.
HAND = torch.tensor([[float(x), 0.0] for x in range(-4, 5)] + [[0.0, s * math.sqrt(7.5)] for s in (1, -1) * 4])
HAND_VALUES = {"er": 2.0, "erv": 1.0}


def _hand_batch(make_batch, scale=1.0, T=17):
    h = torch.zeros(2, T, 2)
    h[:, :17] = HAND * scale
    return make_batch([1.0, 0.0], [0, 0], lengths=[17, 17], T=T, hidden_BTD=h)


def test_effective_rank_hand_dynamics_default_stride(make_batch):
    for scale in (1.0, 0.01):  # small states: singular values below 1 still count
        _, m = EffectiveRankBonus()(_hand_batch(make_batch, scale))
        assert {k: m[f"rank/{k}"] for k in HAND_VALUES} == pytest.approx(HAND_VALUES, abs=1e-5)


def test_effective_rank_max_len_keeps_last_rows(make_batch):
    """max_len = 17 on a 20-token response whose first 3 rows are far away: ERV (and the undefined ERA)
    are those of the last 17 rows, the hand values; ER is over the whole response (rows far away
    ⇒ not 2)."""
    h = torch.cat([torch.full((3, 2), 50.0), HAND])[None].expand(2, 20, 2).clone()
    b = make_batch([1.0, 0.0], [0, 0], lengths=[20, 20], T=20, hidden_BTD=h)
    _, m = EffectiveRankBonus(max_len=17)(b)
    assert m["rank/erv"] == pytest.approx(1.0, abs=1e-5) and "rank/era" not in m
    assert abs(m["rank/er"] - 2.0) > 0.1


def test_effective_rank_bonus_defaults_saturation_and_cap(make_batch):
    """Defaults (scale 1, κ = 2, GRPO with std: A = ±0.5/0.70711 = ±0.70711, cap 0.35355).
    Baselines = this batch's values ⇒ every dev is 0 ⇒ aux = 0: no bonus, bonus_frac 0.
    Baselines ER 0 (as upstream's zero-initialised EMA), ERV 1, ERA 0: dev_ER = 2/1e-8 clipped to +5,
    dev_ERV = dev_ERA = 0 ⇒ β = ½, aux = ½·tanh(5) = 0.49995 > cap ⇒ bonus = 0.35355."""
    b = _hand_batch(make_batch, T=20)
    a = 0.5 / math.sqrt(0.5)
    est = EffectiveRankBonus()
    _, m0 = est(b)  # first batch: sets the baselines to this batch's values exactly
    adv, m = est(b)
    assert m["rank/aux_mean"] == 0.0 and m["rank/bonus_frac"] == 0.0
    est.load_state_dict({"ema": {"er": 0.0, "erv": 1.0, "era": 0.0}})
    adv, m = est(b)
    assert m["rank/aux_mean"] == pytest.approx(0.5 * math.tanh(5.0), abs=1e-6)
    assert adv[:, :17].flatten().tolist() == pytest.approx([a + a / 2] * 17 + [-a + a / 2] * 17, abs=1e-5)
    assert adv[:, 17:].tolist() == [[0.0] * 3] * 2
    assert m["adv/zero_frac"] == 0.0  # over valid tokens only
    est = EffectiveRankBonus(kappa=4.0, eps=1.0)  # A = ±0.5/(0.70711 + 1) = ±0.29289, cap A/4
    est.load_state_dict({"ema": {"er": 0.0, "erv": 1.0, "era": 0.0}})
    adv, _ = est(b)
    a = 0.5 / (math.sqrt(0.5) + 1.0)
    assert adv[:, 0].tolist() == pytest.approx([a + a / 4, -a + a / 4], abs=1e-5)


def test_effective_rank_dev_clip_at_5(make_batch):
    """ER baseline 2/11 ⇒ dev_ER = 10, clipped to 5; β = ½ ⇒ aux = 0.1·½·tanh(5) (scale 0.1, uncapped)."""
    est = EffectiveRankBonus(scale=0.1)
    est.load_state_dict({"ema": {"er": 2.0 / 11, "erv": 1.0, "era": 0.0}})
    _, m = est(_hand_batch(make_batch))
    assert m["rank/aux_mean"] == pytest.approx(0.05 * math.tanh(5.0), abs=1e-7)


def test_effective_rank_state_and_errors(make_batch):
    est = EffectiveRankBonus()
    assert est.state_dict() == {"ema": None}
    est.load_state_dict({"ema": None})
    adv, m = est(_hand_batch(make_batch))
    ema = est.state_dict()["ema"]
    assert m["rank/aux_mean"] == 0.0 and math.isnan(ema.pop("era"))
    assert ema == pytest.approx(HAND_VALUES, abs=1e-5)
    b = _hand_batch(make_batch)
    b.hidden_BTD = None
    with pytest.raises(ValueError, match=r"^effective_rank needs batch.hidden_BTD \(requires=\{'hidden'\}\)"):
        est(b)
    b = _hand_batch(make_batch)
    b.rewards_B = None
    with pytest.raises(ValueError, match="advantage 'effective_rank': batch.rewards_B is None"):
        est(b)
    EffectiveRankBonus(stride=1, kappa=0.5, ema_alpha=1.0)
    for kw in ({"stride": 0}, {"kappa": 0.0}, {"ema_alpha": 0.0}, {"ema_alpha": 1.5}):
        with pytest.raises(ValueError, match=r"^need stride >= 1, kappa > 0 and 0 < ema_alpha <= 1$"):
            EffectiveRankBonus(**kw)
    with pytest.raises(ValueError, match=r"^w_explore and w_exploit weigh \(ERA, ERV, ER\): give 3 numbers each"):
        EffectiveRankBonus(w_explore=(0.0, 1.0))


def test_aux_signal_defaults_and_lower_clip():
    """aux_signal's own defaults (gain 2, weights ER/ERV): dev_ERA = 0.5 ⇒ β = σ(1), as in the estimator
    test above. A deviation of −10 is clipped to −5: ER = −9 against a baseline of 1, β = ½ ⇒
    aux = ½·tanh(−5)."""
    ema = {"era": 2.0, "er": 2.0, "erv": 4.0}
    vals = {"era": 3.0, "er": 3.0, "erv": 3.0}  # devs 0.5, 0.5, −0.25
    assert aux_signal(vals, ema) == pytest.approx(BETA * math.tanh(0.5) + (1 - BETA) * math.tanh(-0.25))
    base = {"era": 1.0, "er": 1.0, "erv": 1.0}
    assert aux_signal({**base, "er": -9.0}, base) == pytest.approx(0.5 * math.tanh(-5.0))


def test_rank_dynamics_estimator_stride_and_max_len_512(make_batch):
    """The estimator's stride 8 gives the hand values (ER 2, ERV 1) on the 17-row response, whose two
    checkpoints leave ERA undefined (NaN: one velocity increment); default max_len 512: a 520-row
    response has the same indicators as its last 512 rows."""
    dyn = effective_rank_dynamics(HAND, stride=8)
    assert (dyn["er"], dyn["erv"]) == pytest.approx((2.0, 1.0), abs=1e-5) and math.isnan(dyn["era"])
    h = torch.randn(520, 3, generator=torch.Generator().manual_seed(5))
    h[:8] *= 100.0  # the first rows are far away: including them would change ERV and ERA
    full, tail = effective_rank_dynamics(h, stride=8), effective_rank_dynamics(h[-512:], stride=8)
    assert (full["erv"], full["era"]) == (tail["erv"], tail["era"])
    b_full = make_batch([1.0, 0.0], [0, 0], lengths=[520, 520], T=520, hidden_BTD=h[None].expand(2, 520, 3).clone())
    b_tail = make_batch([1.0, 0.0], [0, 0], lengths=[512, 512], T=512,
                        hidden_BTD=h[-512:][None].expand(2, 512, 3).clone())
    _, m_full = EffectiveRankBonus()(b_full)
    _, m_tail = EffectiveRankBonus()(b_tail)
    assert [m_full[f"rank/{k}"] for k in ("erv", "era")] == [m_tail[f"rank/{k}"] for k in ("erv", "era")]
