"""Study definitions and the runner that trains and evaluates every run they need.

Runs are keyed by (setting, recipe, seed) and live in ``<root>/<setting>/<recipe>-s<seed>``, so a
recipe shared by several studies (GRPO is the baseline of all of them) is trained once per seed.
Several worker processes take runs from one seed-major queue (all recipes of seed 0, then seed 1,
…): stopping early leaves complete seeds, not complete recipes. A worker claims a run by creating
its claim folder (``os.mkdir`` is atomic), so two workers never train the same run; a finished run
(``eval/final.json`` present) is reused, an unfinished one restarts from scratch.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every study run skips the rollout dumps (they are only for diagnostics); everything else is the
# GRPO preset's, which every method recipe extends.
SETTINGS: dict[str, list[str]] = {
    "default": ["train.dump_rollouts_every=0"],
    # 4 passes over each batch in mini-batches of 32: the clip range is actually reached
    "offpolicy": ["train.dump_rollouts_every=0", "train.updates_per_batch=4", "train.mini_batch_size=32"],
}


@dataclass(frozen=True)
class Study:
    name: str
    page: str                 # docs/results/<page>
    recipes: tuple[str, ...]  # recipe stems; the first is the baseline of the paired differences
    setting: str = "default"
    curves: tuple[str, ...] = ("policy/entropy",)
    about: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


STUDIES: dict[str, Study] = {s.name: s for s in [
    Study("entropy", "entropy-control.md", (
        "grpo", "reinforce", "clip_higher", "dr_grpo", "gspo", "cispo", "clip_cov", "kl_cov", "steer", "clip_b",
        "clip_v", "top_entropy_quantile", "perplexity_position", "entropy_bonus", "adaptive_entropy", "kl_to_ref",
        "kl_in_reward", "siren", "epo", "safe_kl", "aepo", "dcpo"), curves=("policy/entropy",)),
    Study("advantages", "advantages-and-rewards.md", (
        "grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gaussian", "canon", "riskpo", "copo",
        "empg", "effective_rank"), curves=("policy/entropy",)),
    Study("hacking", "advantages-and-rewards.md", (
        "grpo", "near_miss", "par", "ensemble", "ensemble_uwo", "near_miss_kl"),
        curves=("reward/mean", "reward/verifier")),
    Study("spurious", "advantages-and-rewards.md", ("grpo", "spurious", "spurious_noclip"),
          curves=("policy/entropy", "reward/verifier")),
    Study("spurious-offpolicy", "advantages-and-rewards.md", ("grpo", "spurious", "spurious_noclip"),
          setting="offpolicy", curves=("policy/entropy", "reward/verifier", "policy/clipfrac_low",
                                       "policy/clipfrac_high")),
]}


def run_dir(root: Path, setting: str, recipe: str, seed: int) -> Path:
    return root / setting / f"{recipe}-s{seed}"


def queue(studies: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """(setting, recipe, seed) of every run the studies need, seed-major, each once."""
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        raise ValueError(f"unknown study {unknown[0]!r}; known: {', '.join(STUDIES)}")
    pairs: list[tuple[str, str]] = []
    for s in studies:
        for r in STUDIES[s].recipes:
            if (STUDIES[s].setting, r) not in pairs:
                pairs.append((STUDIES[s].setting, r))
    return [(setting, r, seed) for seed in seeds for setting, r in pairs]


def git_commit(repo: Path) -> dict[str, Any]:
    """The code's commit and whether tracked files differ from it (a dirty tree is recorded, not refused)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False).stdout.strip()
    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {platform.system()} {platform.machine()}"


def _recipe_path(repo: Path, name: str) -> str:
    return str(repo / "recipes" / f"{name}.yaml")


def train_one(repo: Path, root: Path, setting: str, name: str, seed: int, base: Path,
              extra_overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate one run (as ``entrolab sweep`` does) and record its provenance in ``study.json``."""
    from entrolab.eval_runner import evaluate_model
    from entrolab.report import write_run_report
    from entrolab.sweep import demo_task_override, plan_runs
    from entrolab.trainer import Trainer

    out = root / setting
    overrides = [demo_task_override(), *SETTINGS[setting], *(extra_overrides or [])]
    [(_, _, recipe)] = plan_runs([_recipe_path(repo, name)], seeds=[seed], out_dir=out, base=base,
                                 overrides=overrides)
    rd = run_dir(root, setting, name, seed)
    t0 = time.perf_counter()
    trainer = Trainer(recipe, overwrite=True, progress=False)
    trainer.train()
    final = rd / "checkpoints" / f"step_{trainer.step:06d}"
    del trainer
    evaluate_model(final, recipe, label="final", out=rd / "eval" / "final.json", progress=False)
    write_run_report(rd)
    info = {"setting": setting, "recipe": name, "seed": seed, "overrides": overrides,
            "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(), **git_commit(repo)}
    (rd / "study.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def is_finished(rd: Path) -> bool:
    return (rd / "eval" / "final.json").exists() and (rd / "study.json").exists()


def worker(repo: str, root: str, items: list[tuple[str, str, int]], base: str,
           extra_overrides: list[str] | None = None) -> int:
    """Take unclaimed, unfinished runs from ``items`` in order until none is left; returns how many it ran."""
    repo_p, root_p = Path(repo), Path(root)
    claims = root_p / ".claims"
    done = 0
    for setting, name, seed in items:
        rd = run_dir(root_p, setting, name, seed)
        if is_finished(rd):
            continue
        try:
            (claims / setting).mkdir(parents=True, exist_ok=True)
            os.mkdir(claims / setting / f"{name}-s{seed}")
        except FileExistsError:
            continue
        info = train_one(repo_p, root_p, setting, name, seed, Path(base), extra_overrides)
        print(f"[{os.getpid()}] {setting}/{name}-s{seed}: {info['wall_s']:.0f} s", flush=True)
        done += 1
    return done
