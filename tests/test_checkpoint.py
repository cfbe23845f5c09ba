"""Checkpoints: manifest verification and fallback (item 4 of issue 8), finite-only saves (item 2),
disk-full handling (item 6), stale temporary folders, pruning that never touches another run's."""

import json
import math
import os
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from entrolab import checkpoint as ckpt
from entrolab.eval_runner import evaluate_path
from entrolab.trainer import Trainer, TrainingStopped
from test_trainer import recipe, weights


def save(root, step, tiny_lm, run_id="r", keep=5):
    model, tok = tiny_lm
    return ckpt.save_checkpoint(root, step, model=model, tokenizer=tok, trainer_state={"step": step},
                                components_state={}, keep=keep, run_id=run_id)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path):
    path.write_bytes(b"\0" * path.stat().st_size)


def flip_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) - 7] ^= 0x10  # inside the tensor data: the file still parses, only the sha256 tells
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,file,reason", [
    (truncate, "model.safetensors", "truncated"),
    (zero, "trainer_state.pt", "sha256"),
    (flip_bit, "model.safetensors", "sha256"),
])
def test_item4_manifest_catches_damage_and_falls_back(tmp_path, tiny_lm, damage, file, reason):
    root = tmp_path / "checkpoints"
    save(root, 1, tiny_lm)
    newest = save(root, 2, tiny_lm)
    manifest = json.loads((newest / "manifest.json").read_text())
    assert {"model.safetensors", "trainer_state.pt", "components.pt", "config.json"} <= manifest["files"].keys()
    assert ckpt.verify_checkpoint(newest) is None
    damage(newest / file)
    why = ckpt.verify_checkpoint(newest)
    assert why.startswith(str(newest / file)) and reason in why
    path, skipped = ckpt.newest_valid(root)
    assert path == root / "step_000001" and skipped == [why]


def test_item4_resume_and_eval_use_newest_valid_checkpoint(tmp_path, capsys):
    """A bit flip in step 3's weights: eval falls back to step 2; --resume restarts from step 2 and redoes
    step 3 bit-identically to the step 3 that was damaged (the run is deterministic on CPU)."""
    rec = recipe(tmp_path, "fb", **{"train.save_every": 1, "train.keep_checkpoints": 3,
                                    "eval.num_prompts": 2, "eval.n_samples": 2})
    run_dir = Trainer(rec, progress=False).train()
    good3 = {k: v.clone() for k, v in weights(run_dir, 3).items()}  # load_file maps the file: copy first
    bad = run_dir / "checkpoints" / "step_000003" / "model.safetensors"
    flip_bit(bad)
    capsys.readouterr()
    out = evaluate_path(run_dir, recipe=None, overrides=[], label="after_damage", out=None)
    err = capsys.readouterr().err
    assert f"skipping invalid checkpoint: {bad}" in err
    assert json.loads(out.read_text())["model"].endswith("step_000002")
    with pytest.raises(ValueError, match="damaged checkpoint: .*model.safetensors: sha256"):  # given directly
        evaluate_path(bad.parent, recipe=None, overrides=[], label="x", out=tmp_path / "x.json")
    trainer = Trainer(rec, resume=True, progress=False)
    assert trainer.step == 2 and f"{bad}: sha256" in capsys.readouterr().err
    trainer.train()
    assert ckpt.verify_checkpoint(run_dir / "checkpoints" / "step_000003") is None
    again = weights(run_dir, 3)
    assert all(torch.equal(good3[k], again[k]) for k in good3)
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_item4_stale_folders_removed_or_restored(tmp_path, tiny_lm):
    """A killed writer leaves .tmp-* (half written: removed) and, if killed between the two renames of
    a re-save, .old-step_N-* with step_N missing (the complete previous step_N: moved back)."""
    root = tmp_path / "checkpoints"
    save(root, 1, tiny_lm)
    save(root, 2, tiny_lm)
    os.replace(root / "step_000002", root / ".old-step_000002-123")
    (root / ".tmp-step_000002-123").mkdir()
    (root / ".tmp-step_000003-77").mkdir()
    (root / ".old-step_000001-55").mkdir()  # step_000001 exists: a leftover copy, removed
    done = ckpt.clean_stale(root)
    assert sorted(p.name for p in root.iterdir()) == ["step_000001", "step_000002"]
    assert ckpt.verify_checkpoint(root / "step_000002") is None
    assert len(done) == 4 and any("restored" in d for d in done)


def test_item4_resume_after_kill_mid_write(tmp_path, capsys):
    """A run killed while writing step 3 (a .tmp folder) and while deleting (a .del folder): --resume
    removes both with a warning, keeps the logs of steps 1-2 and redoes step 3."""
    rec = recipe(tmp_path, "kill", **{"train.steps": 2, "train.save_every": 1})
    run_dir = Trainer(rec, progress=False).train()
    (run_dir / "checkpoints" / ".tmp-step_000003-4242").mkdir()
    (run_dir / "checkpoints" / ".tmp-step_000003-4242" / "model.safetensors").write_bytes(b"half")
    (run_dir / ".del-eval-4242").mkdir()
    capsys.readouterr()
    Trainer(recipe(tmp_path, "kill", **{"train.steps": 3, "train.save_every": 1}), resume=True, progress=False).train()
    assert "stale temporary: removed" in capsys.readouterr().err
    assert not [p for p in run_dir.rglob(".*")]
    assert [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_item1_pruning_keeps_other_runs_and_newer_checkpoints(tmp_path, tiny_lm):
    """Old pruning kept the newest `keep` by number, so a new run's steps 1-3 were deleted in favour of
    an older run's steps 5-6. Now only this run's checkpoints at or below the saved step are pruned."""
    root = tmp_path / "checkpoints"
    save(root, 5, tiny_lm, run_id="old")
    save(root, 6, tiny_lm, run_id="old")
    for step in (1, 2, 3):
        save(root, step, tiny_lm, run_id="new", keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [2, 3, 5, 6]


def test_item2_infinite_lr_never_reaches_a_checkpoint(tmp_path):
    """lr = inf (set on the optimizer, as the schema now rejects it in a recipe) makes step 2's weights
    NaN/inf with a finite loss and gradient. The run must stop at that step, write no checkpoint of it,
    and name step 1, whose weights are finite."""
    rec = recipe(tmp_path, "inf", **{"train.steps": 3, "train.save_every": 1})
    trainer = Trainer(rec, progress=False)
    trainer.train_step()
    trainer.save()
    trainer.scheduler.base_lrs = [math.inf]
    trainer.optimizer.param_groups[0]["lr"] = math.inf
    with pytest.raises(TrainingStopped) as err:
        trainer.train()
    msg = str(err.value)
    assert "non-finite weights after the optimizer step at step 1" in msg and msg.endswith("step_000001")
    assert [p.name for _, p in ckpt.list_checkpoints(trainer.ckpt_root)] == ["step_000001"]
    w1 = weights(rec.resolved_run_dir(), 1)
    assert all(torch.isfinite(t).all() for t in w1.values())


def test_item2_nan_grad_clip_caught_after_the_step(tmp_path):
    """grad_clip = NaN scales every gradient by NaN while the reported norm stays finite; the step makes
    the weights NaN, which the post-step check reports (the schema rejects NaN in recipes; this is the
    policy update's own guard)."""
    from entrolab.policy_update import NonFiniteError, UpdateSettings, update_policy

    trainer = Trainer(recipe(tmp_path, "nanclip"), progress=False)
    batch = trainer.rollout()
    trainer.score(batch)
    trainer.verify(batch)
    trainer.rewards_and_advantages(batch)
    with pytest.raises(NonFiniteError, match="non-finite weights after the optimizer step at step 0"):
        update_policy(trainer.model, trainer.optimizer, trainer.comps, batch, UpdateSettings(grad_clip=math.nan),
                      generator=trainer.generator, requires=trainer.requires)


def test_item2_nonfinite_optimizer_state_is_not_saved(tmp_path):
    """Finite weights but an inf Adam second moment (a huge gradient overflows g², the update is 0):
    writing that state would freeze every later step of a resumed run."""
    trainer = Trainer(recipe(tmp_path, "optstate", **{"train.steps": 3}), progress=False)
    trainer.train_step()
    first = next(iter(trainer.optimizer.state.values()))
    first["exp_avg_sq"][0] = math.inf
    with pytest.raises(TrainingStopped) as err:
        trainer.save()
    assert "exp_avg_sq" in str(err.value) and "checkpoint not written" in str(err.value)
    assert not trainer.ckpt_root.exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root); skipped where it cannot be mounted."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_item6_disk_full_removes_partial_and_keeps_previous(small_tmpfs, tiny_lm):
    root = small_tmpfs / "checkpoints"
    first = save(root, 1, tiny_lm)
    free = shutil.disk_usage(small_tmpfs).free
    (small_tmpfs / "filler").write_bytes(b"\0" * (free - 4096))  # room for a config, not for the weights
    with pytest.raises(ckpt.CheckpointWriteError) as err:
        save(root, 2, tiny_lm)
    msg = str(err.value)
    assert "ran out of space writing" in msg and str(root / ".tmp-step_000002") in msg
    assert f"the previous checkpoint {first} is intact" in msg
    assert sorted(p.name for p in root.iterdir()) == ["step_000001"]
    assert ckpt.verify_checkpoint(first) is None
    load_file(str(first / "model.safetensors"))
