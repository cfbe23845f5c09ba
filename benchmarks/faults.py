"""Fault injection for run directories: kill/resume soak, damaged checkpoints, torn logs, a full disk.

Every scenario drives the real command line (``python -m entrolab.cli``) in subprocesses on a tiny
testbed run (random-init char Llama, Countdown, 8 steps, a checkpoint every step) and compares the
outcome with one uninterrupted reference run of the same recipe, which CPU makes bit-for-bit
repeatable:

- **kill/resume soak**: SIGKILL at random times, half of them the moment a checkpoint's temporary
  folder appears (so the kill lands inside a checkpoint write), then ``--resume`` (``--overwrite`` if
  no checkpoint existed yet) until the run completes. Pass: exit 0, final weights bit-identical to the
  reference, the same per-step rewards, metrics steps 1..N once each, no temporary folders left.
- **corrupt checkpoint**: the newest checkpoint truncated / zeroed / bit-flipped; ``eval`` must use
  the previous one and name the damaged file, ``--resume`` must redo the step bit-identically.
- **torn log**: half a JSON line at the end of metrics.jsonl and rollouts.jsonl (resume completes,
  bit-identical); a bad line in the middle (resume refuses, naming file:line, exit 1).
- **disk full** (root only, else skipped): the run directory on a tmpfs too small for two
  checkpoints; the run must stop with exit 1 naming the path that ran out of space, leave no partial
  folder and an intact previous checkpoint, and resume bit-identically once space is added.

    OMP_NUM_THREADS=1 python benchmarks/faults.py [--kills 12] [--seed 0] [--out runs/faults]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
OVERRIDES = [
    "name=faults", "seed=0", "model.path=null", "model.testbed_size=tiny",
    'task={"name": "countdown", "n_train": 64, "n_validation": 8, "n_test": 8}',
    "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=16",
    # A dense term (shorter is better), so advantages are non-zero and the weights really move.
    'rewards.terms=[{"name": "verifier"}, {"name": "length", "target": 0, "coef": 0.01}]',
    "optim.lr=1e-3", f"train.steps={STEPS}", "train.save_every=1", "train.keep_checkpoints=2",
    "train.mini_batch_size=8", "train.dump_rollouts_every=1", "eval.num_prompts=2", "eval.n_samples=2",
]


@dataclass
class Scenario:
    name: str
    trials: int = 0
    passed: int = 0
    notes: list[str] = field(default_factory=list)

    def record(self, ok: bool, what: str) -> None:
        self.trials += 1
        self.passed += bool(ok)
        if not ok:
            self.notes.append(what)
        print(f"  [{'ok' if ok else 'FAIL'}] {self.name}: {what}", flush=True)


def command(run_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "entrolab.cli", "train", str(REPO / "recipes" / "grpo.yaml"), *OVERRIDES,
            f"run_dir={run_dir}", "--quiet", *flags]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)


def final_weights(run_dir: Path, step: int = STEPS) -> dict:
    from safetensors.torch import load_file

    path = run_dir / "checkpoints" / f"step_{step:06d}" / "model.safetensors"
    return {k: v.clone() for k, v in load_file(str(path)).items()} if path.exists() else {}


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return bool(a) and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rewards(run_dir: Path) -> list[tuple[int, float]]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(x["step"], x["reward/mean"]) for x in lines if "reward/mean" in x]


def complete_and_equal(run_dir: Path, ref: Path) -> tuple[bool, str]:
    """The run finished exactly like the reference: weights, per-step rewards, logs, no leftovers."""
    from entrolab.checkpoint import list_checkpoints, verify_checkpoint

    root = run_dir / "checkpoints"
    leftovers = [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    damaged = [r for _, p in list_checkpoints(root) if (r := verify_checkpoint(p))]
    checks = {"weights": same_weights(final_weights(run_dir), final_weights(ref)),
              "rewards": rewards(run_dir) == rewards(ref),
              "rollout steps": rollout_steps(run_dir) == rollout_steps(ref),
              "no leftovers": not leftovers, "checkpoints verify": not damaged}
    bad = [k for k, ok in checks.items() if not ok]
    return not bad, "differs in " + ", ".join(bad) if bad else "bit-identical"


def rollout_steps(run_dir: Path) -> list[int]:
    path = run_dir / "rollouts.jsonl"
    return [json.loads(x)["step"] for x in path.read_text().splitlines()] if path.exists() else []


def has_checkpoint(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    return root.exists() and any(p.name.startswith("step_") for p in root.iterdir())


def in_checkpoint_write(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    return root.exists() and any(p.name.startswith((".tmp-", ".old-")) for p in root.iterdir())


# ---------------------------------------------------------------------------- scenarios
def soak(out: Path, ref: Path, *, kills: int, ref_seconds: float, rng: random.Random) -> Scenario:
    """SIGKILL the run ``kills`` times (two per run), resuming after each, then finish and compare."""
    sc = Scenario("kill/resume soak")
    n_in_write = 0
    done = 0
    trial = 0
    while done < kills:
        run_dir = out / f"soak-{trial}"
        shutil.rmtree(run_dir, ignore_errors=True)
        killed_here = []
        for k in range(2):
            mode = "checkpoint write" if (done + k) % 2 else "random time"
            flags = ("--resume",) if has_checkpoint(run_dir) else (("--overwrite",) if run_dir.exists() else ())
            proc = subprocess.Popen(command(run_dir, *flags), env=env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + rng.uniform(0.1, 0.9) * ref_seconds
            newest = max([int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step_*")], default=0)
            target_step = rng.randint(min(newest + 1, STEPS), STEPS)  # kill inside this step's checkpoint write
            tmp_name = f".tmp-step_{target_step:06d}-{proc.pid}"
            while proc.poll() is None:
                if mode == "random time" and time.monotonic() > deadline:
                    break
                if mode == "checkpoint write" and (run_dir / "checkpoints" / tmp_name).exists():
                    time.sleep(rng.uniform(0, 0.02))  # somewhere inside the write, fsync or rename
                    break
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                hit = in_checkpoint_write(run_dir)
                n_in_write += hit
                killed_here.append(f"{mode}{' (in a checkpoint write)' if hit else ''}")
        done += len(killed_here)
        # Resume to completion (a no-op if the last attempt finished); --overwrite if no checkpoint was written.
        res = run(command(run_dir, "--resume" if has_checkpoint(run_dir) else "--overwrite"))
        proc_rc, err = res.returncode, res.stderr
        ok, what = complete_and_equal(run_dir, ref)
        tail = f" | {err.strip()[-300:]}" if proc_rc else ""
        sc.record(proc_rc == 0 and ok, f"run {trial}: {len(killed_here)} kills ({'; '.join(killed_here) or 'none'}), "
                                       f"resumed: rc {proc_rc}, {what}{tail}")
        trial += 1
    sc.name = f"kill/resume soak ({done} SIGKILLs, {n_in_write} inside a checkpoint write)"
    return sc


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _zero(p: Path) -> None:
    p.write_bytes(b"\0" * p.stat().st_size)


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def corrupt(out: Path, ref: Path) -> Scenario:
    sc = Scenario("corrupt newest checkpoint → eval and --resume fall back")
    for label, damage, name in (("truncated", _truncate, "model.safetensors"), ("zeroed", _zero, "trainer_state.pt"),
                                ("bit flip", _flip, "model.safetensors")):
        run_dir = out / f"corrupt-{label.replace(' ', '_')}"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(ref, run_dir)
        bad = run_dir / "checkpoints" / f"step_{STEPS:06d}" / name
        damage(bad)
        ev = run([sys.executable, "-m", "entrolab.cli", "eval", str(run_dir), "--label", "x"])
        model = json.loads((run_dir / "eval" / "x.json").read_text()).get("model", "") if ev.returncode == 0 else ""
        sc.record(ev.returncode == 0 and str(bad) in ev.stderr and model.endswith(f"step_{STEPS - 1:06d}"),
                  f"{label} {name}: eval rc {ev.returncode}, used {Path(model).name or '-'}")
        res = run(command(run_dir, "--resume"))
        ok, what = complete_and_equal(run_dir, ref)
        sc.record(res.returncode == 0 and str(bad) in res.stderr and ok,
                  f"{label} {name}: resume rc {res.returncode}, {what}")
    return sc


def torn(out: Path, ref: Path) -> Scenario:
    sc = Scenario("torn / damaged log lines on --resume")
    run_dir = out / "torn-tail"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(ref, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / f"step_{STEPS:06d}")  # as if killed after the last append
    for log in ("metrics.jsonl", "rollouts.jsonl"):
        with open(run_dir / log, "a") as f:
            f.write('{"step": 8, "reward/mean": -0.1, "polic')
    res = run(command(run_dir, "--resume"))
    ok, what = complete_and_equal(run_dir, ref)
    sc.record(res.returncode == 0 and res.stderr.count("dropped a torn last line") == 2 and ok,
              f"torn last line in both logs: rc {res.returncode}, {what}")

    run_dir = out / "torn-middle"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(ref, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / f"step_{STEPS:06d}")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    res = run(command(run_dir, "--resume"))
    sc.record(res.returncode == 1 and f"{run_dir / 'metrics.jsonl'}:3:" in res.stderr,
              f"damaged middle line: rc {res.returncode}, {res.stderr.strip().splitlines()[-1][:160]}")
    return sc


def disk_full(out: Path, ref: Path) -> Scenario:
    sc = Scenario("disk full during a checkpoint")
    mnt = out / "tmpfs"
    mnt.mkdir(parents=True, exist_ok=True)
    initial = sum(p.stat().st_size for p in (ref / "initial_model").rglob("*") if p.is_file())
    one = sum(p.stat().st_size for p in (ref / "checkpoints" / f"step_{STEPS:06d}").rglob("*") if p.is_file())
    size_kb = (initial + one * 3 // 2) // 1024  # room for the initial model and one checkpoint, not two
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        sc.notes.append("skipped: mounting a tmpfs needs root")
        return sc
    try:
        run_dir = mnt / "run"
        res = run(command(run_dir))
        from entrolab.checkpoint import list_checkpoints, verify_checkpoint

        ckpts = list_checkpoints(run_dir / "checkpoints")
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
        partial = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
        ok = (res.returncode == 1 and "ran out of space writing" in last and str(run_dir) in last
              and f"the previous checkpoint {ckpts[-1][1]} is intact" in last and not partial
              and verify_checkpoint(ckpts[-1][1]) is None)
        sc.record(ok, f"{size_kb} KiB tmpfs: rc {res.returncode}, stopped after step {ckpts[-1][0] if ckpts else '-'}: "
                      f"{last[:200]}")
        subprocess.run(["mount", "-o", f"remount,size={size_kb * 4}k", str(mnt)], check=True)
        res = run(command(run_dir, "--resume"))
        ok, what = complete_and_equal(run_dir, ref)
        sc.record(res.returncode == 0 and ok, f"resumed after adding space: rc {res.returncode}, {what}")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    return sc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "faults")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()

    ref = out / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    t = time.perf_counter()
    res = run(command(ref))
    ref_seconds = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"reference run failed:\n{res.stderr}")
    initial = _initial(ref)
    if same_weights(initial, final_weights(ref)):
        sys.exit("reference run did not change the weights: the comparisons would prove nothing")
    print(f"reference: {STEPS} steps in {ref_seconds:.1f} s (process start included)", flush=True)

    scenarios = [soak(out, ref, kills=args.kills, ref_seconds=ref_seconds, rng=rng), corrupt(out, ref),
                 torn(out, ref), disk_full(out, ref)]
    print(f"\n| scenario | trials | passed | notes |\n|---|---|---|---|")
    for sc in scenarios:
        print(f"| {sc.name} | {sc.trials} | {sc.passed} | {'; '.join(sc.notes) or '-'} |")
    print(f"\ntotal {sum(s.passed for s in scenarios)}/{sum(s.trials for s in scenarios)} passed in "
          f"{time.perf_counter() - t0:.0f} s")
    if any(s.passed < s.trials for s in scenarios):
        sys.exit(1)


def _initial(ref: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ref / "initial_model" / "model.safetensors"))


if __name__ == "__main__":
    main()
