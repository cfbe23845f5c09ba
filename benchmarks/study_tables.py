"""Tables for docs/results/*.md from finished study sweeps (benchmarks/studies.sh).

Usage: python benchmarks/study_tables.py runs/study-entropy [--curves policy/entropy reward/pass_rate]
Prints Markdown: the sweep's summary table (summary.md), the base model's numbers, and for each
requested metric its value over training steps (mean over seeds at a few checkpoints).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from entrolab.sweep import summarize_sweep


def train_lines(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if "reward/mean" in r]


def curve_table(sweep: Path, key: str, at: list[int], window: int = 5) -> str:
    """Mean over seeds of ``key`` averaged over the ``window`` steps ending at each step in ``at``."""
    by_method: dict[str, list[list[dict]]] = defaultdict(list)
    for run in sorted(p for p in sweep.iterdir() if (p / "metrics.jsonl").exists()):
        by_method[run.name.rsplit("-s", 1)[0]].append(train_lines(run))
    head = "| method | " + " | ".join(f"step {s}" for s in at) + " |"
    rows = [head, "|" + "---|" * (len(at) + 1)]
    for method, runs in by_method.items():
        cells = []
        for s in at:
            vals = []
            for lines in runs:
                win = [r[key] for r in lines if s - window < r["step"] <= s and key in r]
                if win:
                    vals.append(statistics.mean(win))
            cells.append(f"{statistics.mean(vals):.3f}" if vals else "—")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def base_row(sweep: Path) -> str:
    for p in sorted(sweep.glob("*/eval/base.json")):
        s = json.loads(p.read_text())["summary"]
        keys = ["pass@1", "pass@8", "pass@64", "answer_entropy", "token_entropy", "distinct_correct_mean"]
        return "Base model (before RL): " + ", ".join(f"{k} {s[k]:.3f}" for k in keys if k in s) + "."
    return ""


def final_eval_table(sweep: Path, keys: list[str]) -> str:
    by_method: dict[str, list[dict]] = defaultdict(list)
    for p in sorted(sweep.glob("*/eval/final.json")):
        by_method[p.parent.parent.name.rsplit("-s", 1)[0]].append(json.loads(p.read_text())["summary"])
    rows = ["| method | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for m, evs in by_method.items():
        cells = []
        for k in keys:
            vals = [e[k] for e in evs if k in e]
            cells.append(f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1
                         else (f"{vals[0]:.3f}" if vals else "—"))
        rows.append(f"| {m} | {len(evs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--curves", nargs="*", default=["policy/entropy"])
    ap.add_argument("--at", type=int, nargs="*", default=[5, 25, 50, 75, 100])
    ap.add_argument("--final", nargs="*", default=[])
    args = ap.parse_args()
    sweep = Path(args.sweep)
    runs: dict[str, list[Path]] = defaultdict(list)
    for run in sorted(p for p in sweep.iterdir() if (p / "eval" / "final.json").exists()):
        runs[run.name.rsplit("-s", 1)[0]].append(run)
    order = sorted(runs, key=lambda m: (m != "grpo", m))  # the baseline first: costs are relative to it
    print(summarize_sweep({m: runs[m] for m in order}) + "\n")
    print(base_row(sweep) + "\n")
    if args.final:
        print(final_eval_table(sweep, args.final) + "\n")
    for key in args.curves:
        print(f"`{key}` over training (mean over seeds of the 5 steps ending at each step):\n")
        print(curve_table(sweep, key, args.at) + "\n")


if __name__ == "__main__":
    main()
