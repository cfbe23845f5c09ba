"""The trainer on an episodic task: agent metrics, episode evaluation, exact resume, the replay hook."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from entrolab.config import load_recipe
from entrolab.trainer import Trainer


class ReplayFirstRows:
    """A zero reward term that replays the first two rows of the previous step's batch (hook test)."""

    def __init__(self):
        self.last = None

    def __call__(self, batch, task):
        return torch.zeros(batch.batch_size), {}

    def replay_rows(self, batch, *, step):
        rows, self.last = self.last, batch.select(torch.arange(2))
        if rows is None:
            return None
        rows = replace(rows, old_logp_BT=None, entropy_BT=None, ref_logp_BT=None, hidden_BTD=None)
        rows.adv_BT = torch.ones_like(rows.adv_BT) * rows.mask_BT
        return rows


@pytest.fixture(scope="module")
def base(counter_base_dir):
    return counter_base_dir


def recipe(tmp_path, base, name="a", **over):
    data = {"name": name, "seed": 1, "run_dir": str(tmp_path / name), "model": {"path": str(base)},
            "task": {"name": "counter_env:CounterTask", "n": 8},
            "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 24, "temperature": 1.5},
            "optim": {"lr": 1e-3}, "train": {"steps": 2, "save_every": 1},
            "eval": {"num_prompts": 2, "n_samples": 4, "split": "test"}}
    return load_recipe(data, [f"{k}={json.dumps(v)}" for k, v in over.items()])


def test_agent_run_logs_episode_metrics_and_evaluates_episodes(tmp_path, base):
    run = Trainer(recipe(tmp_path, base, **{"train.eval_every": 1}), progress=False).train()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if "agent/success" in x]
    assert len(train) == 2
    for key in ("agent/turns", "agent/tool_calls", "agent/malformed", "agent/return", "agent/entropy_turn0"):
        assert key in train[0], key
    assert train[0]["reward/mean"] == pytest.approx(train[0]["agent/return"])  # verifier term = episode return
    ev = json.loads((run / "eval" / "step_000001.json").read_text())
    s = ev["summary"]
    assert s["episode_success"] == pytest.approx(s["pass@1"])  # pass@1 over episodes = success rate
    assert {"episode_turns", "episode_tool_calls", "episode_malformed"} <= set(s)
    base_eval = json.loads((run / "eval" / "step_000000.json").read_text())["summary"]
    assert base_eval["greedy_acc"] == 1.0  # the SFT'd base solves the counter greedily


def test_agent_run_resumes_exactly(tmp_path, base):
    straight = Trainer(recipe(tmp_path, base, "s", **{"train.steps": 3}), progress=False).train()
    Trainer(recipe(tmp_path, base, "r", **{"train.steps": 2}), progress=False).train()
    resumed = Trainer(recipe(tmp_path, base, "r", **{"train.steps": 3}), resume=True, progress=False).train()
    a = load_file(str(straight / "checkpoints" / "step_000003" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_000003" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    w0 = load_file(str(base / "model.safetensors"))
    assert any(not torch.equal(w0[k], a[k]) for k in a)


def test_replayed_rows_are_rescored_under_the_current_policy_and_trained(tmp_path, base):
    from entrolab.models.forward import completion_stats

    over = {"rewards.terms": [{"name": "verifier"}, {"name": "test_agents_trainer:ReplayFirstRows", "weight": 0.0}]}
    tr = Trainer(recipe(tmp_path, base, "replay", **over), progress=False)
    m1 = tr.train_step()
    assert "replay/reward.1_rows" not in m1 and not any(k.startswith("replay/") for k in m1)
    m2 = tr.train_step()
    assert [v for k, v in m2.items() if k.startswith("replay/")] == [2.0]
    # the hook directly: rows appended after the batch, behaviour log-probs from the current weights
    batch = tr.rollout()
    tr.score(batch)
    tr.verify(batch)
    tr.rewards_and_advantages(batch)
    out, _ = tr.replay(batch)
    assert out.batch_size == batch.batch_size + 2
    rows = out.select(torch.arange(batch.batch_size, out.batch_size))
    with torch.no_grad():
        fresh = completion_stats(tr.model, rows.prompt_ids_BL, rows.mask_prompt_BL, rows.completion_ids_BT,
                                 rows.mask_BT, temperature=rows.temperature, attn_BT=rows.attn_BT)
    assert torch.allclose(fresh.logp_BT[rows.mask_BT], rows.old_logp_BT[rows.mask_BT], atol=1e-6)
