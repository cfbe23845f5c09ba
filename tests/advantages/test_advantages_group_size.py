"""Item 9: every estimator's declared ``min_group_size`` matches what it does with groups of one.

Contract over every registered estimator: with one sample per prompt, an estimator that declares
``min_group_size >= 2`` must give advantages that do not depend on the rewards at all (GRPO's
``r - mean`` over one sample is 0, EMPG keeps only its reward-free entropy bonus, ...), and every
estimator that does not declare it must still respond to the rewards. So the flag is neither
missing on a component that silently trains nothing nor set on one that still learns.
"""

import pytest
import torch

import entrolab.advantages  # noqa: F401
import entrolab.objectives  # noqa: F401  (registers aepo, dcpo)
from entrolab.registry import ADVANTAGES
from entrolab.types import logp_at_temperature_key


def _singletons(make_batch, rewards):
    gen = torch.Generator().manual_seed(0)  # same token statistics for both reward vectors
    T, n = 6, len(rewards)
    lengths = [6, 5, 4, 3, 6, 2][:n]
    b = make_batch(rewards, list(range(n)), lengths=lengths, T=T, texts=["x" * (k - 1) for k in lengths],
                   entropy_BT=torch.rand(n, T, generator=gen), hidden_BTD=torch.randn(n, T, 4, generator=gen),
                   answers=[str(r) for r in rewards])
    for tau in (0.8, 1.2):
        b.extras[logp_at_temperature_key(tau)] = -torch.rand(n, T, generator=gen)
    return b


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_item9_min_group_size_declared_iff_groups_of_one_ignore_rewards(name, make_batch):
    a = ADVANTAGES.build(name)(_singletons(make_batch, [1.0, 0.0, 1.0, 0.0, 0.5, 1.0]))[0]
    b = ADVANTAGES.build(name)(_singletons(make_batch, [0.0, 1.0, 0.0, 1.0, 0.0, 0.2]))[0]
    reward_blind = torch.equal(a, b)
    declared = getattr(ADVANTAGES.build(name), "min_group_size", 1) >= 2
    assert declared == reward_blind, (name, declared, a, b)
