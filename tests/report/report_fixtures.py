"""A fake-but-real run directory written by hand: recipe.yaml, metrics.jsonl, eval/*.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def eval_json(label: str, passk: dict[int, float], **summary) -> dict:
    s = {f"pass@{k}": v for k, v in passk.items()}
    s.update({"mean@n": passk[1], "greedy_acc": 0.5, "token_entropy": 0.8, "answer_entropy": 0.6,
              "distinct_correct_mean": 1.5, "num_prompts": 3})
    s.update(summary)
    return {"label": label, "model": "tiny", "task": {"name": "countdown"}, "split": "test",
            "n_samples": max(passk), "temperature": 1.0, "ks": sorted(passk), "summary": s, "prompts": []}


def write_run(root: Path, name: str, *, steps: int = 5, keys: tuple[str, ...] | None = None,
              evals: dict[str, dict] | None = None, recipe: bool = True, broken_tail: bool = False) -> Path:
    """Training line at step s (1-based): reward/mean = 0.1·s, reward/std = 0.05, reward/pass_rate =
    0.1·s, policy/entropy = 1/s, policy/approx_kl = 0.01·s, kl/ref = 0.02·s, clipfracs 0.001·s,
    rollout/len_mean = 10 + s, rollout/len_max = 20 + s, time/step_s = 2.0 (so wall time = 2·steps)."""
    run = root / name
    run.mkdir(parents=True)
    if recipe:
        (run / "recipe.yaml").write_text(f"name: {name}\nseed: 0\nrollout:\n  group_size: 8\n")
    lines = []
    for s in range(1, steps + 1):
        rec = {"step": s, "reward/mean": 0.1 * s, "reward/std": 0.05, "reward/pass_rate": 0.1 * s,
               "policy/entropy": 1.0 / s, "policy/approx_kl": 0.01 * s, "kl/ref": 0.02 * s,
               "policy/clipfrac_low": 0.001 * s, "policy/clipfrac_high": 0.001 * s,
               "rollout/len_mean": 10.0 + s, "rollout/len_max": 20.0 + s, "time/step_s": 2.0}
        if keys is not None:
            rec = {k: v for k, v in rec.items() if k == "step" or k in keys}
        lines.append(json.dumps(rec))
    lines.append(json.dumps({"step": steps, "eval/pass@1": 0.4, "eval/mean@n": 0.4}))
    text = "\n".join(lines) + "\n"
    if broken_tail:
        text += '{"step": 99, "reward/me'  # a crash mid-write
    (run / "metrics.jsonl").write_text(text)
    if evals:
        (run / "eval").mkdir()
        for label, res in evals.items():
            (run / "eval" / f"{label}.json").write_text(json.dumps(res))
    return run


@pytest.fixture
def fake_run(tmp_path):
    """Base pass@k = 0.1234, 0.3, 0.55, 0.8 at k = 1, 2, 4, 8; final = 0.4321, 0.5, 0.6, 0.7,
    so base catches up at k = 8 (0.8 ≥ 0.7) and trained − base at k = 1 is 0.3087."""
    evals = {
        "base": eval_json("base", {1: 0.1234, 2: 0.3, 4: 0.55, 8: 0.8}, greedy_acc=0.25),
        "step_000003": eval_json("step_000003", {1: 0.3, 2: 0.4, 4: 0.5, 8: 0.6}),
        "final": eval_json("final", {1: 0.4321, 2: 0.5, 4: 0.6, 8: 0.7}, greedy_acc=0.875,
                           answer_entropy=0.3141, distinct_correct_mean=1.125),
    }
    return write_run(tmp_path, "fake", evals=evals, broken_tail=True)
