"""The registered COPO estimator passes its options and the answer entropies on (mutation-run survivors,
docs/quality.md): checked against copo_advantage on a batch where each option changes the result."""

from __future__ import annotations

import pytest
import torch

import entrolab.advantages  # noqa: F401
from entrolab.advantages.copo import answer_entropy_bits, copo_advantage
from entrolab.registry import ADVANTAGES


def _batch(make_batch):
    """Three prompts × 4: answers {1,1,2,3} (H = 1.5 bits), {5,5,5,5} (H = 0), {7,8,None,None} (H = 1.5)."""
    rewards = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    answers = ["1", "1", "2", "3", "5", "5", "5", "5", "7", "8", None, None]
    return make_batch(rewards, [0] * 4 + [1] * 4 + [2] * 4, answers=answers)


def test_answer_entropy_bits_hand():
    assert answer_entropy_bits(["1", "1", "2", "3"]) == pytest.approx(1.5)
    assert answer_entropy_bits(["5"]) == 0.0 and answer_entropy_bits([]) == 0.0


@pytest.mark.parametrize("params", [{}, {"k": 2.0}, {"b": 0.5}, {"entropy_coef": True}, {"norm_by_std": False}])
def test_copo_component_matches_function(make_batch, params):
    b = _batch(make_batch)
    adv, m = ADVANTAGES.build("copo", params)(b)
    H = torch.tensor([1.5] * 4 + [0.0] * 4 + [1.5] * 4, dtype=torch.float64)
    correct = b.rewards_B > 0
    ref, w = copo_advantage(b.rewards_B, b.group_id_B, H, correct, **params)
    assert torch.allclose(adv, ref, atol=1e-6)
    assert m["copo/answer_entropy"] == pytest.approx(1.0) and m["copo/gate_mean"] == pytest.approx(float(w.mean()))


def test_copo_options_matter_on_this_batch(make_batch):
    b = _batch(make_batch)
    H = torch.tensor([1.5] * 4 + [0.0] * 4 + [1.5] * 4, dtype=torch.float64)
    args = (b.rewards_B, b.group_id_B, H, b.rewards_B > 0)
    base, _ = copo_advantage(*args)
    for params in ({"k": 2.0}, {"b": 0.5}, {"entropy_coef": True}, {"norm_by_std": False}):
        other, _ = copo_advantage(*args, **params)
        assert not torch.allclose(base, other, atol=1e-6), params


def test_copo_errors(make_batch):
    b = _batch(make_batch)
    b.verdicts = None
    with pytest.raises(ValueError, match=r"^copo needs batch.verdicts \(answers and correctness\)$"):
        ADVANTAGES.build("copo")(b)
    with pytest.raises(ValueError, match="gate must be one of"):
        ADVANTAGES.build("copo", {"gate": "nope"})
    b = _batch(make_batch)
    b.rewards_B = None
    with pytest.raises(ValueError, match="^advantage 'copo': batch.rewards_B is None"):
        ADVANTAGES.build("copo")(b)
