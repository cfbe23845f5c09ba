"""Every objective component through the real policy update of a tiny Llama (one rollout, reused).

The rollout, scoring and advantages run once; each component then drives two optimizer steps
(two update passes over the batch, so in the second one ratios move off 1 and the off-policy
branches of KL-Cov, Clip-Cov and the clip metrics are exercised). Marked slow (about a second
per component on a loaded 2-core machine). Checks: finite loss, weights change,
metrics are floats, stateful components survive ``on_step_end`` and a state round trip.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch

import entrolab.objectives  # noqa: F401  (registers before CASES is built)
from entrolab.config import load_recipe
from entrolab.policy_update import UpdateSettings, update_policy
from entrolab.registry import REGULARIZERS, SURROGATES, TOKEN_WEIGHTS
from entrolab.trainer import Trainer


class DigitReward:
    """Fraction of digits in the completion: a dense toy reward so advantages are non-zero."""

    def __call__(self, batch, task):
        vals = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in batch.texts]
        return torch.tensor(vals, dtype=torch.float32), {}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("objectives_update")
    rec = load_recipe({
        "name": "obj", "seed": 5, "run_dir": str(tmp / "obj"), "model": {"testbed_size": "tiny"},
        "task": {"name": "countdown", "n_train": 32, "n_validation": 4, "n_test": 4},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 10},
        "rewards": {"terms": [{"name": "test_objectives_policy_update:DigitReward", "label": "digits"}]},
        "train": {"steps": 1, "save_every": 0},
    })
    trainer = Trainer(rec, progress=False)
    batch = trainer.rollout()
    trainer.score(batch, rescore=True)  # the tests below read the behaviour statistics
    trainer.verify(batch)
    trainer.rewards_and_advantages(batch)
    g = torch.Generator().manual_seed(0)
    batch.ref_logp_BT = batch.old_logp_BT + 0.2 * torch.randn(batch.old_logp_BT.shape, generator=g)
    assert batch.adv_BT.abs().sum() > 0
    return trainer, batch


pytestmark = pytest.mark.slow

CASES = (
    [("surrogate", n) for n in SURROGATES.names()]
    + [("token_weight", n) for n in TOKEN_WEIGHTS.names()]
    + [("regularizer", n) for n in REGULARIZERS.names()]
)


@pytest.mark.parametrize("kind,name", CASES)
def test_component_trains(prepared, kind, name):
    trainer, batch = prepared
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = {"surrogate": SURROGATES, "token_weight": TOKEN_WEIGHTS, "regularizer": REGULARIZERS}[kind].build(name)
    comps = copy.copy(trainer.comps)
    if kind == "surrogate":
        comps = dataclasses.replace(comps, surrogate=comp)
    elif kind == "token_weight":
        comps = dataclasses.replace(comps, token_weights=[comp])
    else:
        comps = dataclasses.replace(comps, regularizers=[comp])
    model = copy.deepcopy(trainer.model)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    settings = UpdateSettings(updates_per_batch=2)
    metrics = update_policy(model, opt, comps, batch, settings, generator=torch.Generator().manual_seed(1),
                            requires=comps.requires() | {"ref_logp"})
    comps.on_step_end(metrics)
    assert metrics["optim/steps"] == 2.0
    assert all(type(v) is float and v == v for v in metrics.values()), metrics
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    if hasattr(comp, "state_dict"):
        state = comp.state_dict()
        comp.load_state_dict(state)
        assert comp.state_dict() == state
