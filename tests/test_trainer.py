"""End-to-end trainer tests on CPU with a tiny random-init Llama and the Countdown task.

A random model almost never solves Countdown, so these tests add a dense user reward (plugged in by
dotted path, which also exercises the plugin mechanism): the fraction of digit characters in the
completion. That gives non-zero advantages, so weights really move and equality tests can fail.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from entrolab.config import load_recipe
from entrolab.trainer import Trainer, TrainingStopped


class DigitReward:
    """Fraction of digit characters in each completion (a dense, learnable toy reward)."""

    def __call__(self, batch, task):
        vals = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in batch.texts]
        return torch.tensor(vals, dtype=torch.float32), {}


class NaNAfterTwo:
    """A PPO-clip surrogate that turns NaN from step 2 on (to test the NaN stop)."""

    def __init__(self):
        from entrolab.objectives.surrogates import PPOClip

        self.inner = PPOClip()

    def __call__(self, inp):
        loss_BT, m = self.inner(inp)
        if inp.step >= 2:
            loss_BT = loss_BT * float("nan")
        return loss_BT, m


def recipe(tmp_path, name="r", **over):
    data = {
        "name": name, "seed": 3, "run_dir": str(tmp_path / name),
        "model": {"testbed_size": "tiny"},
        "task": {"name": "countdown", "n_train": 64, "n_validation": 8, "n_test": 8},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 12},
        "rewards": {"terms": [{"name": "verifier"}, {"name": "test_trainer:DigitReward", "label": "digits"}]},
        "optim": {"lr": 1e-3},
        "train": {"steps": 3, "save_every": 0},
        "eval": {"num_prompts": 4, "n_samples": 4},
    }
    flat = [f"{k}={json.dumps(v)}" for k, v in over.items()]
    return load_recipe(data, flat)


def weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step_{step:06d}" / "model.safetensors"))


def test_three_steps_log_every_metric(tmp_path):
    run_dir = Trainer(recipe(tmp_path), progress=False).train()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    for key in ["reward/mean", "reward/std", "reward/pass_rate", "reward/digits", "policy/entropy",
                "policy/clipfrac_low", "policy/clipfrac_high", "policy/approx_kl", "rollout/len_mean",
                "adv/zero_frac", "time/step_s", "time/tokens_per_s", "optim/lr", "loss/total"]:
        assert key in lines[0], key
    # One update per batch on the whole batch: the update is on-policy, so the ratio is exactly 1
    # (the scorer and the training forward agree) and nothing can be clipped.
    assert lines[0]["policy/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert lines[0]["policy/clipfrac_low"] == 0.0 and lines[0]["policy/clipfrac_high"] == 0.0
    assert 0.0 <= lines[0]["reward/pass_rate"] <= 1.0
    assert (run_dir / "recipe.yaml").exists()
    w0 = load_file(str(run_dir / "initial_model" / "model.safetensors"))
    w3 = weights(run_dir, 3)
    assert any(not torch.equal(w0[k], w3[k]) for k in w0)


def test_resume_gives_identical_weights(tmp_path):
    straight = Trainer(recipe(tmp_path, "straight", **{"train.steps": 6, "train.updates_per_batch": 2,
                                                       "train.mini_batch_size": 8}), progress=False).train()
    part = recipe(tmp_path, "resumed", **{"train.steps": 3, "train.updates_per_batch": 2, "train.mini_batch_size": 8})
    Trainer(part, progress=False).train()
    more = recipe(tmp_path, "resumed", **{"train.steps": 6, "train.updates_per_batch": 2, "train.mini_batch_size": 8})
    resumed = Trainer(more, resume=True, progress=False).train()
    a, b = weights(straight, 6), weights(resumed, 6)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_gradient_accumulation_matches_full_batch(tmp_path):
    """Micro-batches of 3 (uneven split of 16 rows) accumulate exactly the full mini-batch gradient.

    Compared through plain SGD with lr = 1 and no clipping, so the weight change *is* the gradient
    (Adam would amplify float noise in near-zero gradients to ±lr).
    """
    import copy

    from entrolab.policy_update import UpdateSettings, update_policy

    trainer = Trainer(recipe(tmp_path, "acc"), progress=False)
    batch = trainer.rollout()
    trainer.score(batch)
    trainer.verify(batch)
    trainer.rewards_and_advantages(batch)
    assert batch.adv_BT.abs().sum() > 0
    deltas = []
    for micro in (None, 3):
        model = copy.deepcopy(trainer.model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        update_policy(model, opt, trainer.comps, batch, UpdateSettings(micro_batch_size=micro, grad_clip=None),
                      generator=torch.Generator().manual_seed(0), requires=set())
        deltas.append({k: model.state_dict()[k] - before[k] for k in before})
    assert any(d.abs().max() > 0 for d in deltas[0].values())
    for k in deltas[0]:
        torch.testing.assert_close(deltas[0][k], deltas[1][k], rtol=1e-4, atol=1e-7)


def test_nan_stops_run_and_keeps_last_checkpoint(tmp_path):
    rec = recipe(tmp_path, "nan", **{"train.steps": 4, "train.save_every": 1,
                                     "objective.surrogate": {"name": "test_trainer:NaNAfterTwo"}})
    trainer = Trainer(rec, progress=False)
    with pytest.raises(TrainingStopped) as err:
        trainer.train()
    assert "non-finite loss" in str(err.value) and "step_000002" in str(err.value)
    ckpts = sorted(p.name for p in (rec.resolved_run_dir() / "checkpoints").iterdir())
    assert ckpts == ["step_000001", "step_000002"]  # nothing half-written, the last good one intact
    load_file(str(rec.resolved_run_dir() / "checkpoints" / "step_000002" / "model.safetensors"))


def test_rollout_dump_feeds_diagnose(tmp_path):
    """Rollouts dumped by the trainer are valid diagnostics input with per-token fields and phases."""
    from entrolab.diagnostics.diagnose import diagnose

    rec = recipe(tmp_path, "dump", **{"train.steps": 2, "train.dump_rollouts_every": 1})
    run_dir = Trainer(rec, progress=False).train()
    rows = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 16 and {r["step"] for r in rows} == {0, 1}
    assert all(len(r["logprobs"]) == len(r["entropies"]) > 0 for r in rows)
    html = diagnose([run_dir], tmp_path / "diag")
    assert html.exists()
