"""Char→token mapping, phase split at the marker, and the PEAR penalty (hand-computed)."""

import pytest
import torch

from entrolab.registry import SHAPERS
from entrolab.rewards.pear import pear_penalty
from entrolab.rewards.segments import phase_ranges, token_char_ends


class MarkerTask:
    name, answer_marker = "t", "#"


def char_batch(make_batch, texts, entropy_rows, rewards, correct):
    lengths = [len(t) + 1 for t in texts]  # + EOS
    T = max(lengths)
    ent = torch.zeros(len(texts), T)
    for i, row in enumerate(entropy_rows):
        ent[i, : len(row)] = torch.tensor(row)
    return make_batch(rewards, list(range(len(texts))), lengths=lengths, T=T, texts=texts, entropy_BT=ent,
                      correct=correct)


def test_char_ends_exact_and_proportional(make_batch):
    b = make_batch([0.0, 0.0], [0, 1], lengths=[4, 4], T=4, texts=["abc", "abcdef"])
    assert token_char_ends(b, 0) == ([1, 2, 3], True)  # 3 text tokens + EOS, 3 chars
    assert token_char_ends(b, 1) == ([2, 4, 6], False)  # 3 text tokens for 6 chars: approximate
    b.extras["char_ends"] = [[1, 2, 3], [1, 3, 6]]
    assert token_char_ends(b, 1) == ([1, 3, 6], True)


def test_phase_ranges(make_batch):
    b = char_batch(make_batch, ["ab#cd", "abcd", "#x"], [[0.0] * 6, [0.0] * 5, [0.0] * 3], [1.0] * 3, [True] * 3)
    p = phase_ranges(b, 0, "#")
    assert (p.think, p.marker, p.answer, p.found) == (range(0, 2), range(2, 3), range(3, 5), True)
    p = phase_ranges(b, 1, "#")  # no marker: all thinking, empty answer (EOS in no phase)
    assert (p.think, p.answer, p.found) == (range(0, 4), range(4, 4), False)
    assert phase_ranges(b, 2, "#").think == range(0, 0)


def test_pear_hand_values(make_batch):
    """'ab#cd'+EOS, entropies [1, 3, 9, 0.5, 0.5, 7]: H̄_think = 2 (marker and EOS excluded), H̄_ans = .5
    ⇒ P = max(0, 2 − 1·.5) = 1.5 ⇒ correct reward 1 → −.5 (floor 0 → 0). Row 1 is wrong: unchanged.
    Row 2 'abcd' (no marker), entropies [1,1,1,1]: H̄_ans = 0 ⇒ P = 1 ⇒ 1 → 0."""
    b = char_batch(make_batch, ["ab#cd", "ab#cd", "abcd"], [[1, 3, 9, 0.5, 0.5, 7]] * 2 + [[1, 1, 1, 1, 5]],
                   [1.0, 0.0, 1.0], [True, False, True])
    out, m = SHAPERS.build("pear")(b.rewards_B, b, MarkerTask())
    assert out.tolist() == pytest.approx([-0.5, 0.0, 0.0])
    assert m["pear/think_entropy"] == pytest.approx((2 + 2 + 1) / 3)
    out, _ = SHAPERS.build("pear", {"floor": 0.0})(b.rewards_B, b, MarkerTask())
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert pear_penalty(torch.tensor([1.0]), torch.tensor([3.0]), alpha=0.5).tolist() == [0.0]


def test_attach_char_ends_handles_special_tokens(make_batch, tiny_lm):
    """A completion 'ab<unk>#c' + EOS decodes (specials skipped) to 'ab#c': the <unk> token has an
    empty span, so the marker is token 3, not the proportional guess."""
    from entrolab.rewards.segments import attach_char_ends

    _, tok = tiny_lm
    ids = tok("ab", add_special_tokens=False)["input_ids"] + [tok.unk_token_id] + \
        tok("#c", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    b = make_batch([1.0], [0], lengths=[6], T=6, texts=["ab#c"])
    b.completion_ids_BT = torch.tensor([ids])
    assert not token_char_ends(b, 0)[1]
    attach_char_ends(b, tok)
    assert b.extras["char_ends"] == [[1, 2, 2, 3, 4]]
    p = phase_ranges(b, 0, "#")
    assert (p.think, p.marker, p.answer) == (range(0, 3), range(3, 4), range(4, 5))
