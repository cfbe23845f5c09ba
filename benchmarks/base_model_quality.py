"""Base-model quality for a task + SFT setting: SFT time and pass@k on the first test prompts.

Usage: python benchmarks/base_model_quality.py [--task-json '{"name": "countdown", ...}'] [--steps 600]
       [--size tiny] [--seed 0] [--split sft] [--prompts 50] [--n 64] [--out DIR]
Defaults are the demo's (src/entrolab/demo.py). This is the procedure behind the tuning tables of
docs/testbed.md: build_base_model, then n samples per prompt at T = 1, unbiased pass@k.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    import torch

    from entrolab.components import build_one, import_builtins
    from entrolab.demo import DEMO_RECIPE, DEMO_SFT
    from entrolab.evaluation import evaluate
    from entrolab.models.loading import load_policy
    from entrolab.registry import TASKS
    from entrolab.sft import build_base_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--task-json", default=json.dumps(DEMO_RECIPE["task"]))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--size", default=DEMO_SFT["size"])
    ap.add_argument("--seed", type=int, default=DEMO_SFT["seed"])
    ap.add_argument("--split", default=DEMO_SFT["split"])
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", default=None, help="model folder (default: a temporary one)")
    args = ap.parse_args()
    import_builtins()
    task = build_one(TASKS, json.loads(args.task_json), "task")
    kw = {"size": args.size, "seed": args.seed, "split": args.split}
    if args.steps:
        kw["steps"] = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "base")
        t0 = time.perf_counter()
        build_base_model(out, task, progress=False, **kw)
        sft_s = time.perf_counter() - t0
        model, tok = load_policy(str(out), device="cpu")
        with torch.no_grad():
            res = evaluate(model, tok, task, split="test", num_prompts=args.prompts, n_samples=args.n,
                           temperature=1.0, max_new_tokens=48, greedy=True, seed=0, label="base")
    s = res["summary"]
    row = {"sft_s": round(sft_s, 1), **{k: round(s[k], 3) for k in
           ["pass@1", "pass@4", "pass@16", f"pass@{args.n}", "greedy_acc", "token_entropy"] if k in s}}
    print(json.dumps({"task": json.loads(args.task_json), "sft": kw, **row}))


if __name__ == "__main__":
    main()
