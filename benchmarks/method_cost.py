"""Extra wall time per training step of each method vs GRPO, measured side by side in one process.

Usage: OMP_NUM_THREADS=1 python benchmarks/method_cost.py recipes/grpo.yaml recipes/clip_cov.yaml ...
       [--steps 12] [--skip 2] [--rounds 2]
Every recipe trains ``--steps`` steps from the demo's cached Countdown base model with the same
settings as benchmarks/studies.sh; the mean step time of the steps after ``--skip`` is taken, recipes
are interleaved over ``--rounds`` rounds (so drifts in machine load hit every method alike), and the
table reports the median over rounds and the ratio to the first recipe. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


def step_times(recipe_path: str, base: Path, task: dict, steps: int, out: Path) -> list[float]:
    from entrolab.config import load_recipe
    from entrolab.trainer import Trainer

    ov = [f"model.path={base}", "model.testbed_size=null", f"task={json.dumps(task)}", f"run_dir={out}",
          "optim.lr=1e-4", f"train.steps={steps}", "train.save_every=0", "train.dump_rollouts_every=0"]
    trainer = Trainer(load_recipe(recipe_path, ov), progress=False)
    times = []
    while trainer.step < steps:
        times.append(trainer.train_step()["time/step_s"])
    return times


def main() -> None:
    from entrolab.components import build_one, import_builtins
    from entrolab.demo import DEMO_RECIPE, DEMO_SFT, cache_dir
    from entrolab.registry import TASKS
    from entrolab.sft import build_base_model

    ap = argparse.ArgumentParser()
    ap.add_argument("recipes", nargs="+")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import_builtins()
    task_cfg = DEMO_RECIPE["task"]
    base = build_base_model(cache_dir() / "bases" / "countdown", build_one(TASKS, task_cfg, "task"), **DEMO_SFT)
    per: dict[str, list[float]] = {r: [] for r in args.recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for r in args.recipes:
                t = step_times(r, base, task_cfg, args.steps, Path(tmp) / f"{Path(r).stem}-{rnd}")
                per[r].append(statistics.mean(t[args.skip:]))
    ref = statistics.median(per[args.recipes[0]])
    print(f"| method | s/step (median of {args.rounds} rounds, steps {args.skip + 1}-{args.steps}) | vs {Path(args.recipes[0]).stem} |")
    print("|---|---|---|")
    for r in args.recipes:
        m = statistics.median(per[r])
        print(f"| {Path(r).stem} | {m:.3f} | {m / ref:.2f}× |")


if __name__ == "__main__":
    main()
