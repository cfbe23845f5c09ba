"""How many torch threads should a testbed model use? Time 1 vs 2 threads, idle and loaded.

Usage: python benchmarks/threads.py [--loads idle loaded] [--sizes tiny small] [--threads 1 2] [--repeats 3]

Each configuration runs in its own process (``torch.set_num_threads`` before any work): a few
warm-up steps, then timed SFT steps (batch 64, the demo's base-model training) and one timed GRPO
rollout (16 prompts × 8 samples, 40 new tokens, the demo's RL step). "loaded" starts one
CPU-burning background process (a Python busy loop) first, as on a shared machine. Prints a
Markdown table of the median seconds per SFT step and per rollout, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

BURNER = "while True: pass"


def worker(size: str, threads: int, steps: int) -> dict:
    """Time SFT steps and one rollout of a fresh testbed model with ``threads`` torch threads."""
    import random

    import torch

    torch.set_num_threads(threads)
    from entrolab.models.tiny import build_tiny_model
    from entrolab.models.tokenizer import build_char_tokenizer
    from entrolab.rollout.sampler import sample
    from entrolab.sft import demonstration_pairs, train_sft
    from entrolab.tasks.countdown import Countdown

    task = Countdown(min_numbers=3, max_numbers=3, max_target=99, n_train=256, n_test=16)
    tok = build_char_tokenizer(task.charset())
    model = build_tiny_model(size, tok, seed=0)
    pairs = demonstration_pairs(task, demos_per_prompt=4, seed=0)
    train_sft(model, tok, pairs, steps=2, seed=0)  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    train_sft(model, tok, pairs, steps=steps, seed=0)
    sft_s = (time.perf_counter() - t0) / steps
    prompts = random.Random(0).sample(task.prompts("train"), 16)
    gen = torch.Generator().manual_seed(0)
    sample(model, tok, prompts[:2], group_size=2, max_new_tokens=8, generator=gen)  # warm-up
    t0 = time.perf_counter()
    sample(model, tok, prompts, group_size=8, max_new_tokens=40, generator=gen)
    return {"sft_step_s": sft_s, "rollout_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}


def measure(size: str, threads: int, steps: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--worker", size, str(threads), str(steps)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", nargs="+", choices=["idle", "loaded"], default=["idle", "loaded"])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # `kill` of this script must not leave the background CPU burner running: exit through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.worker:
        size, threads, steps = args.worker
        print(json.dumps(worker(size, int(threads), int(steps))))
        return
    rows = ["| load | size | torch threads | SFT step (s) | rollout 16×8 (s) | load avg (1 min) at start |",
            "|---|---|---|---|---|---|"]
    for load in args.loads:
        burner = subprocess.Popen([sys.executable, "-c", BURNER]) if load == "loaded" else None
        try:
            time.sleep(2 if burner else 0)
            for size in args.sizes:
                for threads in args.threads:
                    la = os.getloadavg()[0]
                    runs = [measure(size, threads, args.steps) for _ in range(args.repeats)]
                    sft = statistics.median(r["sft_step_s"] for r in runs)
                    roll = statistics.median(r["rollout_s"] for r in runs)
                    rows.append(f"| {load} | {size} | {threads} | {sft:.3f} | {roll:.2f} | {la:.2f} |")
                    print(rows[-1], flush=True)
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
    print(f"\nCommand: python benchmarks/threads.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"Machine: {os.cpu_count()} cores; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"median of {args.repeats} runs, {args.steps} SFT steps each.\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
