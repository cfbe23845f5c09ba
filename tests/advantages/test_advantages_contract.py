"""Contract over every registered advantage estimator: shapes, finiteness on edge cases, metrics, permutation."""

import pytest
import torch

import entrolab.advantages  # noqa: F401
import entrolab.objectives  # noqa: F401  (registers aepo, dcpo)
from entrolab.registry import ADVANTAGES
from entrolab.types import logp_at_temperature_key

NAMES = ADVANTAGES.names()
# Estimators whose value for a sequence depends only on its group's multiset of (reward, metric) —
# permuting rows within a group must permute the output. (riskpo pairs responses by position into
# papers and empg normalises over steps of the batch: both are order-dependent by design.)
PERMUTATION_INVARIANT = {"grpo", "dr_grpo", "rloo", "raw", "gaussian", "canon", "copo", "reinforce_pp",
                         "reinforce_pp_baseline", "effective_rank"}


def edge_batches(make_batch):
    gen = torch.Generator().manual_seed(0)
    T = 6

    def mk(rewards, gid, lengths, answers=None):
        ent = torch.rand(len(rewards), T, generator=gen)
        hid = torch.randn(len(rewards), T, 4, generator=gen)
        texts = ["x" * max(0, n - 1) for n in lengths]  # char-level: length − EOS
        b = make_batch(rewards, gid, lengths=lengths, T=T, texts=texts, entropy_BT=ent, hidden_BTD=hid,
                       answers=answers or [str(r) for r in rewards])
        for tau in (0.8, 1.2):  # what dcpo's scoring_temperatures hook makes the trainer compute
            b.extras[logp_at_temperature_key(tau)] = -torch.rand(len(rewards), T, generator=gen)
        return b

    return {
        "all_equal": mk([1.0] * 4, [0, 0, 1, 1], [6, 5, 4, 3]),
        "group_of_one": mk([1.0, 0.0, 1.0], [0, 1, 1], [3, 6, 2]),
        "empty_responses": mk([1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1], [0, 4, 0, 6]),
        "mixed": mk([1.0, 0.0, 0.5, 0.2, 0.9, 0.0], [0, 0, 0, 1, 1, 1], [6, 2, 4, 5, 1, 3]),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["all_equal", "group_of_one", "empty_responses", "mixed"])
def test_shapes_finite_metrics(name, case, make_batch):
    b = edge_batches(make_batch)[case]
    est = ADVANTAGES.build(name)
    for _ in range(2):  # twice: stateful estimators take a different path once they have state
        adv, metrics = est(b)
        assert adv.shape in {(b.batch_size,), tuple(b.mask_BT.shape)}, name
        assert torch.isfinite(adv).all(), (name, case)
        assert not adv.requires_grad
        assert {"adv/mean", "adv/std", "adv/zero_frac"} <= set(metrics)
        assert all(isinstance(v, float) for v in metrics.values())
        if adv.dim() == 2:
            assert (adv[~b.mask_BT] == 0).all()


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "gaussian", "copo", "riskpo"])
def test_all_equal_groups_give_zero(name, make_batch):
    adv, _ = ADVANTAGES.build(name)(edge_batches(make_batch)["all_equal"])
    assert adv.abs().max() == 0


@pytest.mark.parametrize("name", sorted(PERMUTATION_INVARIANT))
def test_permutation_within_group(name, make_batch):
    b = edge_batches(make_batch)["mixed"]
    perm = torch.tensor([2, 0, 1, 5, 3, 4])
    adv, _ = ADVANTAGES.build(name)(b)
    adv_p, _ = ADVANTAGES.build(name)(b.select(perm))
    assert torch.allclose(adv[perm], adv_p, atol=1e-5), name


@pytest.mark.parametrize("entry", list(ADVANTAGES), ids=lambda e: e.name)
def test_registered_with_paper(entry):
    assert entry.paper and (entry.paper == "baseline" or entry.arxiv)
    assert entry.summary
