"""80/20 top-entropy mask and the perplexity/position weights."""

from __future__ import annotations

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.registry import TOKEN_WEIGHTS


def test_top_entropy_hand(make_inputs):
    """H valid = [0.1, 0.5, 0.9, 0.3, 0.7], rho = 0.4: k = ceil(2.0) = 2 -> tokens with H 0.9 and 0.7.
    Renormalised weight 5/2 on them (denominator = selected tokens under token_mean)."""
    inp = make_inputs([[0.0] * 3, [0.0] * 3], [1.0, 1.0], [[1, 1, 1], [1, 1, 0]],
                      entropy_BT=[[0.1, 0.5, 0.9], [0.3, 0.7, 5.0]])
    w, m = TOKEN_WEIGHTS.build("top_entropy_quantile", {"rho": 0.4})(inp)
    assert w.tolist() == [[0.0, 0.0, 2.5], [0.0, 2.5, 0.0]]
    assert m == {"weight/entropy_selected_frac": 0.4, "weight/entropy_threshold": 0.7}
    w2, _ = TOKEN_WEIGHTS.build("top_entropy_quantile", {"rho": 0.4, "renormalize": False})(inp)
    assert w2.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    w3, _ = TOKEN_WEIGHTS.build("top_entropy_quantile", {"rho": 1.0})(inp)
    assert w3.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_top_entropy_renormalised_token_mean_is_mean_over_selected(make_inputs):
    g = torch.Generator().manual_seed(0)
    inp = make_inputs(torch.zeros(4, 10), [1.0] * 4, entropy_BT=torch.rand(4, 10, generator=g))
    w, _ = TOKEN_WEIGHTS.build("top_entropy_quantile", {"rho": 0.2})(inp)
    loss = torch.randn(4, 10, generator=g, dtype=torch.float64)
    sel = w > 0
    assert int(sel.sum()) == 8
    assert (loss * w).sum().item() / 40 == pytest.approx(loss[sel].mean().item())


def test_perplexity_position_hand(make_inputs):
    """Group of two: seq A logp [-1,-1] (lppl 1), seq B [-3,-3,-3] (lppl 3): z = [-1, +1],
    ppl factor (1 - 0.1 z) = [1.1, 0.9]. Position u = (t + 1/2)/|o|: A [0.25, 0.75] -> [0.95, 1.05],
    B [1/6, 1/2, 5/6] -> [0.9333, 1.0, 1.0667]."""
    inp = make_inputs([[0.0] * 3, [0.0] * 3], [1.0, -1.0], [[1, 1, 0], [1, 1, 1]],
                      old_logp_BT=[[-1.0, -1.0, 0.0], [-3.0, -3.0, -3.0]], group_id_B=[0, 0])
    w, m = TOKEN_WEIGHTS.build("perplexity_position", {"ppl_alpha": 0.1, "position_gamma": 0.1})(inp)
    assert w.tolist()[0] == pytest.approx([1.1 * 0.95, 1.1 * 1.05, 0.0])
    assert w.tolist()[1] == pytest.approx([0.9 * (1 - 0.1 * 2 / 3), 0.9, 0.9 * (1 + 0.1 * 2 / 3)])
    # the position factor averages exactly 1 per sequence
    assert sum(w.tolist()[1]) / 3 == pytest.approx(0.9)


def test_perplexity_flat_group_is_neutral(make_inputs):
    inp = make_inputs([[0.0, 0.0]] * 2, [1.0, -1.0], old_logp_BT=[[-1.0, -1.0]] * 2, group_id_B=[0, 0])
    w, _ = TOKEN_WEIGHTS.build("perplexity_position", {"position_gamma": 0.0})(inp)
    assert w.tolist() == [[1.0, 1.0], [1.0, 1.0]]
