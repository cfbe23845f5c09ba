"""ONI in the trainer on an episodic task: the judge reads the environment's info, the reward model's state
(with annotations still pending at the checkpoint) resumes exactly."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from entrolab.config import load_recipe
from entrolab.trainer import Trainer

ONI = {"name": "oni", "variant": "classification", "lag": 1, "coef": 0.5, "dim": 64, "threshold": None,
       "count_exponent": 0.0}


def recipe(tmp_path, base, name, steps):
    data = {"name": name, "seed": 1, "run_dir": str(tmp_path / name), "model": {"path": str(base)},
            "task": {"name": "counter_env:CounterTask", "n": 8},
            "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 24, "temperature": 1.5},
            "rewards": {"terms": [{"name": "verifier"}, ONI]},
            "optim": {"lr": 1e-3}, "train": {"steps": steps, "save_every": 1},
            "eval": {"num_prompts": 2, "n_samples": 2, "split": "test"}}
    return load_recipe(data)


def metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "reward/oni" in x]


def test_oni_trains_from_episode_infos_and_resumes_exactly(tmp_path, counter_base_dir):
    straight = Trainer(recipe(tmp_path, counter_base_dir, "s", 3), progress=False).train()
    Trainer(recipe(tmp_path, counter_base_dir, "r", 2), progress=False).train()
    resumed = Trainer(recipe(tmp_path, counter_base_dir, "r", 3), resume=True, progress=False).train()
    m = metrics(straight)
    assert [x["oni/annotated"] > 0 for x in m] == [False, True, True]  # step 0's labels arrive at step 1
    assert m[0]["reward/oni"] == 0.5 * 0.5 * m[0]["agent/turns"]  # untrained model: p = 1/2 on every turn
    same = [k for k in m[-1] if k.startswith(("oni/", "reward/"))]
    assert len(same) > 8 and {k: metrics(resumed)[-1][k] for k in same} == {k: m[-1][k] for k in same}
    a = load_file(str(straight / "checkpoints" / "step_000003" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_000003" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_oni_study_arms_build_the_variant_they_name():
    """benchmarks/agent_studies/oni.py: each ONI arm's recipe builds an `oni` term of its variant, GRPO has none."""
    import importlib.util
    from pathlib import Path

    from entrolab.components import import_builtins
    from entrolab.registry import REWARDS

    import_builtins()
    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("oni_study", repo / "benchmarks" / "agent_studies" / "oni.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built = {}
    for arm in mod.STUDY["arms"]:
        rec = load_recipe(str(repo / arm["recipe"]), arm["overrides"])
        terms = [REWARDS.build(b["name"], {k: v for k, v in b.items() if k not in ("name", "weight", "label")})
                 for b in rec.rewards.terms]
        built[arm["label"]] = [getattr(t, "variant", type(t).__name__) for t in terms]
    assert built == {"GRPO": ["VerifierReward"], "ONI-hashing": ["VerifierReward", "hashing"],
                     "ONI-classification": ["VerifierReward", "classification"], "ONI-ranking": ["VerifierReward", "ranking"]}
