"""SIREN: top-p entropy, per-sequence peak mask, self-anchored squared deviation."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.siren import peak_entropy_mask, top_p_entropy
from entrolab.registry import REGULARIZERS


def _logits(probs):
    return torch.tensor(probs, dtype=torch.float64).log()


def test_top_p_entropy_hand():
    """pi = [0.5, 0.3, 0.2]: cum = [0.5, 0.8, 1.0].
    p = 0.85: nucleus {0.5, 0.3} -> [0.625, 0.375], H = -(0.625 ln 0.625 + 0.375 ln 0.375) = 0.6616.
    p = 0.8: the token reaching 0.8 is excluded -> nucleus {0.5} -> H = 0.
    p = 0.45: top-1 already >= p -> empty nucleus -> H = 0."""
    z = _logits([[[0.5, 0.3, 0.2]]])
    h = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))
    assert top_p_entropy(z, top_p=0.85).item() == pytest.approx(h, abs=1e-6)
    assert top_p_entropy(z, top_p=0.8).item() == pytest.approx(0.0, abs=1e-6)
    assert top_p_entropy(z, top_p=0.45).item() == pytest.approx(0.0, abs=1e-6)
    # top_k truncation: only the 2 most likely are considered
    assert top_p_entropy(z, top_p=1.0, top_k=2).item() == pytest.approx(h, abs=1e-6)


def test_peak_mask_per_sequence():
    """Row [1,2,3,4,5]: 0.8-quantile = 1 + 0.8*4 = 4.2 -> only 5 kept. Row [2, 1, (pad)]: quantile
    1.8 -> only 2 kept. An empty row keeps nothing."""
    h = torch.tensor([[1.0, 2, 3, 4, 5], [2.0, 1, 9, 9, 9], [1.0, 1, 1, 1, 1]])
    mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [0] * 5], dtype=torch.bool)
    assert peak_entropy_mask(h, mask, mask_ratio=0.8).tolist() == [
        [False] * 4 + [True], [True] + [False] * 4, [False] * 5]


def _batch(seed=0, B=3, T=6, V=12):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64)).requires_grad_(True)
    logp = torch.log_softmax(logits, -1)[..., 0]
    return logits, logp


def test_anchor_then_squared_deviation(make_inputs):
    """First call measures H0 (penalty 0); a later call with a fixed anchor H0 - 0.5 gives
    beta*(0.5)^2 on every valid token, and a gradient step on the logits lowers the deviation."""
    logits, logp = _batch()
    inp = make_inputs(logp.detach(), [1.0, 1.0, 1.0], [[1] * 6, [1] * 3 + [0] * 3, [1] * 6], logits_BTV=logits)
    reg = REGULARIZERS.build("siren", {"beta": 0.01, "top_p": 0.9})
    loss, m = reg(inp)
    assert m["entropy/siren_sq_dev"] == 0.0 and reg.state_dict()["anchor"] == m["entropy/siren_topp"]
    h0 = m["entropy/siren_topp"]
    reg.load_state_dict({"anchor": h0 - 0.5})
    loss, m = reg(inp)
    assert m["entropy/siren_sq_dev"] == pytest.approx(0.25)
    assert loss[0, 0].item() == pytest.approx(0.01 * 0.25) and loss[1, 4].item() == 0.0
    loss[0, 0].backward()
    with torch.no_grad():
        stepped = (logits - 10.0 * logits.grad).requires_grad_(True)
    _, m2 = reg(make_inputs(logp.detach(), [1.0] * 3, inp.mask_BT, logits_BTV=stepped))
    assert m2["entropy/siren_sq_dev"] < 0.25


def test_needs_logits_with_gradient(make_inputs):
    logits, logp = _batch()
    reg = REGULARIZERS.build("siren")
    with pytest.raises(ValueError, match="logits"):
        reg(make_inputs(logp.detach(), [1.0] * 3))
    with pytest.raises(ValueError, match="gradient"):
        reg(make_inputs(logp.detach(), [1.0] * 3, logits_BTV=logits.detach()))
