"""The registered G²RPO estimator passes its options and the prompts' task labels on (mutation-run
survivors, docs/quality.md): checked against the pure function it wraps, on a batch where each option
changes the result."""

from __future__ import annotations

import pytest
import torch

import entrolab.advantages  # noqa: F401
from entrolab.advantages.gaussian import g2rpo_advantage
from entrolab.registry import ADVANTAGES


def _batch(make_batch, key="task"):
    """Four groups of three: tasks a, a, b and a constant group (task b). Rewards differ across groups so
    stage 2 (ranking within each task over the batch) and the task split both matter."""
    rewards = [1.0, 0.0, 0.0, 3.0, 2.0, 0.5, 1.0, 1.0, 0.0, 2.0, 2.0, 2.0]
    gid = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    b = make_batch(rewards, gid)
    for p, t in zip(b.prompts, ["a", "a", "b", "b"]):
        p.meta[key] = t
    return b


TASKS = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("params", [{}, {"across_batch": False}, {"exclude_constant_groups": False}])
def test_gaussian_component_matches_function(make_batch, params):
    b = _batch(make_batch)
    adv, _ = ADVANTAGES.build("gaussian", params)(b)
    ref = g2rpo_advantage(b.rewards_B, b.group_id_B, task_id_B=TASKS, **params)
    got = adv[:, 0] if adv.dim() == 2 else adv
    assert torch.allclose(got.float(), ref.float(), atol=1e-6)


def test_gaussian_options_matter_on_this_batch(make_batch):
    """The reference values differ between the option settings and between one task and two, so the
    test above would notice an option or the task labels being dropped."""
    b = _batch(make_batch)
    r, g = b.rewards_B, b.group_id_B
    base = g2rpo_advantage(r, g, task_id_B=TASKS)
    for other in (g2rpo_advantage(r, g, task_id_B=TASKS, across_batch=False),
                  g2rpo_advantage(r, g, task_id_B=TASKS, exclude_constant_groups=False),
                  g2rpo_advantage(r, g)):
        assert not torch.allclose(base.float(), other.float(), atol=1e-6)


def test_gaussian_task_key(make_batch):
    """task_key names the meta field; prompts without it fall in one task ("")."""
    b = _batch(make_batch, key="domain")
    adv, _ = ADVANTAGES.build("gaussian", {"task_key": "domain"})(b)
    got = adv[:, 0] if adv.dim() == 2 else adv
    assert torch.allclose(got.float(), g2rpo_advantage(b.rewards_B, b.group_id_B, task_id_B=TASKS).float(), atol=1e-6)
    adv, _ = ADVANTAGES.build("gaussian")(b)  # default key "task" is absent: one task
    got = adv[:, 0] if adv.dim() == 2 else adv
    assert torch.allclose(got.float(), g2rpo_advantage(b.rewards_B, b.group_id_B).float(), atol=1e-6)
    b.rewards_B = None
    with pytest.raises(ValueError, match="^advantage 'gaussian': batch.rewards_B is None"):
        ADVANTAGES.build("gaussian")(b)
