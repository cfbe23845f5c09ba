"""The replay buffer's storage: compaction, eviction of every row, and checkpointable state."""

from __future__ import annotations

import io

import pytest
import torch

from entrolab.advantages.replay import ReplayBuffer, batch_from_state, batch_state, compact


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_compact_renumbers_groups_in_first_use_order(make_batch):
    b = make_batch([1.0, 0.0, 1.0], [2, 0, 2])
    out = compact(b)
    assert out.group_id_B.tolist() == [0, 1, 0] and out.group_id_B.dtype == torch.long
    assert [p.id for p in out.prompts] == ["p2", "p0"]


def test_batch_state_round_trip_keeps_every_field(make_batch):
    """Verdicts None stay None; reward terms, tensors and prompts survive torch.load(weights_only=True)."""
    b = make_batch([1.0, 0.0], [0, 0])
    b.reward_terms = {"verifier": torch.tensor([1.0, 0.0]), "tool_call": torch.tensor([0.1, 0.0])}
    b.extras["tool_calls_B"] = torch.tensor([1, 0])
    b.extras["note"] = "not a row extra"
    for verdicts in (b.verdicts, None):
        b.verdicts = verdicts
        out = batch_from_state(roundtrip(batch_state(b)))
        assert out.verdicts == verdicts and out.prompts == b.prompts and out.texts == b.texts
        assert out.reward_terms.keys() == b.reward_terms.keys()
        assert all(torch.equal(out.reward_terms[k], v) for k, v in b.reward_terms.items())
        assert out.extras.keys() == {"tool_calls_B"} and torch.equal(out.completion_ids_BT, b.completion_ids_BT)


def test_empty_buffer_state_and_step_dtypes(make_batch):
    """A fresh, an emptied and a fully evicted buffer all hold no rows and a long step_B of length 0;
    their state loads back as such; tolerate_steps 0 keeps only rows of the current step."""
    buf = ReplayBuffer(tolerate_steps=0)
    assert buf.step_B.dtype == torch.long and buf.step_B.numel() == 0
    other = ReplayBuffer()
    other.load_state_dict(roundtrip(buf.state_dict()))
    assert other.rows is None and other.step_B.dtype == torch.long and len(other) == 0
    buf.add(make_batch([1.0, 1.0], [0, 1]), step=4)
    assert buf.step_B.tolist() == [4, 4] and buf.step_B.dtype == torch.long
    other.load_state_dict(roundtrip(buf.state_dict()))
    assert other.step_B.tolist() == [4, 4] and other.rows.batch_size == 2
    assert buf.evict(step=5) == 2 and buf.rows is None and buf.step_B.dtype == torch.long and len(buf) == 0
    buf.add(make_batch([1.0], [0]), step=6)
    rows, steps = buf.take()
    assert steps.tolist() == [6] and buf.step_B.dtype == torch.long and buf.step_B.numel() == 0
    with pytest.raises(ValueError, match="tolerate_steps"):
        ReplayBuffer(tolerate_steps=-1)
