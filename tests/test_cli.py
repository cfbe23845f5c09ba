"""CLI: list, validate (good and bad recipes), a tiny train run, eval of a run directory."""

import json

import pytest

from entrolab.cli import main


def test_list_prints_every_stage_with_papers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for stage in ["tasks", "rewards", "advantages", "surrogates", "aggregations", "regularizers"]:
        assert stage in out
    assert "ppo_clip" in out and "grpo" in out and "countdown" in out
    assert "1707.06347" in out  # PPO's arXiv id is shown next to ppo_clip


def test_list_unknown_stage(capsys):
    assert main(["list", "surogates"]) == 2
    assert "unknown stage 'surogates'" in capsys.readouterr().err


def test_validate_ok_and_typo(tmp_path, capsys):
    assert main(["validate", "recipes/grpo.yaml"]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.1\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'optim.lrr'" in err and "Did you mean 'lr'?" in err


def test_train_then_eval_run_dir(tmp_path, capsys):
    run = tmp_path / "cli"
    args = ["train", "recipes/grpo.yaml", f"run_dir={run}", "model.testbed_size=tiny", "train.steps=1",
            "train.save_every=0", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=8",
            "task.n_train=16", "task.n_validation=4", "task.n_test=4", "--quiet"]
    assert main(args) == 0
    assert (run / "checkpoints" / "step_000001" / "model.safetensors").exists()
    assert main(["eval", str(run), "eval.num_prompts=2", "eval.n_samples=4", "--label", "final"]) == 0
    result = json.loads((run / "eval" / "final.json").read_text())
    assert result["n_samples"] == 4 and len(result["prompts"]) == 2
    assert set(result["summary"]) >= {"pass@1", "pass@4", "mean@n"}


def test_resume_without_checkpoint_is_clear(tmp_path, capsys):
    code = main(["train", "recipes/grpo.yaml", f"run_dir={tmp_path / 'none'}", "--resume", "--quiet"])
    assert code == 1
    assert "no checkpoint" in capsys.readouterr().err
