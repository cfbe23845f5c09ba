"""Preference study on the Countdown testbed: DPO (and DNO) from the demo's base model vs the base, 3 seeds.

Usage: PYTHONPATH=src python benchmarks/prefs_study.py [--out runs/prefs-study] [--seeds 0 1 2]
       [--recipes recipes/prefs/dpo.yaml ...] [--dno] [key=value overrides for every run]

Each recipe runs as ``entrolab train-prefs <recipe> seed=S run_dir=OUT/<stem>-sS --eval`` (a finished run,
one with ``eval/final.json``, is reused); ``--dno`` adds ``entrolab dno recipes/prefs/dno.yaml`` per seed
with an evaluation after each iteration; ``--grpo DIR`` tabulates a finished GRPO sweep alike. Prints
Markdown tables (mean ± std over seeds) of the final evaluations next to the base model's (evaluated
with each seed's sampling seed), then the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

COLUMNS = [("pass@1", "pass@1"), ("pass@8", "pass@8"), ("pass@64", "pass@64"), ("greedy_acc", "greedy"),
           ("answer_entropy", "answer H"), ("distinct_correct_mean", "distinct correct")]


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: dict[str, list[dict]], extra: list[tuple[str, str]] = ()) -> str:
    head = "| model | seeds | " + " | ".join(c for _, c in [*COLUMNS, *extra]) + " |"
    out = [head, "|" + "---|" * (len(COLUMNS) + len(extra) + 2)]
    for name, runs in rows.items():
        cells = [cell([r[k] for r in runs if k in r]) for k, _ in [*COLUMNS, *extra]]
        out.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def summary(path: Path) -> dict:
    return json.loads(path.read_text())["summary"]


def train_prefs(recipe: str, seed: int, out: Path, overrides: list[str]) -> Path:
    from entrolab.preference.config import load_pref_recipe
    from entrolab.preference.trainer import PreferenceTrainer, evaluate_prefs_run

    run_dir = out / f"{Path(recipe).stem}-s{seed}"
    if not (run_dir / "eval" / "final.json").exists():
        r = load_pref_recipe(recipe, [f"seed={seed}", f"run_dir={run_dir}", *overrides])
        trainer = PreferenceTrainer(r, overwrite=True, progress=False)
        trainer.train()
        evaluate_prefs_run(trainer, progress=False)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/prefs-study")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=["recipes/prefs/dpo.yaml"])
    p.add_argument("--dno", action="store_true", help="also run recipes/prefs/dno.yaml per seed")
    p.add_argument("--grpo", default=None, help="a finished `entrolab sweep recipes/grpo.yaml` folder to tabulate "
                                                "in the same columns (e.g. GRPO at DNO's number of samples)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    rows: dict[str, list[dict]] = {"base": []}
    for seed in args.seeds:
        for recipe in args.recipes:
            run = train_prefs(recipe, seed, out, args.overrides)
            if len(rows["base"]) < args.seeds.index(seed) + 1:
                rows["base"].append(summary(run / "eval" / "base.json"))
            m = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
            train = [x for x in m if "pref/loss" in x]
            pairs = sum(1 for x in (run / "pairs.jsonl").read_text().splitlines() if x.strip())
            first = [x for x in train if x["data/epoch"] == 0]
            last = [x for x in train if x["data/epoch"] == train[-1]["data/epoch"]]
            rows.setdefault(Path(recipe).stem, []).append({
                **summary(run / "eval" / "final.json"), "pairs": pairs, "acc": train[-1]["pref/accuracy"],
                "margin": train[-1]["pref/margin"],
                # each epoch covers every pair once: the epoch means of the summed log-probs compare like with like
                **{f"{k}_{when}": statistics.mean(x[f"pref/logp_{k}"] for x in xs)
                   for k in ("chosen", "rejected") for when, xs in (("first", first), ("last", last))}})
    print(table(rows, [("pairs", "pairs"), ("acc", "train acc (last)"), ("margin", "margin (last)"),
                       ("chosen_first", "logp chosen (epoch 1)"), ("chosen_last", "(last epoch)"),
                       ("rejected_first", "logp rejected (epoch 1)"), ("rejected_last", "(last epoch)")]))
    if args.dno:
        from entrolab.preference.config import load_pref_recipe
        from entrolab.preference.dno import run_dno

        per_iter: dict[str, list[dict]] = {}
        for seed in args.seeds:
            run_dir = out / f"dno-s{seed}"
            r = load_pref_recipe("recipes/prefs/dno.yaml", [f"seed={seed}", f"run_dir={run_dir}", *args.overrides])
            done = sorted(run_dir.glob("iter_*/state.json"))
            states = run_dno(r, resume=bool(done), overwrite=not done, progress=False)
            for s in states:
                row = {k[len("eval/"):]: v for k, v in s.items() if k.startswith("eval/")}
                per_iter.setdefault(f"DNO iteration {s['iteration'] + 1}", []).append(
                    {**row, "pairs": s["pairs"], "sample_acc": s["dno/sample_accuracy"]})
        print()
        print(table(per_iter, [("pairs", "pairs"), ("sample_acc", "on-policy sample acc")]))
    if args.grpo:
        runs = [summary(f) for f in sorted(Path(args.grpo).glob("*/eval/final.json"))]
        print()
        print(table({f"GRPO ({args.grpo})": runs}))
    print(f"\n{platform.node()} · {os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.1f} at the end · "
          f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
