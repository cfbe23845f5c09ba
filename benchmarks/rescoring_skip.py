"""Step time with and without the no-grad re-scoring forward (``Trainer.rescoring_needed``).

Usage: OMP_NUM_THREADS=1 python benchmarks/rescoring_skip.py [--rounds 8] [--prompts 16] [--group 8]
       [--tokens 40] [--size tiny]
Two trainers with the same GRPO recipe and seed on the random-init testbed model: one skips the
re-scoring forward (the default for this recipe), the other is forced to re-score. Their steps are
interleaved (A, B, A, B, ...) so machine load hits both alike; the two runs do identical work (the
skip is exact for this recipe, tests/test_trainer_rescoring.py). Prints the per-step medians of the
time/* parts, the saving, whether the two runs' weights ended bit-identical, the machine load, and
how far the sampler's own log-probs are from the training forward's (why they cannot replace it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile


def main() -> None:
    import torch

    from entrolab.config import load_recipe
    from entrolab.trainer import Trainer

    class Rescoring(Trainer):
        def rescoring_needed(self, batch) -> bool:  # the behaviour before the skip existed
            return True

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--size", default="tiny")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    trainers = {}
    for label, cls in (("skip", Trainer), ("rescore", Rescoring)):
        rec = load_recipe({
            "name": label, "seed": 0, "run_dir": f"{tmp}/{label}", "model": {"testbed_size": args.size},
            "task": {"name": "countdown", "n_train": 256, "n_validation": 8, "n_test": 8},
            "rollout": {"prompts_per_step": args.prompts, "group_size": args.group, "max_new_tokens": args.tokens},
            "train": {"steps": args.rounds + 1, "device": "cpu", "dump_rollouts_every": 0},
        })
        trainers[label] = cls(rec, progress=False)
    # Why the sampler's own log-probs cannot stand in for old_logp: a KV-cache decode rounds differently
    # from the training forward. Measured on a third trainer so the two timed runs stay in lockstep.
    probe_recipe = load_recipe({**rec.model_dump(mode="json"), "name": "probe", "run_dir": f"{tmp}/probe"})
    probe = Trainer(probe_recipe, progress=False)
    batch = probe.rollout()
    sampled_BT, mask_BT = batch.old_logp_BT.clone(), batch.mask_BT
    probe.score(batch, rescore=True)
    gap = float(((sampled_BT - batch.old_logp_BT.cpu()).abs() * mask_BT).max())
    times: dict[str, list[dict[str, float]]] = {k: [] for k in trainers}
    for r in range(args.rounds + 1):
        for label, t in trainers.items():
            m = t.train_step()
            if r > 0:  # the first step warms up allocators and caches
                times[label].append(m)
    print(f"settings: testbed {args.size}, {args.prompts} prompts x {args.group} completions x "
          f"<= {args.tokens} tokens, GRPO, 1 thread, {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    med = {k: {key: statistics.median(m[key] for m in v) for key in v[0] if key.startswith("time/")}
           for k, v in times.items()}
    for key in ("time/step_s", "time/rollout_s", "time/score_s", "time/verify_reward_s", "time/update_s",
                "time/log_s"):
        print(f"{key:22s} skip {med['skip'][key]:.4f}  rescore {med['rescore'][key]:.4f}")
    saved = med["rescore"]["time/step_s"] - med["skip"]["time/step_s"]
    print(f"sampler vs training-forward log-probs, max |diff| over valid tokens: {gap:.3g}")
    a, b = (dict(t.model.named_parameters()) for t in trainers.values())
    print(f"weights bit-identical after {args.rounds + 1} steps: {all(torch.equal(a[k], b[k]) for k in a)}")
    print(f"median step saved: {saved:.4f} s = {100 * saved / med['rescore']['time/step_s']:.1f} % of the "
          f"re-scoring step")


if __name__ == "__main__":
    main()
