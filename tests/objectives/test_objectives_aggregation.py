"""Aggregation modes: hand values, micro-batch accumulation equivalence, padding invariance."""

from __future__ import annotations

import pytest
import torch

import entrolab.objectives  # noqa: F401  (registers)
from entrolab.registry import AGGREGATIONS, ConfigError

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    "name,params,expected",
    [
        # 15 summed over 5 valid tokens.
        ("token_mean", {}, 15 / 5),
        # row means 6/3 = 2 and 9/2 = 4.5, averaged over 2 sequences.
        ("seq_mean_token_mean", {}, (2 + 4.5) / 2),
        # row sums 6 and 9, averaged over 2 sequences.
        ("seq_mean_token_sum", {}, 15 / 2),
        # Dr.GRPO: 15 / (2 sequences * constant 4).
        ("constant_norm", {"constant": 4.0}, 15 / 8),
    ],
)
def test_hand_values(name, params, expected):
    agg = AGGREGATIONS.build(name, params)
    out = agg(LOSS, MASK, num_tokens=5, num_seqs=2)
    assert out.dim() == 0
    assert out.item() == pytest.approx(expected)


def _setup(seed=0):
    """A [6, 5] loss depending on a parameter, with ragged lengths including two empty rows."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([5, 0, 3, 1, 0, 4])
    mask = torch.arange(5)[None, :] < lens[:, None]
    return w, mask


@pytest.mark.parametrize("name", AGGREGATIONS.names())
@pytest.mark.parametrize("micro", [1, 2, 4])
def test_micro_batches_sum_to_mini_batch(name, micro):
    """Summing per-micro-batch results (with mini-batch counts) equals one pass: value and gradient."""
    agg = AGGREGATIONS.build(name)
    w, mask = _setup()
    n_tok, n_seq = int(mask.sum()), mask.shape[0]
    loss_full = agg(w.sin(), mask, num_tokens=n_tok, num_seqs=n_seq)
    (g_full,) = torch.autograd.grad(loss_full, w)
    total = 0.0
    for s in range(0, 6, micro):
        rows = slice(s, s + micro)
        # each micro-batch may be trimmed to its own longest row (as a trainer would do)
        t = max(1, int(mask[rows].sum(-1).max()))
        total = total + agg(w[rows, :t].sin(), mask[rows, :t], num_tokens=n_tok, num_seqs=n_seq)
    (g_acc,) = torch.autograd.grad(total, w)
    assert float(total.detach()) == pytest.approx(float(loss_full.detach()), rel=1e-12)
    assert torch.allclose(g_acc, g_full)
    # masked positions never receive gradient
    assert torch.all(g_full[~mask] == 0)


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_padding_invariant_and_nan_safe(name):
    """Extra padded columns holding NaN change neither the value nor the gradient."""
    agg = AGGREGATIONS.build(name)
    w, mask = _setup(1)
    base = agg(w, mask, num_tokens=int(mask.sum()), num_seqs=6)
    padded = torch.cat([w, torch.full((6, 3), float("nan"), dtype=w.dtype)], dim=1)
    pmask = torch.cat([mask, torch.zeros(6, 3, dtype=torch.bool)], dim=1)
    out = agg(padded, pmask, num_tokens=int(mask.sum()), num_seqs=6)
    assert torch.isfinite(out) and out.item() == pytest.approx(base.item())
    (g,) = torch.autograd.grad(out, w)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_all_empty_is_zero_not_nan(name):
    agg = AGGREGATIONS.build(name)
    loss = torch.ones(2, 3, requires_grad=True)
    out = agg(loss, torch.zeros(2, 3, dtype=torch.bool), num_tokens=0, num_seqs=2)
    assert out.item() == 0.0
    out.backward()
    assert torch.all(loss.grad == 0)


def test_counts_must_cover_the_micro_batch():
    agg = AGGREGATIONS.build("token_mean")
    with pytest.raises(ValueError, match="num_tokens"):
        agg(LOSS, MASK, num_tokens=3, num_seqs=2)
    with pytest.raises(ValueError, match="num_seqs"):
        agg(LOSS, MASK, num_tokens=5, num_seqs=1)
    with pytest.raises(ValueError, match="shape"):
        agg(LOSS, MASK[:, :2], num_tokens=5, num_seqs=2)


def test_constant_norm_validates_constant():
    with pytest.raises(ConfigError, match="constant"):
        AGGREGATIONS.build("constant_norm", {"constant": 0})
    with pytest.raises(ConfigError, match="constnt"):
        AGGREGATIONS.build("constant_norm", {"constnt": 3})
