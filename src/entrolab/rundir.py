"""Who owns a run directory, and what a resume may change.

A run directory belongs to one run. A fresh ``train`` refuses a directory that already holds a run
(``check_fresh``) unless told to ``--overwrite`` it (``clear_run`` removes only what a run writes).
A ``--resume`` compares the resolved recipe with the one the run saved (``recipe_diff``): a few keys
may change on resume (``RESUMABLE_KEYS``: run length, cadences, evaluation); any other change is
refused unless allowed explicitly, and every change is appended to ``recipe_changes.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from entrolab import checkpoint as ckpt

#: What a run writes into its directory; ``--overwrite`` removes exactly these (never the folder itself,
#: which may be a user's directory holding other files).
RUN_FILES = ("recipe.yaml", "rollouts.jsonl", "recipe_changes.jsonl", "timings.json", "wandb_id.txt", "metrics.jsonl")
RUN_DIRS = ("checkpoints", "eval", "report", "initial_model", "tensorboard", "wandb")  # the last two: entrolab.loggers

#: Keys a resume may change without ``--allow-recipe-change`` (recorded with a note). They change where
#: the run lives (a moved folder), how long it goes and what it writes, not what a step computes;
#: ``train.steps`` also stretches a decaying LR schedule to the new length from the resume point on.
RESUMABLE_KEYS = ("run_dir", "train.steps", "train.eval_every", "train.save_every", "train.keep_checkpoints",
                  "train.dump_rollouts_every", "eval.", "log.")


class RunDirError(ValueError):
    """The run directory cannot be used as asked (holds another run, or the recipe changed)."""


def warn(message: str) -> None:
    """A warning the user must see (CLI and library alike): one line on stderr."""
    print(f"entrolab: warning: {message}", file=sys.stderr, flush=True)


def run_step(run_dir: Path) -> int | None:
    """None if ``run_dir`` holds no run; else the step it reached (newest checkpoint, else last metrics line).

    A run is marked by what only a run writes: ``checkpoints/step_*`` or a ``metrics.jsonl`` with at
    least one line, not by a ``recipe.yaml`` a user may keep in their own folder. The empty
    ``metrics.jsonl`` a run creates when it starts does not count: a start that failed before its first
    logged line (a wrong ``model.path``, a kill while loading) has nothing to lose, and retrying the same
    command must not need ``--overwrite``.
    """
    ckpts = ckpt.list_checkpoints(run_dir / "checkpoints")
    metrics = run_dir / "metrics.jsonl"
    logged = metrics.exists() and bool(metrics.read_text(errors="replace").strip())
    if not (ckpts or logged):
        return None
    if ckpts:
        return ckpts[-1][0]
    step = 0
    if metrics.exists():
        for line in metrics.read_text(errors="replace").splitlines():
            try:
                step = max(step, int(json.loads(line).get("step", 0)))
            except (ValueError, AttributeError, TypeError):
                continue  # a damaged line does not change whether the directory is used
    return step


def check_fresh(run_dir: Path, *, overwrite: bool) -> None:
    """Make ``run_dir`` ready for a fresh run: refuse a used one, or clear it when ``overwrite``."""
    step = run_step(run_dir)
    if step is None:
        return
    if not overwrite:
        raise RunDirError(f"run directory {run_dir} already holds a run (step {step}); use --resume, "
                          f"--overwrite, or another run_dir")
    clear_run(run_dir)
    warn(f"--overwrite: removed the previous run (step {step}) from {run_dir}")


def clear_run(run_dir: Path) -> None:
    """Remove what a run wrote to ``run_dir`` (``RUN_FILES``, ``RUN_DIRS``), nothing else.

    Folders vanish at once (``checkpoint.remove_tree``) and ``metrics.jsonl`` goes last, so a kill in the
    middle leaves a directory that still counts as used, never a half-deleted checkpoint to resume from.
    """
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            ckpt.remove_tree(run_dir / name)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a kill leaves the old or the new content, never a prefix."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")  # see checkpoint.clean_stale
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- recipe changes
def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists → ``{dotted.path: leaf}``, the same paths as command-line overrides."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj:
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}"))
        return out
    return {prefix: obj}


_ABSENT = "(absent)"


def recipe_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf that differs; a missing side is ``"(absent)"``."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(a.keys() | b.keys())
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _with_current_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """The saved recipe with keys added to the schema since it was written filled with their defaults,
    so a run saved by an older entrolab resumes without counting new keys as changes (a new key set to
    a non-default value still differs). A saved recipe the schema no longer accepts is compared as is."""
    from pydantic import ValidationError

    from entrolab.config import Recipe

    try:
        return Recipe.model_validate(old).model_dump(mode="json")
    except ValidationError:
        return old


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def _show(v: Any) -> str:
    return v if v == _ABSENT else json.dumps(v)


def check_resume_recipe(run_dir: Path, recipe_yaml: str, *, step: int, allow: bool) -> None:
    """Compare the resolved recipe with the run's ``recipe.yaml``; refuse or record the changes.

    Raises ``RunDirError`` listing every differing key (old → new) unless each is in
    ``RESUMABLE_KEYS`` or ``allow`` is set. Accepted changes are appended to
    ``recipe_changes.jsonl`` (step, time, changes, whether forced) before ``recipe.yaml`` is replaced.
    """
    saved = run_dir / "recipe.yaml"
    if not saved.exists():
        return
    try:
        old = yaml.safe_load(saved.read_text())
    except yaml.YAMLError as err:
        raise RunDirError(f"{saved}: not valid YAML ({err}); cannot compare it with the recipe to resume") from err
    changes = recipe_diff(_with_current_defaults(old if isinstance(old, dict) else {}), yaml.safe_load(recipe_yaml))
    if not changes:
        return
    listed = "; ".join(f"{k}: {_show(a)} → {_show(b)}" for k, a, b in changes)
    refused = [k for k, _, _ in changes if not resumable(k)]
    if refused and not allow:
        raise RunDirError(f"the recipe differs from the run's {saved} in {', '.join(refused)} ({listed}). Resume "
                          f"with the run's recipe, or pass --allow-recipe-change to continue with the new one "
                          f"(the change is recorded in recipe_changes.jsonl)")
    warn(f"resuming {run_dir} at step {step} with a changed recipe: {listed} (recorded in recipe_changes.jsonl)")
    record = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "forced": bool(refused),
              "changes": [{"key": k, "old": a, "new": b} for k, a, b in changes]}
    with open(run_dir / "recipe_changes.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def resume_point(ckpt_root: Path) -> tuple[Path, tuple[dict[str, Any], dict[str, Any]]]:
    """The newest checkpoint under ``ckpt_root`` that verifies against its manifest and whose trainer
    state loads, with that (trainer_state, components_state); warns about each checkpoint skipped."""
    states: dict[Path, tuple[dict[str, Any], dict[str, Any]]] = {}

    def loads(path: Path) -> str | None:
        reason = ckpt.verify_checkpoint(path)
        if reason is None:
            try:
                states[path] = ckpt.load_trainer_state(path)
            except Exception as err:  # a checkpoint without manifest (0.1) can still be damaged
                reason = f"{path}: trainer state does not load ({type(err).__name__}: {err})"
        return reason

    path, skipped = ckpt.newest_valid(ckpt_root, check=loads)
    for reason in skipped:
        warn(f"--resume: skipping invalid checkpoint: {reason}")
    if path is None:
        found = f"is valid ({'; '.join(skipped)})" if skipped else "yet"
        raise FileNotFoundError(f"--resume: no checkpoint under {ckpt_root} {found}; start again with --overwrite")
    if skipped:
        warn(f"--resume: continuing from {path}")
    return path, states[path]
