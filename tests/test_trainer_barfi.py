"""BARFI's φ through the trainer: logged every step, checkpointed, and restored exactly on resume
(kept apart from tests/rewards/test_rewards_barfi.py, whose math tests mutation testing runs often)."""

import json

import pytest
import torch


class Digits:
    """Fraction of digit characters (dense, so a random tiny model gets non-zero covariances)."""

    def __call__(self, batch, task):
        return torch.tensor([sum(c.isdigit() for c in t) / max(1, len(t)) for t in batch.texts]), {}


class Spaces:
    def __call__(self, batch, task):
        return torch.tensor([t.count(" ") / max(1, len(t)) for t in batch.texts]), {}


def _recipe(tmp_path, name, steps):
    from entrolab.config import load_recipe

    return load_recipe({
        "name": name, "seed": 5, "run_dir": str(tmp_path / name), "model": {"testbed_size": "tiny"},
        "task": {"name": "countdown", "n_train": 32, "n_validation": 8, "n_test": 8},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 10},
        "rewards": {"terms": [{"name": "barfi", "lr": 5.0,
                               "primary": {"name": "test_trainer_barfi:Digits", "label": "digits"},
                               "auxiliary": [{"name": "test_trainer_barfi:Spaces", "label": "spaces"},
                                             {"name": "verifier"}]}]},
        "optim": {"lr": 1e-3}, "train": {"steps": steps, "save_every": 2}, "eval": {"num_prompts": 2, "n_samples": 2},
    })


def test_barfi_phi_is_checkpointed_and_resume_is_exact(tmp_path):
    from entrolab.trainer import Trainer

    straight = Trainer(_recipe(tmp_path, "straight", 4), progress=False).train()
    Trainer(_recipe(tmp_path, "resumed", 2), progress=False).train()
    resumed = Trainer(_recipe(tmp_path, "resumed", 4), resume=True, progress=False).train()
    rows = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (straight, resumed)]
    phis = [[(r["barfi/phi/digits"], r["barfi/phi/spaces"]) for r in rs] for rs in rows]
    assert phis[0] == phis[1]
    assert phis[0][-1] != phis[0][0] and phis[0][0] != pytest.approx((1 / 3, 1 / 3))  # φ really learns
