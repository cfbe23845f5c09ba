"""Run-directory ownership (item 1 of issue 8), torn logs on resume (item 5), recipe changes on resume (item 7)."""

import json

import pytest
import torch
import yaml

from entrolab.cli import main
from entrolab.jsonl_log import LogFormatError, read_log
from entrolab.rundir import RunDirError, recipe_diff, run_step
from entrolab.trainer import Trainer
from test_trainer import recipe, weights


def metrics_steps(run_dir):
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_item1_refuses_used_run_dir(tmp_path, capsys):
    """A second fresh `train` into a finished run's directory used to exit 0 and mix two runs."""
    rec = recipe(tmp_path, "used", **{"train.steps": 1})
    run_dir = Trainer(rec, progress=False).train()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    path = tmp_path / "used.yaml"
    path.write_text(rec.to_yaml())
    capsys.readouterr()
    assert main(["train", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert (f"run directory {run_dir} already holds a run (step 1); use --resume, --overwrite, or another "
            f"run_dir") in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # nothing touched
    with pytest.raises(SystemExit):  # the two ways to reuse a directory exclude each other
        main(["train", str(path), "--resume", "--overwrite"])


def test_item1_what_marks_a_used_run_dir(tmp_path):
    """Checkpoints or a metrics.jsonl with a line mark a run; a user's own recipe.yaml does not, nor the
    empty metrics.jsonl of a start that failed before logging anything."""
    (tmp_path / "recipe.yaml").write_text("name: mine\n")
    assert run_step(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text("\n")
    assert run_step(tmp_path) is None  # started, nothing logged: nothing to protect
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "eval/pass@1": 0.1}\n')
    assert run_step(tmp_path) == 0  # an evaluation before the first step
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')
    assert run_step(tmp_path) == 2
    (tmp_path / "checkpoints" / "step_000001").mkdir(parents=True)
    assert run_step(tmp_path) == 1  # the newest checkpoint is where a resume would start


def test_item1_overwrite_replaces_the_whole_run(tmp_path):
    """--overwrite clears the old run (4 steps, other seed: other initial model) but not the user's own
    files; the new run is bit-identical to the same recipe in a fresh directory, and its pruning
    is not confused by the old run's higher-numbered checkpoints."""
    over = {"train.steps": 2, "train.save_every": 1}
    Trainer(recipe(tmp_path, "o", **{"seed": 9, "train.steps": 4, "train.save_every": 1,
                                     "eval.num_prompts": 2, "eval.n_samples": 1, "train.eval_every": 2}),
            progress=False).train()
    run_dir = tmp_path / "o"
    (run_dir / "notes.txt").write_text("mine")
    Trainer(recipe(tmp_path, "o", **over), overwrite=True, progress=False).train()
    fresh = Trainer(recipe(tmp_path, "fresh", **over), progress=False).train()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    assert not (run_dir / "eval").exists() and (run_dir / "notes.txt").read_text() == "mine"
    assert metrics_steps(run_dir) == [1, 2]
    a, b = weights(run_dir, 2), weights(fresh, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_item5_read_log_drops_torn_last_line_and_names_other_bad_lines(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "reward/me')
    parsed = read_log(log)
    assert [n for n, _, _ in parsed.lines] == [1, 2]
    assert parsed.notes == [f"{log}:3: dropped a torn last line (not valid JSON: Unterminated string starting at "
                            f"(column 13); 22 characters), left by an interrupted write"]
    log.write_text('{"step": 1}\n{"step": 2, "x":\n{"step": 3}\n')
    with pytest.raises(LogFormatError, match=f"^{log}:2: not valid JSON"):
        read_log(log)
    log.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(LogFormatError, match=f"^{log}:2: a list, not a JSON object"):
        read_log(log)


def test_item5_resume_after_torn_log_lines(tmp_path, capsys):
    """A write cut short (full disk, kill) left half a line at the end of both logs; --resume used to fail
    with `Expecting ',' delimiter`, naming no file."""
    rec = recipe(tmp_path, "torn", **{"train.steps": 2, "train.save_every": 1, "train.dump_rollouts_every": 1})
    run_dir = Trainer(rec, progress=False).train()
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        with open(run_dir / name, "a") as f:
            f.write('{"step": 3, "reward/mean": 0.1, "poli')
    n_rollouts = len((run_dir / "rollouts.jsonl").read_text().splitlines()) - 1
    capsys.readouterr()
    Trainer(recipe(tmp_path, "torn", **{"train.steps": 3, "train.save_every": 1, "train.dump_rollouts_every": 1}),
            resume=True, progress=False).train()
    err = capsys.readouterr().err
    assert f"{run_dir / 'metrics.jsonl'}:3: dropped a torn last line" in err
    assert f"{run_dir / 'rollouts.jsonl'}:{n_rollouts + 1}: dropped a torn last line" in err
    assert metrics_steps(run_dir) == [1, 2, 3]
    rows = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 1, 2]


def test_item7_recipe_diff_lists_dotted_paths():
    old = {"optim": {"lr": 1e-3}, "rewards": {"terms": [{"name": "verifier"}, {"name": "len", "weight": 1.0}]}}
    new = {"optim": {"lr": 2e-3, "eps": 1e-8}, "rewards": {"terms": [{"name": "verifier"}, {"name": "len",
                                                                                         "weight": 0.5}]}}
    assert recipe_diff(old, new) == [("optim.eps", "(absent)", 1e-8), ("optim.lr", 1e-3, 2e-3),
                                     ("rewards.terms.1.weight", 1.0, 0.5)]
    assert recipe_diff(new, new) == []


def test_item7_resume_with_changed_recipe(tmp_path, capsys):
    """A changed lr is refused (listing old → new) and leaves recipe.yaml alone; with the explicit flag it
    is accepted and recorded. Extending train.steps is allowed and recorded too."""
    run_dir = Trainer(recipe(tmp_path, "rc", **{"train.steps": 1, "train.save_every": 1}), progress=False).train()
    saved = (run_dir / "recipe.yaml").read_text()
    changed = recipe(tmp_path, "rc", **{"train.steps": 2, "train.save_every": 1, "optim.lr": 0.002})
    with pytest.raises(RunDirError) as err:
        Trainer(changed, resume=True, progress=False)
    msg = str(err.value)
    assert "differs from the run's" in msg and "in optim.lr (" in msg and "--allow-recipe-change" in msg
    assert "optim.lr: 0.001 → 0.002; train.steps: 1 → 2" in msg
    assert (run_dir / "recipe.yaml").read_text() == saved and not (run_dir / "recipe_changes.jsonl").exists()

    trainer = Trainer(changed, resume=True, allow_recipe_change=True, progress=False)
    assert "resuming" in capsys.readouterr().err
    trainer.train()
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["optim"]["lr"] == 0.002
    Trainer(recipe(tmp_path, "rc", **{"train.steps": 3, "train.save_every": 1, "optim.lr": 0.002}),
            resume=True, progress=False).train()  # steps only: no flag needed
    records = [json.loads(x) for x in (run_dir / "recipe_changes.jsonl").read_text().splitlines()]
    assert [(r["step"], r["forced"]) for r in records] == [(1, True), (2, False)]
    assert records[0]["changes"] == [{"key": "optim.lr", "old": 0.001, "new": 0.002},
                                     {"key": "train.steps", "old": 1, "new": 2}]
    assert records[1]["changes"] == [{"key": "train.steps", "old": 2, "new": 3}]
    assert metrics_steps(run_dir) == [1, 2, 3]


def test_item7_resume_of_an_older_run_ignores_keys_added_since_at_their_default(tmp_path):
    """A run whose recipe.yaml was written before a key existed (here: train.logprob_chunk_size and
    train.gradient_checkpointing removed from the saved file) resumes without the flag; the same
    missing key set to a non-default value is still a change to refuse."""
    run_dir = Trainer(recipe(tmp_path, "old", **{"train.steps": 1, "train.save_every": 1}), progress=False).train()
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    for key in ("logprob_chunk_size", "gradient_checkpointing"):
        saved["train"].pop(key)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    with pytest.raises(RunDirError, match=r"train.logprob_chunk_size: \"auto\" → 0"):
        Trainer(recipe(tmp_path, "old", **{"train.steps": 2, "train.save_every": 1, "train.logprob_chunk_size": 0}),
                resume=True, progress=False)
    Trainer(recipe(tmp_path, "old", **{"train.steps": 2, "train.save_every": 1}), resume=True, progress=False).train()
    assert metrics_steps(run_dir) == [1, 2]


def test_item1_retry_after_a_failed_start_needs_no_overwrite(tmp_path):
    """A start that fails after claiming the directory (here: a missing model.path) leaves nothing to
    protect, so the corrected command runs without --overwrite."""
    bad = recipe(tmp_path, "retry", **{"model.path": str(tmp_path / "no-such-model"), "model.testbed_size": None})
    with pytest.raises(Exception):
        Trainer(bad, progress=False)
    assert (tmp_path / "retry" / "metrics.jsonl").exists()
    Trainer(recipe(tmp_path, "retry", **{"train.steps": 1}), progress=False).train()
    assert metrics_steps(tmp_path / "retry") == [1]
