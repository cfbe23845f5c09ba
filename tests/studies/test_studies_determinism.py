"""The results command is deterministic: the same miniature study run twice gives identical tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entrolab.studies.pages import render_page
from entrolab.studies.plan import SETTINGS, Study, worker
from entrolab.studies.tables import curve_table, load_study, main_table, paired_table

REPO = Path(__file__).resolve().parents[2]
MINI = ["train.steps=2", "rollout.prompts_per_step=4", "rollout.group_size=2", "rollout.max_new_tokens=16",
        "train.mini_batch_size=8", "eval.num_prompts=4", "eval.n_samples=4"]


@pytest.fixture(scope="module")
def countdown_base(tmp_path_factory):
    from entrolab.components import build_one, import_builtins
    from entrolab.demo import DEMO_RECIPE
    from entrolab.registry import TASKS
    from entrolab.sft import build_base_model

    import_builtins()
    task = build_one(TASKS, DEMO_RECIPE["task"], "task")
    return build_base_model(tmp_path_factory.mktemp("base") / "countdown", task, steps=2, batch_size=8, warmup=0,
                            progress=False)


PAGE = """<!-- begin generated: provenance -->
<!-- end generated: provenance -->
<!-- begin generated: setup/default -->
<!-- end generated: setup/default -->
GRPO pass@1 <!--v:mini/grpo/pass@1-->?<!--/v-->, spurious vs GRPO <!--v:mini/spurious/diff/pass@1-->?<!--/v-->,
base <!--v:base/pass@1-->?<!--/v-->.
<!-- begin generated: mini/paired -->
<!-- end generated: mini/paired -->
"""


def _tables(root: Path, base: Path) -> str:
    from entrolab.eval_runner import evaluate_model
    from entrolab.studies.plan import run_dir
    from entrolab.sweep import demo_task_override, plan_runs

    study = Study("mini", "none.md", ("grpo", "spurious"), curves=("policy/entropy",))
    items = [("default", r, 0) for r in study.recipes]
    assert worker(str(REPO), str(root), items, str(base), MINI) == 2
    [(_, _, recipe)] = plan_runs([str(REPO / "recipes" / "grpo.yaml")], seeds=[0], out_dir=root, base=base,
                                 overrides=[demo_task_override(), *SETTINGS["default"], *MINI])
    base_eval = json.loads(evaluate_model(base, recipe, label="base", out=root / "base.json",
                                          progress=False).read_text())
    sd = load_study(root, study, [0], base_eval)
    info = json.loads((run_dir(root, "default", "grpo", 0) / "study.json").read_text())
    assert info["seed"] == 0 and info["recipe"] == "grpo" and "train.steps=2" in info["overrides"]
    page = render_page(PAGE, page="mini.md", repo=REPO, root=root, studies=[sd], base=base, base_eval=base_eval)
    sft = json.loads((base / "sft.json").read_text())
    assert f"Base model settings hash: `{sft['settings_hash']}`" in page
    assert f"base <!--v:base/pass@1-->{base_eval['summary']['pass@1']:.3f}<!--/v-->" in page
    assert "Every run: 2 steps × 4 prompts × 2 samples" in page and "1 pass over each batch in 1 mini-batch of 8" in page
    tables = "\n".join([main_table(sd), paired_table(sd), curve_table(sd, "policy/entropy")])
    return tables + "\n" + page.split("- Wall time")[0]  # the wall time differs between two runs


def test_same_command_twice_gives_identical_tables(tmp_path, countdown_base):
    first = _tables(tmp_path / "a", countdown_base)
    second = _tables(tmp_path / "b", countdown_base)
    assert first == second
    assert "| grpo | 1 |" in first and "| spurious |" in first


def test_finished_runs_are_reused_and_claims_block_a_second_worker(tmp_path, countdown_base):
    root = tmp_path / "r"
    items = [("default", "grpo", 0)]
    assert worker(str(REPO), str(root), items, str(countdown_base), MINI) == 1
    before = (root / "default" / "grpo-s0" / "study.json").read_text()
    assert worker(str(REPO), str(root), items, str(countdown_base), MINI) == 0  # finished: reused
    assert (root / "default" / "grpo-s0" / "study.json").read_text() == before
    (root / ".claims" / "default" / "spurious-s0").mkdir(parents=True)  # another worker holds it
    assert worker(str(REPO), str(root), [("default", "spurious", 0)], str(countdown_base), MINI) == 0
    assert not (root / "default" / "spurious-s0").exists()
