"""entrolab vs TRL's ``GRPOTrainer``, side by side on the CPU testbed, in one interleaved run.

Usage: OMP_NUM_THREADS=1 python benchmarks/vs_trl.py [--rounds 10] [--warmup 1] [--prompts 16] [--group 8]
       [--tokens 40] [--base PATH] [--size tiny] [--profile]
Needs the optional extra ``pip install entrolab[trl]`` (not part of the test suite, not needed by CI).

Both libraries start from the same saved weights (``--base`` or, by default, a random-init testbed
model of ``--size`` saved to a temporary folder; such a model emits EOS at random, so completion
lengths vary: the script prints each library's median completion tokens per step) and train separate copies.
Each round draws the same ``--prompts`` Countdown train prompts for both; TRL's reward function is
entrolab's Countdown verifier. Work per step: prompts × group completions of ≤ tokens, one
optimizer step on the whole batch, fp32, one thread. Settings matched to entrolab's ``grpo.yaml``:
PPO-clip ε 0.2, token mean over the whole batch (TRL ``loss_type="dapo"``), no KL (``beta=0``), group
advantage normalisation, AdamW lr 1e-4 betas (0.9, 0.99), grad clip 1, constant schedule, temperature
1, top-p 1, no top-k; TRL with gradient checkpointing off (its default is on) and ``num_iterations=1``.

A TRL step is timed from the end of the previous round to TRL's ``on_step_end`` callback (so its
data loading, generation, rewards and update all count), then the entrolab step runs inside that
callback and is timed on its own: the two alternate, so machine load hits both alike.

The FLOP floor of entrolab's step: 2·N_params FLOPs per token per forward (N_params counts the tied
embedding once, as the LM head; attention-score FLOPs are left out, so this is a lower bound).
Sampling needs one forward per valid completion token and one prefill of each distinct prompt (the
G completions of a prompt share it, as entrolab's sampler does); the update needs 3 forward-equivalents
(forward + backward) over every row's valid prompt and completion tokens:
    floor_FLOPs = 2·N·(P/G + C) + 6·N·(P + C),
P and C the valid prompt and completion tokens of the batch (P summed over all rows), divided by the
single-thread fp32 matmul rate measured in this run (2048×2048 @ 2048×2048, best of a few).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_rate(m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 4) -> float:
    """Single-thread fp32 GFLOP/s of an m×k @ k×n matmul, best of ``repeats`` (after one warm-up)."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def main() -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from entrolab.config import load_recipe
    from entrolab.tasks.countdown import Countdown
    from entrolab.trainer import Trainer

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds (each one TRL step + one entrolab step)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--base", default=None, help="saved HF model folder; default: a random-init testbed model")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed rounds, entrolab sampling and one more step under torch.profiler: top ops")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="vs_trl_"))
    task = Countdown()  # the grpo.yaml task with its default settings
    if args.base:
        base = Path(args.base)
    else:
        from entrolab.models.tiny import create_testbed_model

        base = create_testbed_model(tmp / "base", task.charset(), size=args.size, seed=0)
    n_steps = args.warmup + args.rounds
    bsz = args.prompts * args.group

    # The prompts of every round, fixed up front, so both libraries see the same ones in the same order.
    import random

    train = task.prompts("train")
    rng = random.Random(0)
    rounds = [rng.sample(train, args.prompts) for _ in range(n_steps + 1)]  # + 1: the --profile step

    class SamePrompts(Trainer):
        """entrolab's trainer with the round's prompts given, and the last batch kept for the FLOP count."""

        def rollout(self):
            r = self.recipe.rollout
            batch = self._sample(rounds[self.step], temperature=r.temperature, group_size=r.group_size)
            self.last_batch = batch
            return batch

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "grpo.yaml", [
        f"run_dir={tmp / 'entrolab'}", f"model.path={base}", "train.device=cpu", f"train.steps={n_steps}",
        f"rollout.prompts_per_step={args.prompts}", f"rollout.group_size={args.group}",
        f"rollout.max_new_tokens={args.tokens}", f"train.mini_batch_size={bsz}", "train.dump_rollouts_every=0",
    ])
    ours = SamePrompts(recipe, progress=False)
    n_params = sum(p.numel() for p in ours.model.parameters())  # tied embedding counted once

    flat = [p for r in rounds for p in r]
    by_text = {p.text: p for p in flat}
    dataset = Dataset.from_dict({"prompt": [p.text for p in flat]})

    def countdown_reward(prompts, completions, **_):
        return [task.verify(by_text[p], c).reward for p, c in zip(prompts, completions)]

    cfg = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=bsz, gradient_accumulation_steps=1,
        num_generations=args.group, max_completion_length=args.tokens, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=recipe.optim.lr, adam_beta1=0.9, adam_beta2=0.99, adam_epsilon=1e-8, weight_decay=0.0,
        max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0, loss_type="dapo", beta=0.0,
        num_iterations=1, epsilon=0.2, scale_rewards="group", gradient_checkpointing=False, bf16=False,
        use_cpu=True, max_steps=n_steps, shuffle_dataset=False, logging_steps=10_000, save_strategy="no",
        report_to="none", seed=0, disable_tqdm=True, dataloader_num_workers=0,
        model_init_kwargs={"dtype": torch.float32},
    )

    times: dict[str, list[float]] = {"trl": [], "entrolab": []}
    ours_metrics: list[dict[str, float]] = []
    tokens: list[tuple[int, int]] = []
    trl_completion_tokens: list[float] = []
    padded: list[int] = []  # rows × (prompt width + completion width): the tokens the step's matmuls see

    class Interleave(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            t_trl = time.perf_counter() - self.t0
            t1 = time.perf_counter()
            m = ours.train_step()
            t_ours = time.perf_counter() - t1
            if ours.step > args.warmup:
                times["trl"].append(t_trl)
                times["entrolab"].append(t_ours)
                ours_metrics.append(m)
                b = ours.last_batch
                tokens.append((int(b.mask_prompt_BL.sum()), int(b.mask_BT.sum())))
                padded.append(b.prompt_ids_BL.numel() + b.completion_ids_BT.numel())
                # TRL's own per-step record (read, not cleared): mean completion length of this batch
                trl_completion_tokens.append(theirs._metrics["train"]["completions/mean_length"][-1] * bsz)
            self.t0 = time.perf_counter()

    theirs = GRPOTrainer(model=str(base), reward_funcs=countdown_reward, args=cfg, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(base), callbacks=[Interleave()])
    rate_before = matmul_rate()
    theirs.train()
    rate_after = matmul_rate()
    cfg_m = ours.model.config  # the model's own MLP matmul shape over a padded batch, for comparison
    rate_model = matmul_rate(int(statistics.median(padded)), cfg_m.hidden_size, cfg_m.intermediate_size)
    rate_decode = matmul_rate(bsz, cfg_m.hidden_size, cfg_m.intermediate_size, repeats=50)  # one decode step's MLP
    load_after = os.getloadavg()

    import trl
    import transformers

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = max(rate_before, rate_after) * 1e9
    p_tok = statistics.median(t[0] for t in tokens)
    c_tok = statistics.median(t[1] for t in tokens)
    sample_floor_s = 2 * n_params * (p_tok / args.group + c_tok) / rate
    update_floor_s = 6 * n_params * (p_tok + c_tok) / rate
    floor_s = sample_floor_s + update_floor_s
    print(f"settings: {args.prompts} prompts x {args.group} completions x <= {args.tokens} tokens, one optimizer "
          f"step per batch, fp32, GRPO/PPO-clip, token mean; model {base.name if args.base else 'random-init '}"
          f"{'' if args.base else args.size} ({n_params:,} params); {args.warmup} warm-up + {args.rounds} "
          f"interleaved rounds")
    print(f"versions: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average (1/5/15 min) before "
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in load_after)}")
    print(f"single-thread fp32 matmul 2048^3: {rate_before:.1f} GFLOP/s before, {rate_after:.1f} after (floor "
          f"uses the higher)")
    print("| per step (median) | seconds |\n|---|---|")
    print(f"| TRL {trl.__version__} GRPOTrainer | {med['trl']:.3f} |")
    print(f"| entrolab | {med['entrolab']:.3f} |")
    for key in ("time/rollout_s", "time/score_s", "time/verify_reward_s", "time/update_s", "time/log_s"):
        if key in ours_metrics[0]:
            print(f"| entrolab {key} | {statistics.median(m[key] for m in ours_metrics):.3f} |")
    print(f"| entrolab FLOP floor: [2·N·(P/G+C) + 6·N·(P+C)] / rate, N={n_params}, P={p_tok:.0f}, G={args.group}, "
          f"C={c_tok:.0f} | {floor_s:.3f} |")
    print(f"completion tokens per step (median): entrolab {c_tok:.0f}, TRL "
          f"{statistics.median(trl_completion_tokens):.0f}; prompt tokens {p_tok:.0f} (same prompts)")
    pad_tok = statistics.median(padded)
    upd = statistics.median(m["time/update_s"] for m in ours_metrics)
    smp = statistics.median(m["time/rollout_s"] for m in ours_metrics)
    print(f"update: {upd:.3f} s = {upd / update_floor_s:.2f}x its floor 6·N·(P+C)/rate ({update_floor_s:.3f} s); "
          f"over the {pad_tok:.0f} padded token positions (rows x (prompt + completion width)) the floor is "
          f"{6 * n_params * pad_tok / rate:.3f} s ({upd / (6 * n_params * pad_tok / rate):.2f}x); matmul rate at the "
          f"update's MLP shape ({pad_tok:.0f}x{cfg_m.hidden_size} @ {cfg_m.hidden_size}x{cfg_m.intermediate_size}): "
          f"{rate_model:.1f} GFLOP/s")
    print(f"sampling: {smp:.3f} s = {smp / sample_floor_s:.2f}x its floor 2·N·(P/G+C)/rate ({sample_floor_s:.3f} s); "
          f"matmul rate at one decode step's MLP shape ({bsz}x{cfg_m.hidden_size} @ "
          f"{cfg_m.hidden_size}x{cfg_m.intermediate_size}): {rate_decode:.1f} GFLOP/s")
    print(f"TRL / entrolab = {med['trl'] / med['entrolab']:.2f}x (goal >= 1.4)")
    print(f"entrolab / floor = {med['entrolab'] / floor_s:.2f}x (goal <= 1.25)")
    if args.profile:  # where the time goes, by operator (profiler overhead included): sampling alone, then a step
        for label, fn in (("sampling only (Trainer.rollout)", ours.rollout), ("one whole step", ours.train_step)):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                fn()
            print(f"profile, {label}:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)  # the temporary model and both run directories
    print("all rounds (s): trl " + " ".join(f"{x:.3f}" for x in times["trl"])
          + " | entrolab " + " ".join(f"{x:.3f}" for x in times["entrolab"]))


if __name__ == "__main__":
    main()
