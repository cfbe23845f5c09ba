"""Policy cliff on the testbed: train GRPO twice from one seed, the second run's reward perturbed by δ.

"The Policy Cliff" (Xu, arXiv 2507.20150); docs/diagnostics.md, section "Policy cliff on the testbed".

Usage: OMP_NUM_THREADS=1 python benchmarks/policy_cliff.py [--steps 10] [--deltas 0.01 ...]
       [--advantage grpo] [--out runs/policy_cliff]

1. The demo's base model (``entrolab.demo``: cached under ``$ENTROLAB_CACHE``, built by SFT if missing).
2. For δ in {0, *deltas}: the demo GRPO recipe with reward terms ``verifier`` + ``perturbed`` (δ·u, u a
   seeded hash of prompt id and canonical answer: ``entrolab.rewards.perturb``), same seed, ``--steps``
   steps. With δ = 0 the reward is exactly the verifier's, and no run draws extra random numbers, so the
   runs differ only through δ.
3. Eval JSONs (``eval_runner.evaluate_model``) of the base and of each run, with ``reward_delta``
   recorded; plus one eval of the δ = 0 run under another sampling seed: the TV between its two evals is
   the sampling-noise floor of the TV measured from 64 samples per prompt, measured directly
   (``noise_floor``). The diagnostic's own bootstrap floor (``diagnostics.cliff.tv_noise_floor``, which
   the cliff section reports per run as ``tv_floor_mean``) is computed on the same two evals
   (``noise_floor_bootstrap``), so the two estimates can be compared.
4. ``diagnose`` on the eval JSONs (report in ``OUT/diagnostics``); prints the cliff section (TV per δ,
   its bootstrap noise floor and the excess over it, near-optimal set), the measured noise floor, how
   far training itself moved the policy (TV base → δ = 0 run), the weight-space distances, and the runs' fraction of zero advantages (``adv/zero_frac``).
   Every number also goes to ``OUT/policy_cliff.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import torch


def cliff_recipe(delta: float, *, base: Path, steps: int, seed: int, perturb_seed: int, out: Path,
                 advantage: str = "grpo"):
    """The demo GRPO recipe (advantage estimator swappable), ``steps`` steps, reward = verifier + perturbed(δ)."""
    from entrolab.config import load_recipe
    from entrolab.demo import DEMO_RECIPE

    data = copy.deepcopy(DEMO_RECIPE)
    name = f"delta_{delta:g}"
    data.update(name=name, seed=seed, run_dir=str(out / name), model={"path": str(base)})
    data["rewards"] = {"terms": [{"name": "verifier", "weight": 1.0},
                                 {"name": "perturbed", "weight": 1.0, "delta": delta, "seed": perturb_seed}]}
    data["train"] = dict(data["train"], steps=steps, save_every=0)
    data["advantage"] = {"name": advantage}
    return load_recipe(data)


def answer_tv(a: dict, b: dict) -> dict[str, float]:
    """Mean and max over shared prompts of TV between two eval JSONs' answer distributions."""
    from entrolab.diagnostics.cliff import normalise, total_variation

    pa = {p["id"]: p["answers"] for p in a["prompts"]}
    pb = {p["id"]: p["answers"] for p in b["prompts"]}
    tvs = [total_variation(normalise(pa[k]), normalise(pb[k])) for k in sorted(set(pa) & set(pb))]
    return {"tv_mean": sum(tvs) / len(tvs), "tv_max": max(tvs), "num_prompts": len(tvs)}


def bootstrap_floor(a: dict, b: dict) -> dict[str, float]:
    """Mean over shared prompts of the bootstrap noise floor of TV between two eval JSONs' answer counts."""
    from entrolab.diagnostics.cliff import tv_noise_floor

    pa = {p["id"]: p["answers"] for p in a["prompts"]}
    pb = {p["id"]: p["answers"] for p in b["prompts"]}
    floors = [tv_noise_floor(pa[k], pb[k], seed=i) for i, k in enumerate(sorted(set(pa) & set(pb)))]
    return {"tv_floor_mean": sum(floors) / len(floors), "num_prompts": len(floors)}


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """‖a − b‖₂ over all parameters."""
    return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a) ** 0.5)


def mean_metric(run_dir: Path, key: str) -> float:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    vals = [r[key] for r in rows if key in r]
    return sum(vals) / len(vals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--deltas", type=float, nargs="+", default=[0.01])
    ap.add_argument("--seed", type=int, default=0, help="training (and eval sampling) seed of every run")
    ap.add_argument("--perturb-seed", type=int, default=0, help="hash seed of the perturbation u")
    ap.add_argument("--advantage", default="grpo",
                    help="advantage estimator of every run (e.g. dr_grpo: no division by the group std)")
    ap.add_argument("--out", type=Path, default=Path("runs/policy_cliff"))
    args = ap.parse_args()
    if any(d == 0 for d in args.deltas):
        raise SystemExit("--deltas: give non-zero perturbation sizes (the δ = 0 run is always trained)")

    from entrolab.components import build_one, import_builtins
    from entrolab.demo import DEMO_SFT, cache_dir
    from entrolab.diagnostics.diagnose import diagnose
    from entrolab.eval_runner import evaluate_model
    from entrolab.evaluation import load_eval, write_eval
    from entrolab.registry import TASKS
    from entrolab.sft import build_base_model
    from entrolab.trainer import Trainer

    import_builtins()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out: Path = args.out
    deltas = [0.0, *args.deltas]
    task = build_one(TASKS, cliff_recipe(0.0, base=Path("."), steps=args.steps, seed=args.seed,
                                         perturb_seed=args.perturb_seed, out=out).task, "task")
    t0 = time.perf_counter()
    base = build_base_model(cache_dir() / "bases" / "countdown", task, progress=True, **DEMO_SFT)
    timings["base_model_s"] = time.perf_counter() - t0
    recipes = {d: cliff_recipe(d, base=base, steps=args.steps, seed=args.seed, perturb_seed=args.perturb_seed,
                               out=out, advantage=args.advantage) for d in deltas}

    evals: dict[str, Path] = {}
    finals: dict[float, Path] = {}
    for d, rec in recipes.items():
        print(f"[policy_cliff] train {rec.name}: {args.steps} GRPO steps", flush=True)
        t0 = time.perf_counter()
        trainer = Trainer(rec, overwrite=True, progress=False)
        run_dir = trainer.train()
        finals[d] = run_dir / "checkpoints" / f"step_{trainer.step:06d}"
        del trainer
        timings[f"train_{rec.name}_s"] = time.perf_counter() - t0
        print(f"[policy_cliff] eval {rec.name}", flush=True)
        t0 = time.perf_counter()
        path = evaluate_model(finals[d], rec, label=rec.name, out=out / "eval" / f"{rec.name}.json", progress=False)
        result = load_eval(path)
        result["reward_delta"] = d  # what `diagnose` reads for the policy cliff
        evals[rec.name] = write_eval(result, path)
        timings[f"eval_{rec.name}_s"] = time.perf_counter() - t0

    ref = recipes[0.0]
    print("[policy_cliff] eval base, and the delta_0 run under another sampling seed", flush=True)
    t0 = time.perf_counter()
    evals["base"] = evaluate_model(base, ref, label="base", out=out / "eval" / "base.json", progress=False)
    reseeded = ref.model_copy(update={"seed": args.seed + 1000})
    noise_path = evaluate_model(finals[0.0], reseeded, label="delta_0_reseed",
                                out=out / "noise" / "delta_0_reseed.json", progress=False)
    timings["eval_base_and_noise_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    diagnose([evals["base"], *[evals[recipes[d].name] for d in deltas]], out / "diagnostics", seed=args.seed)
    timings["diagnose_s"] = time.perf_counter() - t0
    report = json.loads((out / "diagnostics" / "diagnostics.json").read_text())
    loaded = {k: load_eval(p) for k, p in evals.items()}
    w_base, w_ref = weights(base), weights(finals[0.0])
    summary = {
        "settings": {"steps": args.steps, "advantage": args.advantage, "deltas": args.deltas, "seed": args.seed,
                     "perturb_seed": args.perturb_seed,
                     "base_model": str(base), "eval": ref.eval.model_dump(mode="json"),
                     "rollout": ref.rollout.model_dump(mode="json")},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "cliff": report["sections"].get("cliff", {"disabled": report["disabled"].get("cliff")}),
        "noise_floor": answer_tv(loaded["delta_0"], load_eval(noise_path)),
        "noise_floor_bootstrap": bootstrap_floor(loaded["delta_0"], load_eval(noise_path)),
        "training_displacement": answer_tv(loaded["base"], loaded["delta_0"]),
        "pass@1": {k: v["summary"].get("pass@1") for k, v in loaded.items()},
        "adv_zero_frac": {recipes[d].name: mean_metric(out / recipes[d].name, "adv/zero_frac") for d in deltas},
        "weight_distance": {"base_to_delta_0": distance(w_base, w_ref),
                            **{f"delta_0_to_{recipes[d].name}": distance(w_ref, weights(finals[d]))
                               for d in args.deltas}},
        "timings_s": {**timings, "total_s": time.perf_counter() - t_start},
    }
    (out / "policy_cliff.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
