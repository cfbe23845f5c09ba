"""STEER branches the original tests leave open: the advantage inside Ω, and the guards on Ω.

The other STEER tests use A = 1 on every token, so Ω without its A factor passes them. Here the
advantage differs per sequence (issue 9, "Branches no test checks").
"""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.steer import steer_score, steer_weights
from entrolab.registry import TOKEN_WEIGHTS

# One token per sequence, all at p = 0.5, H = 1, on-policy: Ω = A · (1 − p) · (log p + H).
OMEGA_A1 = 0.5 * (1 - math.log(2))  # 0.15343 for A = 1


def test_item_steer_omega_scales_with_advantage(make_inputs):
    """A = [1, −2, 0]: |Ω| = [0.1534, 0.3069, 0], so Ω_min = 0, Ω_max = 0.3069 and the linear map gives
    w = 1.2 − |Ω|·0.4/0.3069 = [1.0, 0.8, 1.2]. Without A every |Ω| is 0.1534 and all weights are the
    midpoint 1.0."""
    inp = make_inputs([[math.log(0.5)]] * 3, [1.0, -2.0, 0.0])
    score = steer_score(inp.logp_BT, inp.old_logp_BT, inp.adv_BT, inp.entropy_BT)
    assert score[:, 0].tolist() == pytest.approx([OMEGA_A1, 2 * OMEGA_A1, 0.0])
    w, m = TOKEN_WEIGHTS.build("steer")(inp)
    assert w[:, 0].tolist() == pytest.approx([1.0, 0.8, 1.2])
    assert m["weight/steer_min"] == pytest.approx(0.8) and m["weight/steer_max"] == pytest.approx(1.2)
    # exp map: κ = −ln 0.8 / 0.3069 ⇒ w = [0.8^(1/2), 0.8, 1]
    w_exp, _ = TOKEN_WEIGHTS.build("steer", {"mode": "exp"})(inp)
    assert w_exp[:, 0].tolist() == pytest.approx([math.sqrt(0.8), 0.8, 1.0])


def test_item_steer_per_token_advantage(make_inputs):
    """A per token (a [B, T] advantage, as token-level estimators give) enters Ω token by token:
    A = [[0.5, 1.0, 3.0]] ⇒ |Ω| = [0.0767, 0.1534, 0.4603] ⇒ linear w = [1.2, 1.2 − 0.4/5, 0.8]."""
    inp = make_inputs([[math.log(0.5)] * 3], torch.tensor([[0.5, 1.0, 3.0]], dtype=torch.float64))
    w, _ = TOKEN_WEIGHTS.build("steer")(inp)
    assert w.tolist()[0] == pytest.approx([1.2, 1.2 - 0.4 / 5, 0.8])


def test_steer_score_guards():
    """Documented guards of Ω: π_old is floored at 1e-8 (a token whose old probability underflowed gets
    a large finite score, A·p(1−p)(log p + H)/1e-8, not 0), and a non-finite Ω (NaN entropy) scores 0."""
    logp = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64)
    old = torch.tensor([[-1000.0, math.log(0.5)]], dtype=torch.float64)  # exp(−1000) = 0 in float64
    ent = torch.tensor([[1.0, float("nan")]], dtype=torch.float64)
    s = steer_score(logp, old, torch.ones(1, 2, dtype=torch.float64), ent)
    assert s.tolist()[0] == pytest.approx([0.25 * (1 - math.log(2)) / 1e-8, 0.0])
    # p and π_old both underflow (log-prob −1000): p is floored at 1e-8 too, so
    # Ω = (1e-8/1e-8)·(1 − 1e-8)·(ln 1e-8 + H) with H = 1, not the NaN → 0 of log 0.
    s = steer_score(torch.full((1, 1), -1000.0, dtype=torch.float64), torch.full((1, 1), -1000.0, dtype=torch.float64),
                    torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    assert s.item() == pytest.approx(abs(math.log(1e-8) + 1.0))


def test_steer_score_infinite_entropy_scores_zero():
    """Ω = ±inf (an infinite entropy at a valid position) is non-finite too: score 0, not the largest float."""
    logp = torch.full((1, 2), math.log(0.5), dtype=torch.float64)
    ent = torch.tensor([[float("inf"), -float("inf")]], dtype=torch.float64)
    assert steer_score(logp, logp, torch.ones(1, 2, dtype=torch.float64), ent).tolist() == [[0.0, 0.0]]


def test_steer_weights_defaults_and_empty_mask():
    """The pure map's defaults are the paper's (linear, 0.8, 1.2); an all-padding micro-batch gives zero
    weights, and the component logs zeros for it."""
    score = torch.tensor([[0.0, 1.0, 2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert steer_weights(score, mask).tolist()[0] == pytest.approx([1.2, 1.0, 0.8])
    assert steer_weights(score, torch.zeros(1, 3, dtype=torch.bool)).tolist() == [[0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="mode must be 'linear' or 'exp'"):
        steer_weights(score, mask, mode="cosine")


def test_steer_component_all_padding(make_inputs):
    w, m = TOKEN_WEIGHTS.build("steer")(make_inputs([[math.log(0.5)] * 2], [1.0], [[0, 0]]))
    assert w.tolist() == [[0.0, 0.0]]
    assert (m["weight/steer_mean"], m["weight/steer_min"], m["weight/steer_max"]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("bad", ["logp", "old", "entropy"])
def test_steer_rejects_mismatched_shapes(make_inputs, bad):
    """Each of logp_BT, old_logp_BT, entropy_BT with a shape the others do not share is named in the error."""
    inp = make_inputs([[math.log(0.5)] * 3], [1.0])
    short = torch.zeros(1, 2, dtype=torch.float64)
    if bad == "logp":
        inp.old_logp_BT, inp.entropy_BT, inp.mask_BT = short, short, torch.ones(1, 2, dtype=torch.bool)
        inp.adv_BT = inp.adv_BT[:, :2]
        name = "old_logp_BT"
    elif bad == "old":
        inp.old_logp_BT, name = short, "old_logp_BT"
    else:
        inp.entropy_BT, name = short, "entropy_BT"
    with pytest.raises(ValueError, match=f"{name} has shape"):
        TOKEN_WEIGHTS.build("steer")(inp)


def test_steer_constructor_validation():
    """Messages name the rule; λ_min = λ_max and λ_min = 1 in exp mode are allowed, λ_min = 0 is not,
    and λ_min > 1 is refused only in exp mode (whose weights are capped at 1)."""
    with pytest.raises(ValueError, match="mode: expected one of 'linear', 'exp', got 'cosine'"):
        TOKEN_WEIGHTS.build("steer", {"mode": "cosine"})  # the registry's annotation check
    with pytest.raises(ValueError, match="mode must be 'linear' or 'exp', got 'cosine'"):
        TOKEN_WEIGHTS.get("steer").factory(mode="cosine")  # the component's own check
    with pytest.raises(ValueError, match="need 0 < lambda_min <= lambda_max, got 0.0, 1.2"):
        TOKEN_WEIGHTS.build("steer", {"lambda_min": 0.0})
    with pytest.raises(ValueError, match="exp mode needs lambda_min <= 1, got 1.5"):
        TOKEN_WEIGHTS.build("steer", {"mode": "exp", "lambda_min": 1.5, "lambda_max": 2.0})
    TOKEN_WEIGHTS.build("steer", {"lambda_min": 1.0, "lambda_max": 1.0})
    TOKEN_WEIGHTS.build("steer", {"mode": "exp", "lambda_min": 1.0})
    TOKEN_WEIGHTS.build("steer", {"lambda_min": 1.5, "lambda_max": 2.0})
