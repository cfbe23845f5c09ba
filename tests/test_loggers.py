"""Issue 11, loggers: TensorBoard and W&B (offline) next to metrics.jsonl, one recipe switch."""

from __future__ import annotations

import json
import sys

import pytest

from entrolab.config import load_recipe
from entrolab.loggers import LoggerUnavailable, open_loggers, scalars
from entrolab.registry import ConfigError
from entrolab.trainer import Trainer

BASE = {
    "seed": 3, "model": {"testbed_size": "tiny"},
    "task": {"name": "countdown", "n_train": 64, "n_validation": 8, "n_test": 8},
    "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8},
    "train": {"steps": 2, "save_every": 0, "dump_rollouts_every": 0, "eval_every": 1},
    "eval": {"num_prompts": 2, "n_samples": 2},
}


def recipe(tmp_path, name, backends, **extra):
    return load_recipe({**BASE, "name": name, "run_dir": str(tmp_path / name), "log": {"backends": backends, **extra}})


def jsonl(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_item4_tensorboard_and_wandb_receive_every_jsonl_number(tmp_path, monkeypatch):
    """Every numeric field of every metrics.jsonl record (step metrics and the evaluations' pass@k)
    is in TensorBoard's event file and in W&B's offline run file, at its step."""
    pytest.importorskip("tensorboard", reason="optional 'loggers' extra")
    pytest.importorskip("wandb", reason="optional 'loggers' extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = Trainer(recipe(tmp_path, "both", ["jsonl", "tensorboard", "wandb"]), progress=False).train()
    records = jsonl(run_dir)
    assert [r["step"] for r in records] == [0, 1, 1, 2]  # eval before training, step 1, its eval, step 2
    assert any(k.startswith("eval/pass@") for k in records[0])
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for rec in records:
        for key, value in scalars(rec).items():
            events = {e.step: e.value for e in acc.Scalars(key)}
            assert events[rec["step"]] == pytest.approx(value, rel=1e-6, abs=1e-6), key  # float32 in the file
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and (run_dir / "wandb_id.txt").read_text().strip() in runs[0].name
    history = wandb_history(runs[0])
    for rec in records:
        for key, value in scalars(rec).items():
            assert history[rec["step"]][key] == pytest.approx(value), key


def wandb_history(path):
    """The history rows W&B wrote to an offline run file, by step: {step: {key: value}}.

    The file is a LevelDB-style log (32 KiB blocks; each chunk has a 7-byte header: CRC, length,
    type full/first/middle/last) after a 7-byte W&B header; each record is a wandb ``Record`` protobuf.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    raw, block, pos, part, rows = path.read_bytes(), 32768, 7, b"", {}
    while pos + 7 <= len(raw):
        left = block - pos % block
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):  # a whole record
            rec = pb.Record()
            rec.ParseFromString(part)
            if rec.WhichOneof("record_type") == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                rows[row["_step"]] = row
    return rows


def test_item4_log_backends_validated():
    with pytest.raises(ConfigError, match="log.backends.*must include 'jsonl'"):
        load_recipe({"log": {"backends": ["tensorboard"]}})
    with pytest.raises(ConfigError, match="log.backends.1"):
        load_recipe({"log": {"backends": ["jsonl", "tensorbord"]}})
    with pytest.raises(ConfigError, match="unknown key 'log.backend'"):
        load_recipe({"log": {"backend": ["jsonl"]}})
    assert load_recipe({}).log.backends == ["jsonl"]  # the default: metrics.jsonl only


def test_item4_missing_package_names_it(tmp_path, monkeypatch):
    """A backend whose package is absent fails at start with the package and the extra to install."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(LoggerUnavailable, match="'wandb' package is not installed.*entrolab\\[loggers\\]"):
        open_loggers(recipe(tmp_path, "x", ["jsonl", "wandb"]), tmp_path)


def test_item4_overwrite_clears_logger_outputs(tmp_path):
    """--overwrite starts a new run: the old run's TensorBoard events and W&B run (and the id that
    --resume would continue) go with its other files; files that are not the run's stay."""
    from entrolab.rundir import clear_run

    for d in ("tensorboard", "wandb/offline-run-1"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "events").write_text("old")
    (tmp_path / "wandb_id.txt").write_text("abc\n")
    (tmp_path / "notes.txt").write_text("mine")
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
