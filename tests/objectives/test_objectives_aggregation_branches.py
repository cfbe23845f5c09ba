"""Aggregation edge cases a mutation run found unchecked (docs/quality.md): one sequence / one token
in the mini-batch, one-token sequences, the constant_norm default, and the messages of _check."""

from __future__ import annotations

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.objectives.aggregation import constant_norm, seq_mean_token_mean, seq_mean_token_sum, token_mean
from entrolab.registry import AGGREGATIONS


def test_single_sequence_and_single_token():
    """One sequence of one valid token with loss 3 (a padded slot after it): every rule divides by
    num_tokens = num_seqs = 1 (and |o| = 1), so token_mean = seq_mean_token_mean = seq_mean_token_sum = 3
    and constant_norm = 3/c."""
    loss, mask = torch.tensor([[3.0, 7.0]]), torch.tensor([[True, False]])
    kw = {"num_tokens": 1, "num_seqs": 1}
    assert token_mean(loss, mask, **kw).item() == 3.0
    assert seq_mean_token_mean(loss, mask, **kw).item() == 3.0
    assert seq_mean_token_sum(loss, mask, **kw).item() == 3.0
    assert constant_norm(loss, mask, constant=4.0, **kw).item() == 0.75


def test_seq_mean_token_mean_one_token_sequence():
    """Rows of 1 and 2 valid tokens: (4/1 + (1 + 3)/2)/2 = 3."""
    loss = torch.tensor([[4.0, 9.0], [1.0, 3.0]])
    mask = torch.tensor([[True, False], [True, True]])
    assert seq_mean_token_mean(loss, mask, num_tokens=3, num_seqs=2).item() == 3.0


def test_constant_norm_default_and_zero_sequences():
    """Default constant 48; num_seqs = 0 (an all-padding micro-batch of zero rows) is allowed."""
    agg = AGGREGATIONS.build("constant_norm")
    loss, mask = torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool)
    assert agg(loss, mask, num_tokens=2, num_seqs=1).item() == pytest.approx(2 / 48)
    empty = torch.zeros(0, 2)
    assert token_mean(empty, empty.bool(), num_tokens=0, num_seqs=0).item() == 0.0
    with pytest.raises(ValueError, match="constant must be > 0, got 0"):
        AGGREGATIONS.build("constant_norm", {"constant": 0.0})


def test_check_messages():
    loss, mask = torch.ones(3, 2), torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="^num_tokens and num_seqs must be >= 0, got 6, -1$"):
        token_mean(loss, mask, num_tokens=6, num_seqs=-1)
    with pytest.raises(ValueError, match="^num_tokens and num_seqs must be >= 0, got -1, 3$"):
        token_mean(loss, mask, num_tokens=-1, num_seqs=3)
    with pytest.raises(ValueError, match="^num_tokens=5 is smaller than the 6 valid tokens of this micro-batch; "
                                         "it must count the whole mini-batch$"):
        token_mean(loss, mask, num_tokens=5, num_seqs=3)
    with pytest.raises(ValueError, match="^num_seqs=2 is smaller than the 3 sequences of this micro-batch; "
                                         "it must count the whole mini-batch$"):
        token_mean(loss, mask, num_tokens=6, num_seqs=2)
