"""Batch-scope statistics (issue 9 item 4): the ``prepare_batch`` hook computes whole-batch statistics
once per step, so a token weight does not depend on how the update splits the batch.

Mini-batches are random subsets of the rollout batch (``randperm`` in ``policy_update``). Before the
hook, ``perplexity_position`` min-maxed the log-perplexity over the group-mates that happened to share
the micro-batch and ``clip_b`` took μ_S/σ_S over the micro-batch. These tests run the real update path
on a tiny Llama with several (mini_batch_size, micro_batch_size) settings and compare, row by row, the
weights each component returned inside the update with the weights computed on the whole batch.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.config import load_recipe
from entrolab.objectives.discriminator import ClipB, clip_b_weights
from entrolab.objectives.weights import PerplexityPosition, lppl_group_z, perplexity_position_weights
from entrolab.policy_update import UpdateSettings, update_policy
from entrolab.trainer import Trainer

pytestmark = pytest.mark.slow

ROW_KEY = "test_row_B"  # a per-row extra carrying each row's index in the full batch


class DigitReward:
    """Fraction of digits in the completion: a dense toy reward so advantages are non-zero."""

    def __call__(self, batch, task):
        vals = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in batch.texts]
        return torch.tensor(vals, dtype=torch.float32), {}


class Recorder:
    """Wraps a real token weight: records the weight rows it returned inside the update."""

    def __init__(self, inner, B, T):
        self.inner = inner
        self.seen_BT = torch.full((B, T), float("nan"), dtype=torch.float64)

    def prepare_batch(self, batch):
        return self.inner.prepare_batch(batch)

    def __call__(self, inp):
        w_BT, metrics = self.inner(inp)
        self.seen_BT[inp.extras[ROW_KEY].cpu()] = w_BT.detach().double().cpu()
        return w_BT, metrics


def recipe(tmp, name, **train):
    return load_recipe({
        "name": name, "seed": 3, "run_dir": str(tmp / name), "model": {"testbed_size": "tiny"},
        "task": {"name": "countdown", "n_train": 32, "n_validation": 4, "n_test": 4},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 12},
        "rewards": {"terms": [{"name": "test_objectives_batch_scope:DigitReward", "label": "digits"}]},
        "train": {"steps": 1, "save_every": 0, **train},
    })


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    trainer = Trainer(recipe(tmp_path_factory.mktemp("batch_scope"), "scope"), progress=False)
    batch = trainer.rollout()
    trainer.score(batch, rescore=True)  # the tests below read the behaviour statistics
    trainer.verify(batch)
    trainer.rewards_and_advantages(batch)
    assert (batch.adv_BT < 0).any() and (batch.adv_BT > 0).any()
    return trainer, batch


def whole_batch_weights(name, batch):
    """The weights computed directly on the whole batch (the reference)."""
    mask = batch.mask_BT
    if name == "perplexity_position":
        z = lppl_group_z(batch.old_logp_BT, mask, batch.group_id_B)
        return perplexity_position_weights(z, mask, ppl_alpha=0.5, position_gamma=0.3)
    return clip_b_weights(batch.old_logp_BT, batch.entropy_BT, batch.adv_BT, mask, mu=0.5)[0]


def build(name):
    return PerplexityPosition(ppl_alpha=0.5, position_gamma=0.3) if name == "perplexity_position" else ClipB(mu=0.5)


SETTINGS = [(None, None), (8, 8), (8, 2), (4, 1), (2, 1)]


@pytest.mark.parametrize("name", ["perplexity_position", "clip_b"])
def test_item4_weights_do_not_depend_on_mini_or_micro_batch_size(prepared, name):
    """Same batch, same component, five (mini, micro) splits of B = 16 rows: the per-row weights seen
    inside the update are identical, and equal the whole-batch weights. The hook is called exactly as
    the trainer calls it (``Components.prepare_batch`` on the update batch)."""
    trainer, batch = prepared
    B, T = batch.mask_BT.shape
    expected = whole_batch_weights(name, batch).double()
    mask = batch.mask_BT
    if name == "clip_b":  # the rule must bite for the test to mean something
        assert 0 < int((mask & (expected == 0)).sum()) < int(mask.sum())
    else:  # several distinct perplexity factors
        assert len(torch.unique(expected[:, 0][mask[:, 0]].round(decimals=6))) > 2
    for mini, micro in SETTINGS:
        rec = Recorder(build(name), B, T)
        comps = dataclasses.replace(copy.copy(trainer.comps), token_weights=[rec])
        run = batch.select(torch.arange(B))  # a fresh extras dict per setting
        run.extras[ROW_KEY] = torch.arange(B)
        metrics = comps.prepare_batch(run)
        model = copy.deepcopy(trainer.model)
        update_policy(model, torch.optim.SGD(model.parameters(), lr=1e-3), comps, run,
                      UpdateSettings(mini_batch_size=mini, micro_batch_size=micro),
                      generator=torch.Generator().manual_seed(0), requires=trainer.requires)
        seen = rec.seen_BT
        assert not torch.isnan(seen).any(), "every row went through the update once"
        assert torch.allclose(seen[mask], expected[mask], atol=1e-6), (mini, micro)
        if name == "clip_b":
            assert set(metrics) == {"weight/clip_b_s_mean", "weight/clip_b_s_std"}


class RecordingPPL(PerplexityPosition):
    """perplexity_position built from a recipe by the trainer, recording what it returns in the update."""

    seen: dict = {}

    def prepare_batch(self, batch):
        extras, metrics = super().prepare_batch(batch)
        RecordingPPL.seen["expected"] = perplexity_position_weights(
            extras["ppl_pos_z_B"], batch.mask_BT, ppl_alpha=self.ppl_alpha, position_gamma=self.position_gamma)
        RecordingPPL.seen["mask"] = batch.mask_BT.clone()
        RecordingPPL.seen["rows"] = torch.full(batch.mask_BT.shape, float("nan"), dtype=torch.float64)
        return {**extras, ROW_KEY: torch.arange(batch.batch_size)}, metrics

    def __call__(self, inp):
        w_BT, metrics = super().__call__(inp)
        RecordingPPL.seen["rows"][inp.extras[ROW_KEY].cpu()] = w_BT.detach().double().cpu()
        return w_BT, metrics


def test_item4_trainer_calls_the_hook_once_before_the_update(tmp_path):
    """One real ``train_step`` with mini-batches of 4 and micro-batches of 2 (B = 16): the weights the
    component returned in the update equal the whole-batch weights from its ``prepare_batch``."""
    rec = recipe(tmp_path, "hooked", mini_batch_size=4, micro_batch_size=2)
    rec = rec.model_copy(update={"objective": rec.objective.model_copy(update={"token_weights": [
        {"name": "test_objectives_batch_scope:RecordingPPL", "ppl_alpha": 0.5, "position_gamma": 0.3}]})})
    RecordingPPL.seen.clear()
    Trainer(rec, progress=False).train_step()
    seen, mask = RecordingPPL.seen["rows"], RecordingPPL.seen["mask"]
    assert not torch.isnan(seen).any()
    assert torch.allclose(seen[mask], RecordingPPL.seen["expected"].double()[mask], atol=1e-6)
