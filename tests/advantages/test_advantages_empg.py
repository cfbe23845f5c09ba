"""EMPG: step segmentation of a scratchpad, hand-computed modulation, token broadcast."""

import math

import pytest
import torch

from entrolab.advantages.empg import empg_step_advantages
from entrolab.registry import ADVANTAGES
from entrolab.rewards.segments import step_ranges


def countdown_batch(make_batch, texts, rewards, group_id, entropy_rows):
    """Char-level: one token per character plus EOS."""
    lengths = [len(t) + 1 for t in texts]
    T = max(lengths)
    ent = torch.zeros(len(texts), T)
    for i, row in enumerate(entropy_rows):
        ent[i, : len(row)] = torch.tensor(row)
    return make_batch(rewards, group_id, lengths=lengths, T=T, texts=texts, entropy_BT=ent)


def test_step_segmentation_countdown(make_batch):
    """'3+5=8,7*8=56#7*(3+5)' (20 chars + EOS): steps '3+5=8,' | '7*8=56' | '#7*(3+5)'+EOS."""
    b = countdown_batch(make_batch, ["3+5=8,7*8=56#7*(3+5)"], [1.0], [0], [[0.0] * 21])
    steps, exact = step_ranges(b, 0, marker="#")
    assert exact and steps == [range(0, 6), range(6, 12), range(12, 21)]
    steps, _ = step_ranges(b, 0, marker=None)  # no marker: only delimiters cut
    assert steps == [range(0, 6), range(6, 21)]


def test_modulation_hand_values():
    """A = [1, −1]; step entropies [[0, 1], [.5]] ⇒ H̃ = [[0, 1], [.5]] (min 0, max 1).
    exp(−H̃) = [1, e⁻¹], [e^−.5]; g = that / mean(1, e⁻¹, e^−.5). f: traj 0 step 0 gets e⁻¹ (next step's
    H̃ = 1), last steps 0. A_mod = g·A + .05·f, then minus the mean over the 3 steps."""
    out = empg_step_advantages(torch.tensor([1.0, -1.0]), [torch.tensor([0.0, 1.0]), torch.tensor([0.5])])
    e1, e5 = math.exp(-1), math.exp(-0.5)
    mean = (1 + e1 + e5) / 3
    raw = [1 / mean + 0.05 * e1, e1 / mean, -e5 / mean]
    mu = sum(raw) / 3
    got = out[0].tolist() + out[1].tolist()
    assert got == pytest.approx([v - mu for v in raw], abs=1e-6)
    assert sum(got) == pytest.approx(0.0, abs=1e-9)


def test_estimator_broadcasts_per_step(make_batch):
    texts = ["1+2=3,3*4=12#4*(1+2)", "9-9=0#9-9"]
    ents = [[0.2] * 6 + [1.0] * 6 + [0.1] * 9, [0.5] * 10]
    b = countdown_batch(make_batch, texts, [1.0, 0.0], [0, 0], ents)
    adv_BT, m = ADVANTAGES.build("empg", {"marker": "#"})(b)
    assert adv_BT.shape == b.mask_BT.shape and (adv_BT[~b.mask_BT] == 0).all()
    row0 = adv_BT[0, :21]
    assert torch.unique(row0[:6]).numel() == 1 and torch.unique(row0[6:12]).numel() == 1
    assert m["empg/steps_mean"] == pytest.approx((3 + 2) / 2)
    b.extras["answer_marker"] = "#"  # the trainer may pass the task's marker this way
    adv2, _ = ADVANTAGES.build("empg")(b)
    assert torch.equal(adv2, adv_BT)
