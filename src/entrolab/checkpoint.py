"""Atomic checkpoints: weights as safetensors, trainer state loaded with ``weights_only=True``.

A checkpoint is written to a temporary folder next to its final place and renamed into place, so
a crash (or a NaN stop) never leaves a half-written "latest" checkpoint behind.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first (temporary folders are ignored)."""
    if not root.exists():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "trainer_state.pt").exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def rng_state(py_rng: random.Random, generator: torch.Generator) -> dict[str, Any]:
    state = {
        "python": py_rng.getstate(),
        "sampling": generator.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], py_rng: random.Random, generator: torch.Generator) -> None:
    py = state["python"]
    # torch.save turns the inner tuple into a list; random.setstate needs tuples.
    py_rng.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["sampling"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    components_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically under ``root`` and prune to the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    torch.save(components_state, tmp / "components.pt")
    if final.exists():  # re-saving the same step (e.g. final == periodic): replace atomically
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path)
    return final


def load_trainer_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (trainer_state, components_state) without unpickling arbitrary objects."""
    trainer_state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    components_state = torch.load(path / "components.pt", map_location="cpu", weights_only=True)
    return trainer_state, components_state
