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


def test_list_keeps_bracketed_math_in_summaries(capsys):
    """Summaries such as f-DPO's −log σ(β[ψ(h_w) − ψ(h_l)]) are text, not rich markup to strip."""
    assert main(["list", "preference_losses"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[ψ(h_w)" in out


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


TINY_TRAIN = ["recipes/grpo.yaml", "model.testbed_size=tiny", "train.steps=1", "train.save_every=0",
              "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=8", "task.n_train=16",
              "task.n_validation=4", "task.n_test=4", "eval.num_prompts=2", "eval.n_samples=4"]


def test_item11_train_eval_prints_summary_table_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENTROLAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, f"run_dir={run}", "--eval", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    final = json.loads((run / "eval" / "final.json").read_text())["summary"]
    row = next(ln.split() for ln in out if ln.startswith("pass@1 "))
    assert row[2] == f"{final['pass@1']:.3f}"
    assert any(ln.startswith("pass@4 ") for ln in out) and any(ln.startswith("answer entropy") for ln in out)
    assert f"report: {run / 'report' / 'index.html'}" in out
    # Without --eval: the training summary and how to get the table.
    assert main(["train", *TINY_TRAIN, f"run_dir={tmp_path / 'plain'}", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "training: reward/mean" in out and "policy/entropy" in out and "--eval" in out


def test_item12_train_eval_writes_cached_base_final_and_report(tmp_path, monkeypatch, capsys):
    """Two runs from the same starting weights with the same eval settings share one cached base
    evaluation; another eval setting makes a new one."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENTROLAB_CACHE", str(cache))
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["train", *TINY_TRAIN, f"run_dir={a}", "--eval", "--quiet"]) == 0
    base_a = json.loads((a / "eval" / "base.json").read_text())
    assert base_a["label"] == "base" and base_a["model"] == str(a / "initial_model")
    assert (a / "eval" / "final.json").exists() and (a / "report" / "index.html").exists()
    assert "base" in (a / "report" / "index.html").read_text()
    assert len(list((cache / "evals").glob("*.json"))) == 1
    capsys.readouterr()

    assert main(["train", *TINY_TRAIN, f"run_dir={b}", "--eval", "--quiet"]) == 0
    assert "base evaluation: reusing" in capsys.readouterr().out
    base_b = json.loads((b / "eval" / "base.json").read_text())
    assert base_b["prompts"] == base_a["prompts"] and base_b["model"] == str(b / "initial_model")
    assert len(list((cache / "evals").glob("*.json"))) == 1

    assert main(["train", *TINY_TRAIN, f"run_dir={c}", "eval.n_samples=2", "--eval", "--quiet"]) == 0
    assert "reusing" not in capsys.readouterr().out
    assert json.loads((c / "eval" / "base.json").read_text())["n_samples"] == 2
    assert len(list((cache / "evals").glob("*.json"))) == 2


MYTASK = '''
from entrolab.types import Prompt, Verdict


class Echo:
    """Repeat the prompt word."""
    name, answer_marker = "echo", None

    def __init__(self, *, n: int = 10):
        self.words = [f"w{i}" for i in range(n)]

    def prompts(self, split):
        return [Prompt(id=f"{split}-{w}", text=f"say {w}:") for w in self.words]

    def verify(self, prompt, completion):
        ok = completion.strip() == prompt.text[4:-1]
        return Verdict(reward=float(ok), correct=ok, answer=completion.strip()[:32], reason="ok" if ok else "wrong_value")

    def solutions(self, prompt):
        return [prompt.text[4:-1]]

    def charset(self):
        return "abcdefghijklmnopqrstuvwxyz0123456789 :"
'''


def test_item13_dotted_path_resolves_from_current_directory(tmp_path):
    """From a folder outside the repo, through a launcher like the `entrolab` console script (which,
    unlike `python -m`, does not put the current directory on sys.path)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import entrolab

    work, bin_dir = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    bin_dir.mkdir()
    (work / "mytask.py").write_text(MYTASK)
    (work / "r.yaml").write_text("task: {name: 'mytask:Echo', n: 5}\nmodel: {testbed_size: tiny}\n")
    launcher = bin_dir / "entrolab_launcher.py"
    launcher.write_text("import sys\nfrom entrolab.cli import main\nsys.exit(main())\n")
    env = dict(os.environ, PYTHONPATH=str(Path(entrolab.__file__).parents[1]))
    proc = subprocess.run([sys.executable, str(launcher), "validate", "r.yaml"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "r.yaml: OK" in proc.stdout
    missing = subprocess.run([sys.executable, str(launcher), "validate", "r.yaml", "task.name=nosuch:Echo"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert "cannot import module 'nosuch'" in missing.stderr and str(work) in missing.stderr


def test_item14_sft_accepts_overrides_without_a_yaml(tmp_path, capsys):
    out = tmp_path / "base"
    args = [f"out_dir={out}", "task.name=countdown", "task.n_train=8", "task.n_sft=8", "task.max_numbers=3", "steps=1",
            "batch_size=4", "device=cpu"]
    assert main(["sft", *args]) == 0
    assert (out / "model.safetensors").exists() and f"base model: {out}" in capsys.readouterr().out
    # A YAML whose name contains '=' is still read as the config file.
    cfg = tmp_path / "a=b.yaml"
    cfg.write_text(f"out_dir: {tmp_path / 'from_yaml'}\nsteps: 1\nbatch_size: 4\ntask: {{name: countdown, n_train: 8, n_sft: 8, "
                   "max_numbers: 3}\n")
    assert main(["sft", str(cfg), "device=cpu"]) == 0
    assert (tmp_path / "from_yaml" / "model.safetensors").exists()
