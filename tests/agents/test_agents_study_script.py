"""benchmarks/agents_study.py: runs arms × seeds, reuses finished runs, writes the page block from them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def script(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("agents_study", REPO / "benchmarks" / "agents_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", tmp_path / "runs")
    monkeypatch.setattr(mod, "PAGE", tmp_path / "agents.md")
    monkeypatch.setattr(mod, "REPO", tmp_path)
    return mod


def test_study_runs_arms_and_writes_the_table_from_the_eval_files(script, tmp_path, counter_base_dir):
    recipe = {"name": "c", "model": {"path": str(counter_base_dir)}, "task": {"name": "counter_env:CounterTask", "n": 4},
              "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 24},
              "train": {"steps": 1, "save_every": 0}, "eval": {"num_prompts": 2, "n_samples": 2, "split": "test"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(recipe))
    study = {"name": "t", "title": "t", "metrics": ["pass@1", "episode_turns"], "curves": {"agent/turns": [1]},
             "arms": [{"label": "A", "recipe": "c.yaml"}, {"label": "B", "recipe": "c.yaml", "overrides": ["optim.lr=0.01"]}]}
    script.run(study, [0, 1], jobs=1)
    assert script.run_one((study, study["arms"][0], 0)).startswith("reuse")
    (tmp_path / "agents.md").write_text("x\n<!-- begin agents: t -->\nPLACEHOLDER\n<!-- end agents: t -->\ny\n")
    script.write(study, [0, 1])
    page = (tmp_path / "agents.md").read_text()
    assert page.startswith("x\n<!-- begin agents: t -->\n") and page.endswith("<!-- end agents: t -->\ny\n")
    assert "PLACEHOLDER" not in page
    ev = [json.loads((script.run_dir(study, "B", s) / "eval" / "final.json").read_text())["summary"] for s in (0, 1)]
    row = next(line for line in page.splitlines() if line.startswith("| B |"))
    assert script._mean_sd([e["pass@1"] for e in ev]) in row
    assert script._mean_sd([e["episode_turns"] for e in ev]) in row
    assert "| B | " in page and "95 % interval" in page and "agents_study.py all --study t --seeds 0 1" in page


def test_mean_sd_by_hand(script):
    assert script._mean_sd([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
    assert script._mean_sd([]) == "–"
