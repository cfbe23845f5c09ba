"""Time `entrolab prefs build` on the demo's Countdown base model (256 prompts x 8 samples by default).

Usage: python benchmarks/prefs_build_time.py [--num-prompts 256] [--k 8] [--repeats 3]

Runs the CLI as a user would (a fresh process each time, OMP_NUM_THREADS=1) for three judge/rule
combinations and prints a Markdown table: the CLI's wall time (process start to exit, imports
included), the in-process sample-and-score and total times it records in `<out>.build.json`, and the
pair counts. The demo base model must be cached already (`entrolab demo` or any earlier build), so
the SFT phase is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "verifier / verifier": ["--judge", "verifier", "--rule", "verifier"],
    "verifier / best_vs_worst": ["--judge", "verifier", "--rule", "best_vs_worst"],
    "heron (verifier, format, length) / heron": [
        "--judge", "heron", "--rule", "heron", "--factor", "verifier", "--factor", "format",
        "--factor", "{name: length, target: 0, coef: 1.0}", "--heron-margins", "0", "0", "2"],
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in CASES.items():
            walls, inner, totals, summary = [], [], [], {}
            for r in range(args.repeats):
                out = Path(tmp) / f"pairs{r}.jsonl"
                cmd = [sys.executable, "-m", "entrolab.cli", "prefs", "build", "--model", "demo-base",
                       "--task", "countdown", "--k", str(args.k), "--num-prompts", str(args.num_prompts),
                       "--split", "train", "--seed", "0", "--device", "cpu", "--out", str(out), "--quiet", *extra]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                walls.append(time.perf_counter() - t0)
                summary = json.loads(out.with_name(out.name + ".build.json").read_text())
                inner.append(summary["sample_and_score_s"])
                totals.append(summary["total_s"])
            rows.append((name, statistics.median(walls), statistics.median(inner), statistics.median(totals),
                         summary["pairs"], summary["prompts_with_pairs"]))
    load = os.getloadavg()[0]
    print(f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS=1; 1-min load average {load0:.1f} "
          f"before, {load:.1f} after; medians of {args.repeats} runs.\n")
    print(f"Command: `python benchmarks/prefs_build_time.py --num-prompts {args.num_prompts} --k {args.k} "
          f"--repeats {args.repeats}`\n")
    print("| judge / rule | CLI wall (s) | sample + score (s) | build total (s) | pairs | prompts with a pair |")
    print("|---|---|---|---|---|---|")
    for name, wall, inner_s, total_s, pairs, with_pairs in rows:
        print(f"| {name} | {wall:.1f} | {inner_s:.1f} | {total_s:.1f} | {pairs} | {with_pairs} / {args.num_prompts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
