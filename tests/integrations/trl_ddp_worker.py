"""One process of the two-process parity run (``test_trl.test_item2_parity_two_processes``, under torchrun):
TRL's own GRPOTrainer (loss_type dapo), then the subclass with grpo + ppo_clip + token_mean, from the same
weights; writes this rank's micro-batch losses, advantages, completions and final weights to JSON."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from trl import GRPOTrainer  # noqa: E402

import test_trl as t  # noqa: E402
from entrolab.integrations import trl as ad  # noqa: E402

model_path, out = sys.argv[1], sys.argv[2]
# 8 completions per prompt, 2 rows per process and micro-batch, 2 micro-batches per step: each group of 8
# spans both processes, so its advantages need the rewards gathered from both.
# Plain SGD: the update is linear in the gradient, so float32 rounding of the advantages (up to 1 ulp
# apart: the group std summed in another order than TRL's) is not magnified as Adam's m/sqrt(v) does
# for coordinates with near-zero gradients.
kw = dict(max_steps=2, gradient_accumulation_steps=2, num_iterations=2, learning_rate=0.5, optim="sgd",
          per_device_train_batch_size=2, num_generations=8, ddp_backend="gloo")
result = {}
for name in ("trl", "ours"):
    if name == "trl":
        trainer = GRPOTrainer(model=model_path, reward_funcs=t.reward_fn, train_dataset=t.DATA,
                              args=t.grpo_config(f"{out}/trl", loss_type="dapo", **kw))
    else:
        trainer = ad.EntrolabGRPOTrainer(model=model_path, reward_funcs=t.reward_fn, train_dataset=t.DATA,
                                         args=t.grpo_config(f"{out}/ours", **kw), recipe={
                                             "advantage": {"name": "grpo", "eps": 1e-4},
                                             "objective": {"surrogate": "ppo_clip", "aggregation": "token_mean"}})
    calls = t.record_losses(trainer)
    trainer.train()
    result[name] = {
        "loss": [float(loss) for _, loss in calls],
        "adv": [inputs["advantages"].reshape(len(inputs["advantages"]), -1)[:, 0].tolist() for inputs, _ in calls],
        "ids": [inputs["completion_ids"].tolist() for inputs, _ in calls],
        "weights": [p.detach().flatten().tolist() for p in trainer.model.parameters()],
    }
with open(f"{out}/rank{os.environ['RANK']}.json", "w") as f:
    json.dump(result, f)
