"""Run the agent studies of docs/results/agents.md and write their tables.

Each module of ``benchmarks/agent_studies/`` defines ``STUDY``, a dict::

    STUDY = {
        "name": "spear",                        # the page block <!-- begin agents: spear --> … <!-- end … -->
        "title": "SPEAR vs GRPO on the calculator",
        "arms": [                               # the first arm is the baseline of the paired differences
            {"label": "GRPO", "recipe": "recipes/agents/grpo_calculator.yaml", "overrides": []},
            {"label": "SPEAR", "recipe": "recipes/agents/spear_calculator.yaml", "overrides": []},
        ],
        "metrics": ["pass@1", "episode_turns", "episode_tool_calls"],   # keys of eval/final.json's summary
        "curves": {"agent/entropy_turn0": [10, 40]},                   # metrics.jsonl key → steps shown
        "overrides": ["train.steps=40"],        # applied to every arm (before the arm's own)
    }

Usage::

    python benchmarks/agents_study.py run   --study spear [--seeds 0 1 2] [--jobs 2]
    python benchmarks/agents_study.py write --study spear [--seeds 0 1 2]   # table into the page
    python benchmarks/agents_study.py all   [--study NAME ...]            # every study: run, then write
    python benchmarks/agents_study.py list

Runs land in ``runs/agent_studies/<study>/<label>-s<seed>``; a run whose ``eval/final.json`` exists
is reused. Each run is the recipe with ``seed=<seed>`` (the base model is shared: it is the
recipe's ``testbed_sft`` base, trained once and cached). The table gives mean ± sd over seeds and,
for ``pass@1``, the paired difference from the first arm with a two-way (seeds × test prompts)
bootstrap 95 % interval (``entrolab.studies.stats.paired_bootstrap``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import pkgutil
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

PAGE = REPO / "docs" / "results" / "agents.md"
ROOT = REPO / "runs" / "agent_studies"


def studies() -> dict[str, dict]:
    import agent_studies

    out = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules(agent_studies.__path__)):
        study = importlib.import_module(f"agent_studies.{mod}").STUDY
        out[study["name"]] = study
    return out


def run_dir(study: dict, label: str, seed: int) -> Path:
    return ROOT / study["name"] / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}-s{seed}"


def run_one(args: tuple[dict, dict, int]) -> str:
    """Train one arm at one seed and evaluate its final policy (in a worker process, one thread)."""
    study, arm, seed = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from entrolab.config import load_recipe
    from entrolab.trainer import Trainer

    rd = run_dir(study, arm["label"], seed)
    if (rd / "eval" / "final.json").exists():
        return f"reuse {rd}"
    over = [*study.get("overrides", []), *arm.get("overrides", []), f"seed={seed}", f"run_dir={rd}",
            f"name={study['name']}-{arm['label']}"]
    t0 = time.time()
    trainer = Trainer(load_recipe(str(REPO / arm["recipe"]), over), overwrite=True, progress=False)
    trainer.train()
    trainer.evaluate("final")
    (rd / "study.json").write_text(json.dumps({"study": study["name"], "arm": arm, "seed": seed,
                                               "overrides": over, "wall_s": time.time() - t0,
                                               "commit": _commit()}, indent=2))
    return f"done {rd} ({time.time() - t0:.0f} s)"


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(study: dict, seeds: list[int], jobs: int) -> None:
    items = [(study, arm, s) for s in seeds for arm in study["arms"]]  # seed-major: a full seed first
    if jobs <= 1:
        for it in items:
            print(run_one(it), flush=True)
        return
    with mp.get_context("spawn").Pool(jobs) as pool:
        for msg in pool.imap_unordered(run_one, items):
            print(msg, flush=True)


def _per_prompt_pass1(result: dict) -> dict[str, float]:
    return {r["id"]: r["correct"] / r["n"] for r in result["prompts"]}


def table(study: dict, seeds: list[int]) -> str:
    """The study's markdown block: settings, a mean ± sd table, the paired pass@1 differences, provenance."""
    import numpy as np

    from entrolab.studies.stats import paired_bootstrap

    evals, curves, walls, commits = {}, {}, [], set()
    for arm in study["arms"]:
        for s in seeds:
            rd = run_dir(study, arm["label"], s)
            evals[arm["label"], s] = json.loads((rd / "eval" / "final.json").read_text())
            lines = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines() if x.strip()]
            curves[arm["label"], s] = [x for x in lines if "reward/mean" in x]
            meta = json.loads((rd / "study.json").read_text())
            walls.append(meta["wall_s"])
            commits.add(meta["commit"])
    metrics = study["metrics"]
    curve_cols = [(k, step) for k, steps in study.get("curves", {}).items() for step in steps]
    head = ["arm"] + metrics + [f"{k} @{step}" for k, step in curve_cols]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in study["arms"]:
        cells = [arm["label"]]
        for m in metrics:
            vals = [evals[arm["label"], s]["summary"].get(m) for s in seeds]
            cells.append(_mean_sd([v for v in vals if v is not None]))
        for k, step in curve_cols:
            vals = []
            for s in seeds:
                near = [x[k] for x in curves[arm["label"], s] if k in x and abs(x["step"] - step) <= 2]
                if near:
                    vals.append(sum(near) / len(near))
            cells.append(_mean_sd(vals))
        rows.append("| " + " | ".join(cells) + " |")
    base = study["arms"][0]["label"]
    diffs = ["", f"Paired difference in pass@1 from {base} (mean over seeds × test prompts, 95 % two-way "
                 "bootstrap interval; **bold** when it excludes 0):", "",
             "| arm | Δ pass@1 | 95 % interval |", "|---|---|---|"]
    for arm in study["arms"][1:]:
        ids = sorted(_per_prompt_pass1(evals[base, seeds[0]]))
        x = np.array([[_per_prompt_pass1(evals[arm["label"], s])[i] for i in ids] for s in seeds])
        y = np.array([[_per_prompt_pass1(evals[base, s])[i] for i in ids] for s in seeds])
        d = paired_bootstrap(x, y)
        val = f"{d.diff:+.3f}"
        diffs.append(f"| {arm['label']} | {'**' + val + '**' if d.lo > 0 or d.hi < 0 else val} | "
                     f"[{d.lo:+.3f}, {d.hi:+.3f}] |")
    e0 = evals[base, seeds[0]]
    setup = (f"Seeds {', '.join(map(str, seeds))}; final evaluation on {len(e0['prompts'])} test prompts × "
             f"{e0['n_samples']} episodes at temperature {e0['temperature']:g}. Arms: "
             + "; ".join(f"{a['label']} = `{a['recipe']}`" + (f" with `{' '.join(a['overrides'])}`" if a.get('overrides')
                                                             else "") for a in study["arms"])
             + (f"; every arm with `{' '.join(study['overrides'])}`" if study.get("overrides") else "") + ".")
    prov = (f"Made by `python benchmarks/agents_study.py all --study {study['name']} --seeds "
            f"{' '.join(map(str, seeds))}` at commit {', '.join(sorted(commits))}; {len(walls)} runs, "
            f"{min(walls):.0f}–{max(walls):.0f} s each on one thread ({_machine()}).")
    return "\n".join([setup, "", *rows, *(diffs if len(study["arms"]) > 1 else []), "", prov])


def _mean_sd(vals: list[float]) -> str:
    if not vals:
        return "–"
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return f"{m:.3f} ± {sd:.3f}"


def _machine() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {__import__('torch').__version__}"


def write(study: dict, seeds: list[int]) -> None:
    text = PAGE.read_text()
    begin, end = f"<!-- begin agents: {study['name']} -->", f"<!-- end agents: {study['name']} -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{PAGE}: no block {begin} … {end}; add it where the table belongs")
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    PAGE.write_text(f"{pre}{begin}\n{table(study, seeds)}\n{end}{post}")
    print(f"wrote {study['name']} into {PAGE}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=["run", "write", "all", "list"])
    ap.add_argument("--study", nargs="*", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args(argv)
    known = studies()
    if a.cmd == "list":
        for name, st in known.items():
            print(f"{name}: {st['title']} ({len(st['arms'])} arms)")
        return 0
    names = a.study or list(known)
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown study {n!r}; known: {', '.join(known)}")
        if a.cmd in ("run", "all"):
            run(known[n], a.seeds, a.jobs)
        if a.cmd in ("write", "all"):
            write(known[n], a.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
