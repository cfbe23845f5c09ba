"""Sweep summary: mean ± std over seeds, fractions and cost relative to the first recipe (hand values)."""

import json

from entrolab.sweep import run_metrics, summarize_sweep


def fake_run(root, name, *, pass1, times, clip, mask):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "final.json").write_text(json.dumps({"summary": {"pass@1": pass1, "pass@64": 0.5}}))
    lines = [{"step": i + 1, "reward/mean": 0.1, "policy/entropy": 0.2 - 0.01 * i, "time/step_s": t,
              "policy/clipfrac_low": clip, "policy/clipfrac_high": clip, "weight/x_frac": mask,
              "weight/x_frac_neg": 0.9} for i, t in enumerate(times)]
    lines.append({"step": len(times), "eval/pass@1": 0.3})  # eval lines are not training lines
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_run_metrics_hand_values(tmp_path):
    run = fake_run(tmp_path, "a-s0", pass1=0.25, times=[9.0, 1.0, 3.0], clip=0.1, mask=0.3)
    m = run_metrics(run)
    assert m["eval/pass@1"] == 0.25
    assert m["time/step_s"] == 2.0  # first (warm-up) step left out: mean(1, 3)
    assert abs(m["policy/clipfrac"] - 0.2) < 1e-12  # low + high
    assert abs(m["policy/maskfrac"] - 0.3) < 1e-12  # *_frac_neg is not a mask fraction
    assert abs(m["policy/entropy"] - 0.18) < 1e-12  # last training step


def test_summary_mean_std_and_cost(tmp_path):
    runs = {
        "grpo": [fake_run(tmp_path, "grpo-s0", pass1=0.2, times=[0, 1.0], clip=0, mask=0),
                 fake_run(tmp_path, "grpo-s1", pass1=0.4, times=[0, 1.0], clip=0, mask=0)],
        "x": [fake_run(tmp_path, "x-s0", pass1=0.5, times=[0, 1.5], clip=0, mask=0)],
    }
    table = summarize_sweep(runs)
    rows = table.splitlines()
    assert rows[0].startswith("| method | seeds | pass@1")
    assert "| grpo | 2 | 0.300 ± 0.141 |" in rows[2]  # mean 0.3, sample std sqrt(0.02)
    assert rows[3].startswith("| x | 1 | 0.500 |") and rows[3].endswith("| 1.50× |")


def test_plan_runs_resolves_extends_then_sets_run_identity_then_overrides(tmp_path):
    """A sweep of a recipe that extends recipes/grpo.yaml: each run is the resolved recipe (GRPO's keys
    inherited, the method's block kept), with model/seed/run dir/name set by the sweep and --set last."""
    from pathlib import Path

    from entrolab.config import load_recipe
    from entrolab.sweep import plan_runs

    grpo = Path(__file__).parents[1] / "recipes" / "grpo.yaml"
    child = tmp_path / "m.yaml"
    child.write_text(f"extends: {grpo}\nadvantage: {{name: rloo}}\n")
    plan = plan_runs([str(child)], seeds=[3, 4], out_dir=tmp_path / "out", base="B", overrides=["train.steps=7"])
    assert [(n, s, r.name, r.seed, r.run_dir) for n, s, r in plan] == [
        ("m", 3, "m-s3", 3, str(tmp_path / "out" / "m-s3")), ("m", 4, "m-s4", 4, str(tmp_path / "out" / "m-s4"))]
    rec = plan[0][2]
    expect = load_recipe(grpo, ["advantage={name: rloo}", "model.path=B", "model.testbed_size=null", "seed=3",
                                f"run_dir={tmp_path / 'out' / 'm-s3'}", "name=m-s3", "train.steps=7"])
    assert rec == expect and rec.advantage == {"name": "rloo"} and rec.train.steps == 7
