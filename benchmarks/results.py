"""Re-run every testbed study and regenerate the tables of docs/results/*.md.

Usage:
  python benchmarks/results.py run   [--seeds 0 1 2 3 4] [--jobs 2] [--studies entropy ...]
  python benchmarks/results.py write [--seeds ...]      # tables + provenance into the pages
  python benchmarks/results.py all   [...]              # run, then write (``make results``)
  python benchmarks/results.py plan  [...]              # print every run's resolved recipe, train nothing

Runs land in ``runs/studies/<setting>/<recipe>-s<seed>`` (finished runs are reused). ``--jobs``
worker processes (one torch thread each) share a seed-major queue.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from entrolab.studies.plan import STUDIES, git_commit, machine, queue, worker  # noqa: E402


def base_model(progress: bool = True) -> Path:
    from entrolab.components import build_one, import_builtins
    from entrolab.demo import DEMO_RECIPE, DEMO_SFT, cache_dir
    from entrolab.registry import TASKS
    from entrolab.sft import build_base_model

    import_builtins()
    task = build_one(TASKS, DEMO_RECIPE["task"], "task")
    return build_base_model(cache_dir() / "bases" / "countdown", task, progress=progress, **DEMO_SFT)


def cmd_run(args) -> None:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    base = base_model()
    items = queue(args.studies, args.seeds)
    claims = root / ".claims"
    if claims.exists():  # claims of a killed earlier command: those runs restart
        import shutil
        shutil.rmtree(claims)
    t0 = time.time()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ctx = mp.get_context("spawn")
    status = "interrupted"
    try:
        with ctx.Pool(args.jobs) as pool:
            pool.starmap(worker, [(str(REPO), str(root), items, str(base), args.set)] * args.jobs)
        status = "finished"
    finally:  # also when stopped (Ctrl-C): the pages report the wall time actually spent
        wall = time.time() - t0
        with open(root / "commands.jsonl", "a") as f:
            f.write(json.dumps({"command": " ".join(sys.argv), "studies": args.studies, "seeds": args.seeds,
                                "jobs": args.jobs, "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
                                "wall_s": round(wall), "status": status, "machine": machine(),
                                **git_commit(REPO)}) + "\n")
    print(f"{len(items)} runs done in {wall:.0f} s under {root}")


def base_evaluation(base: Path, root: Path) -> dict:
    """The base model's own evaluation with the studies' eval settings (cached across commands)."""
    from entrolab.eval_runner import evaluate_base_cached
    from entrolab.studies.plan import SETTINGS
    from entrolab.sweep import demo_task_override, plan_runs

    [(_, _, recipe)] = plan_runs([str(REPO / "recipes" / "grpo.yaml")], seeds=[0], out_dir=root / "default",
                                 base=base, overrides=[demo_task_override(), *SETTINGS["default"]])
    out = evaluate_base_cached(base, recipe, out=root / "base.json", progress=False)
    return json.loads(out.read_text())


def cmd_plan(args) -> None:
    """One JSON line per run with its resolved recipe (base path shown as ``<demo base>``): diff two
    outputs to see which study runs a recipe or preset edit changes."""
    from entrolab.studies.plan import SETTINGS
    from entrolab.sweep import demo_task_override, plan_runs

    root = Path(args.root)
    for setting, name, seed in queue(args.studies, args.seeds):
        [(_, _, recipe)] = plan_runs([str(REPO / "recipes" / f"{name}.yaml")], seeds=[seed], out_dir=root / setting,
                                     base="<demo base>",
                                     overrides=[demo_task_override(), *SETTINGS[setting], *args.set])
        print(json.dumps({"run": f"{setting}/{name}-s{seed}", "recipe": recipe.model_dump(mode="json")},
                         sort_keys=True))


def cmd_write(args) -> None:
    from entrolab.studies.pages import write_pages

    root = Path(args.root)
    base = base_model()
    pages = write_pages(REPO, root, studies=args.studies, seeds=args.seeds, base=base,
                        base_eval=base_evaluation(base, root))
    for page in pages:
        print(f"wrote {page}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "write", "all", "plan"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--studies", nargs="+", default=list(STUDIES))
    ap.add_argument("--root", default=str(REPO / "runs" / "studies"))
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides for every run (tests, miniatures)")
    args = ap.parse_args()
    if args.action == "plan":
        return cmd_plan(args)
    if args.action in ("run", "all"):
        cmd_run(args)
    if args.action in ("write", "all"):
        cmd_write(args)


if __name__ == "__main__":
    main()
