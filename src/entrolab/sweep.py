"""``entrolab sweep``: several recipes × seeds from one base model, then one comparison report.

Every run starts from the same base model (the demo's cached Countdown base unless ``--base`` is
given), is evaluated with the recipe's eval settings, and lands in ``out/<recipe>-s<seed>``. The
summary table (mean ± std over seeds) is written as Markdown next to the comparison page, with each
method's wall time per step relative to the first recipe (the baseline), measured in the same sweep.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

COLUMNS = [
    ("eval/pass@1", "pass@1"), ("eval/pass@64", "pass@64"), ("eval/answer_entropy", "answer H"),
    ("eval/token_entropy", "token H (eval)"), ("policy/entropy", "train H (last)"),
    ("policy/clipfrac", "clip frac"), ("policy/maskfrac", "mask/select frac"), ("time/step_s", "s/step"),
]


def _last(lines: list[dict[str, Any]], key: str) -> float | None:
    vals = [x[key] for x in lines if key in x and "eval/pass@1" not in x]
    return vals[-1] if vals else None


def _is_mask_frac(key: str) -> bool:
    """Fraction of tokens a token weight/mask or covariance selection touched (per method's own metric)."""
    if key.startswith("weight/") and key.endswith("_frac"):
        return True
    return key in ("policy/cov_detached_frac", "policy/cov_selected_frac") or (
        key.startswith("entropy/") and key.endswith("selected_frac"))


def run_metrics(run_dir: Path) -> dict[str, float]:
    """Numbers of one finished run: final eval summary, last training entropy, mean step time."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [x for x in lines if "reward/mean" in x]
    out: dict[str, float] = {}
    final = json.loads((run_dir / "eval" / "final.json").read_text())["summary"]
    out.update({f"eval/{k}": float(v) for k, v in final.items() if isinstance(v, (int, float))})
    if train:
        out["policy/entropy"] = train[-1]["policy/entropy"]
        # the time of the first step includes warm-up allocations; leave it out when we can
        times = [x["time/step_s"] for x in (train[1:] or train)]
        out["time/step_s"] = statistics.mean(times)
        out["policy/clipfrac"] = statistics.mean(sum(v for k, v in x.items() if k.startswith("policy/clipfrac"))
                                                 for x in train)
        out["policy/maskfrac"] = statistics.mean(sum(v for k, v in x.items() if _is_mask_frac(k)) for x in train)
    return out


def summarize_sweep(runs: dict[str, list[Path]]) -> str:
    """Markdown table: one row per recipe, mean ± std over its seeds."""
    names = list(runs)
    stats = {n: [run_metrics(r) for r in runs[n]] for n in names}
    base_time = statistics.mean([m["time/step_s"] for m in stats[names[0]]]) if names else 1.0
    head = "| method | seeds | " + " | ".join(c for _, c in COLUMNS) + " | cost vs " + names[0] + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for n in names:
        cells = []
        for key, _ in COLUMNS:
            vals = [m[key] for m in stats[n] if key in m]
            if not vals:
                cells.append("—")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}")
        t = statistics.mean([m["time/step_s"] for m in stats[n]])
        rows.append(f"| {n} | {len(stats[n])} | " + " | ".join(cells) + f" | {t / base_time:.2f}× |")
    return "\n".join(rows)


def demo_task_override() -> str:
    """Runs from the demo's base model must see the task it was trained on: ``task=<the demo's task>``."""
    from entrolab.demo import DEMO_RECIPE

    return f"task={json.dumps(DEMO_RECIPE['task'])}"


def plan_runs(recipes: list[str], *, seeds: list[int], out_dir: Path, base: Path | str,
              overrides: list[str] | None = None) -> list[tuple[str, int, Any]]:
    """(recipe stem, seed, resolved Recipe) of every run of a sweep, in order, without training.

    Recipes that ``extends`` another are resolved by ``load_recipe``; the run identity (model, seed,
    run dir, name) is set here and ``overrides`` (``--set``) apply last.
    """
    from entrolab.config import load_recipe

    plan = []
    for path in recipes:
        name = Path(path).stem
        for seed in seeds:
            run_dir = out_dir / f"{name}-s{seed}"
            ov = [f"model.path={base}", "model.testbed_size=null", f"seed={seed}", f"run_dir={run_dir}",
                  f"name={name}-s{seed}", *(overrides or [])]
            plan.append((name, seed, load_recipe(path, ov)))
    return plan


def run_sweep(recipes: list[str], *, seeds: list[int], out_dir: Path, base: Path | None = None,
              overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Train and evaluate every recipe × seed, then write ``summary.md`` and a comparison page."""
    from entrolab.eval_runner import evaluate_model
    from entrolab.report import write_comparison, write_run_report
    from entrolab.trainer import Trainer

    if base is None:
        from entrolab.components import build_one, import_builtins
        from entrolab.demo import DEMO_SFT, cache_dir
        from entrolab.registry import TASKS
        from entrolab.sft import build_base_model

        import_builtins()
        from entrolab.demo import DEMO_RECIPE

        task = build_one(TASKS, DEMO_RECIPE["task"], "task")
        base = build_base_model(cache_dir() / "bases" / "countdown", task, progress=progress, **DEMO_SFT)
        overrides = [demo_task_override(), *(overrides or [])]
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[Path]] = {}
    t0 = time.perf_counter()
    for name, seed, recipe in plan_runs(recipes, seeds=seeds, out_dir=out_dir, base=base, overrides=overrides):
        run_dir = out_dir / f"{name}-s{seed}"
        if not (run_dir / "eval" / "final.json").exists():  # a finished run is reused
            trainer = Trainer(recipe, overwrite=True, progress=progress)  # an unfinished run restarts
            trainer.train()
            final = run_dir / "checkpoints" / f"step_{trainer.step:06d}"
            del trainer
            evaluate_model(final, recipe, label="final", out=run_dir / "eval" / "final.json", progress=progress)
            if seed == seeds[0] and not (run_dir / "eval" / "base.json").exists():
                evaluate_model(Path(base), recipe, label="base", out=run_dir / "eval" / "base.json",
                               progress=progress)
            write_run_report(run_dir)
        runs.setdefault(name, []).append(run_dir)
    table = summarize_sweep(runs)
    (out_dir / "summary.md").write_text(
        f"Sweep of {len(recipes)} recipes × seeds {seeds} from base model `{base}`; "
        f"overrides {overrides or []}; wall time {time.perf_counter() - t0:.0f} s.\n\n{table}\n")
    page = write_comparison([r for rs in runs.values() for r in rs], out_dir / "compare")
    return page
