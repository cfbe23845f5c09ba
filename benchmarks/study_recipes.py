"""Print the resolved recipe of every run of a study, without training: a stand-in for ``entrolab``.

Usage: ENTROLAB="python benchmarks/study_recipes.py" bash benchmarks/studies.sh entropy > entropy.jsonl
It takes the arguments ``entrolab sweep`` takes and prints one JSON line per run
(``{"run": "<out>/<recipe>-s<seed>", "recipe": {...}}``), with the run plan of ``entrolab sweep``
(``entrolab.sweep.plan_runs``) from the demo's base model, whose path is shown as ``<demo base>``
so that no model is built. Diffing two outputs shows which study runs a recipe or preset change alters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from entrolab.sweep import demo_task_override, plan_runs

    if argv[:1] == ["sweep"]:
        argv = argv[1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("recipes", nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--set", nargs="*", default=[])
    args = ap.parse_args(argv)
    plan = plan_runs(args.recipes, seeds=args.seeds, out_dir=Path(args.out), base="<demo base>",
                     overrides=[demo_task_override(), *args.set])
    for name, seed, recipe in plan:
        print(json.dumps({"run": f"{args.out}/{name}-s{seed}", "recipe": recipe.model_dump(mode="json")},
                         sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
