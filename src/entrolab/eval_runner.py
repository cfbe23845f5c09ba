"""``entrolab eval``: evaluate a model folder or a run directory with a recipe's task and eval settings."""

from __future__ import annotations

import sys
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
    from entrolab.threads import apply_thread_policy

    import_builtins()
    task = build_one(TASKS, recipe.task, "task")
    model, tokenizer = load_policy(str(model_path), tokenizer_path=recipe.model.tokenizer,
                                   device=recipe.train.device, dtype=recipe.model.dtype)
    apply_thread_policy(model, next(model.parameters()).device)
    e = recipe.eval
    with phase(f"eval {label}", enabled=progress, unit="samples") as cb, torch.no_grad():
        result = evaluate(model, tokenizer, task, split=e.split, num_prompts=e.num_prompts, n_samples=e.n_samples,
                          temperature=e.temperature, top_p=e.top_p,
                          max_new_tokens=e.max_new_tokens or recipe.rollout.max_new_tokens, greedy=e.greedy,
                          batch_size=e.batch_size, seed=recipe.seed, label=label, progress=cb,
                          model_name=str(model_path), task_config=recipe.task, engine=recipe.rollout.engine,
                          max_turns=recipe.rollout.max_turns,
                          max_episode_tokens=recipe.rollout.max_episode_tokens)
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


def _eval_view(recipe: str | Path, overrides: list[str]) -> Recipe:
    """A run's recipe for evaluation: an RL recipe, or a preference run's (``PrefRecipe.eval_recipe``)."""
    from entrolab.registry import ConfigError

    try:
        return load_recipe(recipe, overrides)
    except ConfigError as err:
        from entrolab.preference.config import load_pref_recipe

        try:
            return load_pref_recipe(recipe, overrides).eval_recipe()
        except ConfigError:
            raise err from None


def evaluate_path(path: Path, *, recipe: str | None, overrides: list[str], label: str, out: Path | None) -> Path:
    """``path`` is a run directory (its recipe and latest checkpoint) or an HF model folder."""
    run_recipe = path / "recipe.yaml"
    if run_recipe.exists():
        rec = _eval_view(recipe or run_recipe, overrides)
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


#: Bump when evaluation itself changes, so cached base evaluations are recomputed.
EVAL_CACHE_VERSION = 1
#: Files of a model folder that decide what it generates (weights, architecture, tokenizer).
_MODEL_FILES = ("*.safetensors", "*.bin", "config.json", "generation_config.json", "tokenizer*.json",
                "special_tokens_map.json", "*.model", "vocab*", "merges.txt")


def base_eval_key(model_path: Path, recipe: Recipe) -> str:
    """Hash of the model's files (weights, config, tokenizer) + the eval, task and model settings.

    Two runs that start from the same weights with the same eval and task settings share one base
    evaluation; any change to either (a retrained base, another ``eval.n_samples``, another task
    size) gives a new key. File contents are hashed, not paths or times.
    """
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({
        "version": EVAL_CACHE_VERSION, "eval": recipe.eval.model_dump(mode="json"), "task": recipe.task,
        "seed": recipe.seed, "max_new_tokens": recipe.eval.max_new_tokens or recipe.rollout.max_new_tokens,
        "dtype": recipe.model.dtype, "chat_template": recipe.model.chat_template, "engine": recipe.rollout.engine,
    }, sort_keys=True, default=str).encode())
    folders = [Path(model_path)] + ([Path(recipe.model.tokenizer)] if recipe.model.tokenizer else [])
    for folder in folders:
        files = sorted({f for pattern in _MODEL_FILES for f in folder.glob(pattern) if f.is_file()})
        if not any(f.suffix in (".safetensors", ".bin") for f in files) and folder == Path(model_path):
            raise FileNotFoundError(f"{model_path}: no weights file (*.safetensors or *.bin) to evaluate")
        for f in files:
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:24]


def evaluate_base_cached(model_path: Path, recipe: Recipe, *, out: Path, progress: bool = True) -> Path:
    """The ``base`` evaluation of ``model_path``, reused from the cache when one matches ``base_eval_key``.

    Cache: ``<cache dir>/evals/<key>.json`` (cache dir: ``$ENTROLAB_CACHE`` or ``~/.cache/entrolab``).
    An unreadable cache file is recomputed with a warning. The copy in ``out`` records the model
    path of this run and, when reused, the cache file it came from.
    """
    import json

    from entrolab.demo import cache_dir
    from entrolab.evaluation import load_eval, write_eval

    cached = cache_dir() / "evals" / f"{base_eval_key(model_path, recipe)}.json"
    result = None
    if cached.exists():
        try:
            result = load_eval(cached)
            result["cached_from"] = str(cached)
            print(f"base evaluation: reusing {cached}", flush=True)
        except (OSError, ValueError) as err:
            print(f"entrolab: warning: ignoring unreadable cached base evaluation ({err}); recomputing",
                  file=sys.stderr, flush=True)
    if result is None:
        evaluate_model(model_path, recipe, label="base", out=cached, progress=progress)
        result = json.loads(cached.read_text(encoding="utf-8"))
    result.update(label="base", model=str(model_path))
    return write_eval(result, out)


def evaluate_run(trainer, *, progress: bool = True) -> Path:
    """``entrolab train --eval``: base (cached) and final evaluations, then the run report; returns its path.

    The base is the run's starting model (``model.path``, or the run's random-init testbed model), so
    every run's report shows whether RL expanded or only sharpened what the base could solve.
    """
    from entrolab.report import write_run_report

    evaluate_base_cached(trainer._initial_model_path(), trainer.recipe,
                         out=trainer.run_dir / "eval" / "base.json", progress=progress)
    trainer.evaluate("final")
    return write_run_report(trainer.run_dir)
