"""``entrolab eval``: evaluate a model folder or a run directory with a recipe's task and eval settings."""

from __future__ import annotations

from pathlib import Path

from entrolab.checkpoint import MANIFEST, newest_valid, verify_checkpoint
from entrolab.components import build_one, import_builtins
from entrolab.config import Recipe, load_recipe
from entrolab.registry import TASKS
from entrolab.rundir import warn


def evaluate_model(model_path: Path, recipe: Recipe, *, label: str, out: Path, progress: bool = True) -> Path:
    """Sample ``recipe.eval.n_samples`` per prompt from ``model_path`` and write the eval JSON to ``out``."""
    import torch

    from entrolab.evaluation import evaluate, write_eval
    from entrolab.models.loading import load_policy
    from entrolab.progress import phase

    import_builtins()
    task = build_one(TASKS, recipe.task, "task")
    model, tokenizer = load_policy(str(model_path), tokenizer_path=recipe.model.tokenizer,
                                   device=recipe.train.device, dtype=recipe.model.dtype)
    e = recipe.eval
    with phase(f"eval {label}", enabled=progress) as cb, torch.no_grad():
        result = evaluate(model, tokenizer, task, split=e.split, num_prompts=e.num_prompts, n_samples=e.n_samples,
                          temperature=e.temperature, top_p=e.top_p,
                          max_new_tokens=e.max_new_tokens or recipe.rollout.max_new_tokens, greedy=e.greedy,
                          batch_size=e.batch_size, seed=recipe.seed, label=label, progress=cb,
                          model_name=str(model_path), task_config=recipe.task)
    return write_eval(result, out)


def newest_valid_model(root: Path) -> Path:
    """The newest checkpoint under ``root`` that matches its manifest; warns about each newer one skipped."""
    model_path, skipped = newest_valid(root)
    for reason in skipped:
        warn(f"eval: skipping invalid checkpoint: {reason}")
    if model_path is None:
        raise FileNotFoundError(f"{root.parent} is a run directory without a valid checkpoint"
                                + (f" ({'; '.join(skipped)})" if skipped else ""))
    if skipped:
        warn(f"eval: using {model_path}")
    return model_path


def evaluate_path(path: Path, *, recipe: str | None, overrides: list[str], label: str, out: Path | None) -> Path:
    """``path`` is a run directory (its recipe and latest checkpoint) or an HF model folder."""
    run_recipe = path / "recipe.yaml"
    if run_recipe.exists():
        rec = load_recipe(recipe or run_recipe, overrides)
        model_path = newest_valid_model(path / "checkpoints")
        out = out or path / "eval" / f"{label}.json"
    else:
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is neither a run directory (recipe.yaml) nor a model folder (config.json)")
        if (path / MANIFEST).exists() and (reason := verify_checkpoint(path)) is not None:
            raise ValueError(f"{path} is a damaged checkpoint: {reason}")
        rec = load_recipe(recipe, overrides)
        model_path = path
        out = out or Path("runs") / "eval" / f"{label}.json"
    return evaluate_model(model_path, rec, label=label, out=out)
