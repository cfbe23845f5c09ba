"""``entrolab demo``: the whole loop on one machine, in minutes on a laptop CPU.

1. Build (or reuse a cached) Countdown base model by SFT from scratch on skewed demonstrations.
2. Train it with GRPO (the ``grpo`` preset with demo-sized settings).
3. Evaluate base and trained models with n samples per prompt on the test split.
4. Write the HTML report and return its path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

#: Demo-sized GRPO run (see recipes/grpo.yaml for the annotated preset). Timings of these
#: settings on 2 CPU cores are in docs/benchmarks.md (benchmarks/demo_time.py).
DEMO_RECIPE: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    # 3-number Countdown: a ~1M-parameter char model reaches pass@1 ≈ 0.2 vs pass@64 ≈ 0.85 after
    # ~1 min of SFT (docs/testbed.md); 4-number problems stay at 2–3 % pass@1 at this scale.
    # The base model imitates the ``sft`` split; RL trains on the disjoint ``train`` split.
    "task": {"name": "countdown", "min_numbers": 3, "max_numbers": 3, "min_target": 1, "max_target": 99,
             "n_sft": 1200, "n_train": 500, "n_validation": 100},
    "rollout": {"prompts_per_step": 16, "group_size": 8, "temperature": 1.0, "max_new_tokens": 40},
    "rewards": {"terms": [{"name": "verifier", "weight": 1.0}]},
    "advantage": {"name": "grpo"},
    "objective": {"surrogate": {"name": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28},
                  "aggregation": {"name": "token_mean"}},
    "optim": {"lr": 1.0e-4, "grad_clip": 1.0},
    "train": {"steps": 100, "updates_per_batch": 1, "mini_batch_size": 64, "save_every": 0},
    "eval": {"split": "test", "num_prompts": 64, "n_samples": 64, "temperature": 1.0},
}

#: SFT settings of the demo's base model (cached by their hash under the cache directory).
DEMO_SFT: dict[str, Any] = {"size": "tiny", "seed": 0, "split": "sft"}


def cache_dir() -> Path:
    """Where base models are cached: ``$ENTROLAB_CACHE`` or ``~/.cache/entrolab``."""
    return Path(os.environ.get("ENTROLAB_CACHE", "~/.cache/entrolab")).expanduser()


def run_demo(*, out_dir: Path = Path("runs/demo"), overrides: list[str] | None = None,
             fresh_base: bool = False, progress: bool = True) -> Path:
    """Run the four phases and return the report path; phase wall times go to ``timings.json``."""
    import json

    from entrolab.components import build_one, import_builtins
    from entrolab.config import load_recipe
    from entrolab.eval_runner import evaluate_model
    from entrolab.registry import TASKS
    from entrolab.report import write_run_report
    from entrolab.sft import build_base_model
    from entrolab.trainer import Trainer

    import_builtins()
    data = dict(DEMO_RECIPE, run_dir=str(out_dir))
    recipe = load_recipe(data, overrides)
    timings: dict[str, float] = {}

    def say(text: str) -> None:  # phase headers, so a log file shows where the demo is
        if progress:
            print(f"demo: {text}", flush=True)

    t0 = time.perf_counter()
    task = build_one(TASKS, recipe.task, "task")
    say(f"1/4 base model (SFT from scratch, or the cached one under {cache_dir() / 'bases'})")
    base = build_base_model(cache_dir() / "bases" / "countdown", task, force=fresh_base, progress=progress,
                            **DEMO_SFT)
    timings["base_model_s"] = time.perf_counter() - t0

    recipe = load_recipe(dict(recipe.model_dump(mode="json"), model={"path": str(base)}), [])
    t0 = time.perf_counter()
    say(f"2/4 GRPO, {recipe.train.steps} steps")
    trainer = Trainer(recipe, overwrite=True, progress=progress)  # a demo rerun replaces the last one
    run_dir = trainer.train()
    timings["grpo_s"] = time.perf_counter() - t0
    final_ckpt = run_dir / "checkpoints" / f"step_{trainer.step:06d}"
    del trainer

    t0 = time.perf_counter()
    say(f"3/4 evaluate base and trained models ({recipe.eval.n_samples} samples per prompt)")
    evaluate_model(Path(base), recipe, label="base", out=run_dir / "eval" / "base.json", progress=progress)
    timings["eval_base_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_model(final_ckpt, recipe, label="final", out=run_dir / "eval" / "final.json", progress=progress)
    timings["eval_trained_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("4/4 report")
    report = write_run_report(run_dir)
    timings["report_s"] = time.perf_counter() - t0
    (run_dir / "timings.json").write_text(json.dumps(timings, indent=2))
    return report
