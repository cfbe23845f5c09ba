"""Measure `entrolab demo` wall time per phase, cold (no cached base model) and warm (cached).

Usage: python benchmarks/demo_time.py [--out docs/benchmarks.md] [--skip-warm]
Writes a Markdown table with the machine, settings and phase times, and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(cache: Path, out: Path) -> dict:
    env = dict(os.environ, ENTROLAB_CACHE=str(cache))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "entrolab.cli", "demo", "--out", str(out)], check=True, env=env)
    total = time.perf_counter() - t0
    timings = json.loads((out / "timings.json").read_text())
    timings["total_wall_s"] = total
    final = json.loads((out / "eval" / "final.json").read_text())["summary"]
    base = json.loads((out / "eval" / "base.json").read_text())["summary"]
    timings["base"] = base
    timings["final"] = final
    return timings


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({'CUDA' if torch.cuda.is_available() else 'CPU'}), "
            f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--skip-warm", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cold = run_once(cache, Path(tmp) / "cold")
        warm = None if args.skip_warm else run_once(cache, Path(tmp) / "warm")
    phases = ["base_model_s", "grpo_s", "eval_base_s", "eval_trained_s", "report_s", "total_wall_s"]
    rows = ["| phase | cold cache (s) | warm cache (s) |", "|---|---|---|"]
    for p in phases:
        w = f"{warm[p]:.1f}" if warm else "—"
        rows.append(f"| {p.removesuffix('_s')} | {cold[p]:.1f} | {w} |")
    keys = ["pass@1", "pass@64", "mean@n", "greedy_acc", "token_entropy", "answer_entropy", "distinct_correct_mean"]
    res = ["| metric | base | trained |", "|---|---|---|"]
    for k in keys:
        if k in cold["base"]:
            res.append(f"| {k} | {cold['base'][k]:.3f} | {cold['final'][k]:.3f} |")
    text = "\n".join([
        "## `entrolab demo` wall time", "",
        "Command: `python benchmarks/demo_time.py` (runs `entrolab demo` twice: cold cache, then warm).",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}.", "",
        *rows, "", "Demo results of the cold run (test split, 64 prompts × 64 samples, T = 1):", "", *res, "",
    ])
    print(text)
    out = Path(args.out)
    old = out.read_text() if out.exists() else "# Benchmarks\n\n"
    marker = "## `entrolab demo` wall time"
    head = old.split(marker)[0].rstrip() + "\n\n"
    tail = ""
    if marker in old:
        rest = old.split(marker, 1)[1]
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else ""
    out.write_text(head + text + tail)


if __name__ == "__main__":
    main()
