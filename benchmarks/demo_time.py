"""Measure `entrolab demo` wall time per phase on an idle and on a loaded machine, cold and warm cache.

Usage: python benchmarks/demo_time.py [--out docs/benchmarks.md] [--loads idle loaded] [--skip-warm]

"cold" has no cached base model (so it includes the SFT phase, as on a fresh clone), "warm" reuses
it. "loaded" runs one CPU-burning background process (a Python busy loop) during the demo, as on a
shared machine. The demo runs as `make demo` runs it: OMP_NUM_THREADS is removed from its
environment, so the default thread policy (entrolab.threads) applies. Writes a Markdown section
with the machine, the load average before each run, settings and phase times, and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ["base_model_s", "grpo_s", "eval_base_s", "eval_trained_s", "report_s", "total_wall_s"]
MARKER = "## `entrolab demo` wall time"


def run_once(cache: Path, out: Path, *, loaded: bool) -> dict:
    env = dict(os.environ, ENTROLAB_CACHE=str(cache))
    env.pop("OMP_NUM_THREADS", None)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "entrolab.cli", "demo", "--out", str(out)], check=True, env=env)
        total = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the burner is not reaped yet: not counted
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    timings = json.loads((out / "timings.json").read_text())
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    timings.update(total_wall_s=total, load_avg_1min=load, cpu_s=cpu)
    timings["base"] = json.loads((out / "eval" / "base.json").read_text())["summary"]
    timings["final"] = json.loads((out / "eval" / "final.json").read_text())["summary"]
    return timings


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({'CUDA' if torch.cuda.is_available() else 'CPU'}), "
            f"Python {platform.python_version()}")


def outcome(base: dict, final: dict) -> str:
    """One sentence on what GRPO did, from the numbers (sharpened vs expanded, by pass@1 and pass@64)."""
    def move(k: str) -> str:
        return f"{k} {base[k]:.3f} → {final[k]:.3f}"

    up1, up64 = final["pass@1"] > base["pass@1"], final["pass@64"] > base["pass@64"]
    verdict = ("sharpened: pass@1 rose while pass@64 fell" if up1 and not up64 else
               "expanded: pass@64 rose" if up64 else "did not improve pass@1")
    return (f"GRPO {verdict} ({move('pass@1')}, {move('greedy_acc')}, {move('pass@64')}, answer entropy "
            f"{base['answer_entropy']:.2f} → {final['answer_entropy']:.2f} nats).")


def section(results: dict[str, dict], argv: list[str]) -> str:
    cols = list(results)
    rows = ["| phase | " + " | ".join(f"{c} (s)" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for p in PHASES:
        rows.append(f"| {p.removesuffix('_s')} | " + " | ".join(f"{results[c][p]:.1f}" for c in cols) + " |")
    rows.append("| demo CPU time, user + sys | " + " | ".join(f"{results[c]['cpu_s']:.1f}" for c in cols) + " |")
    rows.append("| load average (1 min) before the run | "
                + " | ".join(f"{results[c]['load_avg_1min']:.2f}" for c in cols) + " |")
    first = results[cols[0]]
    keys = ["pass@1", "pass@64", "mean@n", "greedy_acc", "token_entropy", "answer_entropy", "distinct_correct_mean"]
    res = ["| metric | base | trained |", "|---|---|---|"]
    res += [f"| {k} | {first['base'][k]:.3f} | {first['final'][k]:.3f} |" for k in keys if k in first["base"]]
    res += ["", outcome(first["base"], first["final"])]
    return "\n".join([
        MARKER, "",
        f"Command: `python benchmarks/demo_time.py{(' ' + ' '.join(argv)) if argv else ''}` "
        "(runs `entrolab demo` as `make demo` does, without OMP_NUM_THREADS; \"loaded\" = one CPU-burning "
        "background process during the run; \"cold\" = no cached base model, as on a fresh clone).",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        *rows, "",
        "With one torch thread (entrolab.threads) the demo keeps one core busy, so its CPU time is close to "
        "its wall time whenever one core is free for it, e.g. on a 2-core machine running one other "
        "CPU-heavy process; wall times above that are time spent waiting for a core.", "",
        f"Demo results of the {cols[0]} run (test split, 64 prompts × 64 samples, T = 1):", "", *res, "",
    ])


def write_section(path: Path, text: str) -> None:
    """Replace the demo section of ``path`` (up to the next ``## `` heading), keeping the rest."""
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    head, _, rest = old.partition(MARKER)
    nxt = rest.find("\n## ")
    tail = rest[nxt:] if MARKER in old and nxt >= 0 else ""
    path.write_text(head.rstrip() + "\n\n" + text + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--loads", nargs="+", choices=["idle", "loaded"], default=["idle", "loaded"])
    ap.add_argument("--skip-warm", action="store_true")
    args = ap.parse_args()
    # `kill` of this script must not leave the background CPU burner running: exit through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, dict] = {}
    for load in args.loads:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            for cache_state in ["cold"] if args.skip_warm else ["cold", "warm"]:
                name = f"{load}, {cache_state}"
                results[name] = run_once(cache, Path(tmp) / cache_state, loaded=load == "loaded")
                print(f"{name}: {results[name]['total_wall_s']:.1f} s", flush=True)
    text = section(results, sys.argv[1:])
    print(text)
    write_section(Path(args.out), text)


if __name__ == "__main__":
    main()
