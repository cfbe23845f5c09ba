"""Train a Hugging Face causal LM with TRL's GRPOTrainer and an entrolab method (default: Clip-Cov).

    accelerate launch examples/trl/train_grpo_entrolab.py --model_name_or_path Qwen/Qwen2.5-0.5B \
        --entrolab_recipe examples/trl/clip_cov.yaml --output_dir runs/trl_clip_cov --bf16 true

Every GRPOConfig field is a flag (``--num_generations 8 --learning_rate 1e-6 --use_vllm true``, or
``--config file.yaml``), parsed by TRL's own ``TrlParser``; ``accelerate launch`` picks the
processes/DeepSpeed/FSDP setup. The advantage estimator and the loss come from the entrolab recipe
block (``--entrolab_recipe``, with ``--entrolab_set a.b=c`` overrides); rewards come from an entrolab
task's verifier (``--task``, Countdown by default) as a TRL reward function. At the end the model is
saved to ``--output_dir`` with ``log_history.json`` (TRL's logged metrics, ours included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(metadata={"help": "HF model folder or Hub id"})
    entrolab_recipe: str = field(default=str(Path(__file__).with_name("clip_cov.yaml")),
                                 metadata={"help": "entrolab recipe block: advantage + objective"})
    entrolab_set: list[str] = field(default_factory=list, metadata={"help": "recipe overrides a.b=c"})
    task: str = field(default="countdown", metadata={"help": "entrolab task whose verifier is the reward"})
    split: str = field(default="train", metadata={"help": "task split to train on"})


def main() -> None:
    from transformers import AutoTokenizer
    from trl import GRPOConfig, TrlParser

    from entrolab.components import build_one, import_builtins
    from entrolab.integrations.trl import EntrolabGRPOTrainer, task_dataset, task_reward
    from entrolab.registry import TASKS

    script, args = TrlParser((ScriptArguments, GRPOConfig)).parse_args_and_config()
    import_builtins()
    task = build_one(TASKS, {"name": script.task}, "task")
    reward = task_reward(task)
    trainer = EntrolabGRPOTrainer(
        model=script.model_name_or_path, reward_funcs=reward, args=args,
        train_dataset=task_dataset(task, script.split, reward),
        processing_class=AutoTokenizer.from_pretrained(script.model_name_or_path),
        recipe=script.entrolab_recipe, recipe_overrides=script.entrolab_set)
    trainer.train()
    trainer.save_model(args.output_dir)
    if trainer.accelerator.is_main_process:
        Path(args.output_dir, "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))


if __name__ == "__main__":
    main()
